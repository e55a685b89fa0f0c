"""What an extractor needs of each sampled frame, so the decoder converts nothing else.

Most extractors want every frame of a step as RGB at native resolution (the default, and the
contract of :meth:`~extractors.base.Extractor.forward`). Statistics defined on luma want the
decoder's Y' plane, which exists before any colour conversion: converting every frame to RGB and
back to luma costs more than decoding it, and FFmpeg's fast YUV->RGB path rounds 8-bit RGB down by
about 1.3 grey levels on average, so luma from RGB is also the less exact one. An extractor that
says so in :class:`Pixels` receives :class:`StepPixels` instead: every frame's luma and RGB only of
the frames it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""Luma weights of 0..255 RGB where a frame has no Y' plane (RGB codecs, GIF, still images)."""


@dataclass(frozen=True)
class Pixels:
    """Which representations of a step's frames an extractor reads.

    ``rgb="all"`` without ``luma`` is the default: steps arrive as ``(T, H, W, 3)`` uint8 RGB and
    batches as one stacked array. Anything else delivers each step as :class:`StepPixels`, with
    ``rgb="first"`` converting only the step's first frame to RGB and ``rgb="none"`` none.
    """

    rgb: Literal["all", "first", "none"] = "all"
    luma: bool = False

    @property
    def plain_rgb(self) -> bool:
        """True when steps are plain RGB arrays (the default contract)."""
        return self.rgb == "all" and not self.luma

    def rgb_slots(self, frames_per_step: int) -> int:
        """How many of a step's frames, from its first, are converted to RGB."""
        return {"all": frames_per_step, "first": min(1, frames_per_step), "none": 0}[self.rgb]


RGB_FRAMES = Pixels()


@dataclass
class Luma:
    """Luma of a step's frames as the decoder stores it: ``values = codes * scale + offset``.

    ``codes`` is ``(T, H, W)``: the Y' plane's code values (uint8, or uint16 for 9- to 16-bit
    streams) already clipped to the stream's nominal range, or float32 luma computed from RGB
    (``scale`` 1, ``offset`` 0) for frames without a Y' plane. Scaling is left to the consumer so
    it can be applied after a downscale, on a fraction of the pixels; :meth:`values` does it whole.
    Values are on the 0..255 scale BT.601 and ITU-T P.910 assume.
    """

    codes: np.ndarray
    scale: float = 1.0
    offset: float = 0.0

    def values(self) -> np.ndarray:
        """All codes as float32 luma on 0..255."""
        return self.scaled(self.codes.astype(np.float32))

    def scaled(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` (float32, derived from :attr:`codes`, e.g. their block means) turned into luma
        in place, and returned."""
        if self.scale != 1.0:
            codes *= np.float32(self.scale)
        if self.offset != 0.0:
            codes += np.float32(self.offset)
        return codes


@dataclass
class StepPixels:
    """One step for an extractor whose :class:`Pixels` asks for more than plain RGB.

    ``rgb`` holds the first ``Pixels.rgb_slots`` frames as ``(n, H, W, 3)`` uint8 (``None`` for
    none); ``luma`` every frame's luma (``None`` unless asked for). Both may be buffers the decoder
    reuses for the next step: an extractor reads them in ``forward`` and keeps nothing.
    """

    rgb: np.ndarray | None
    luma: Luma | None
