"""FAST-VQA-B and FasterVQA: a fragment-sampled Video Swin-T trained end to end for video quality.

FAST-VQA (Wu et al., "FAST-VQA: Efficient End-to-end Video Quality Assessment with Fragment
Sampling", ECCV 2022) and its extension FasterVQA (Wu et al., "Neighbourhood Representative
Sampling for Efficient End-to-end Video Quality Assessment", TPAMI 2023) never resize a video.
They cut every frame into a 7x7 grid and keep one native-resolution 32x32 patch per cell, so the
224x224 mosaic ("fragments") still shows the real compression, blur and noise of a 1080p or 4K
video, and a Video Swin-T with gated relative position bias (:mod:`extractors.swin3d`) trained on
LSVQ scores it. The recipe follows the official repo VQAssessment/FAST-VQA-and-FasterVQA (MIT;
snapshot 9f264e4, files read at their newest indexed versions): ``fastvqa/datasets/fusion_datasets.py``
(``get_spatial_fragments``, ``SampleFrames``, ``FragmentSampleFrames``), ``options/fast/fast-b.yml``
and ``f3dvqa-b.yml``, and the test path of ``new_test.py`` (``FusionDataset``, frame interval 2).

Per step we store the 768-d last-stage features averaged over time and space (the evaluator's
``return_pooled_feats``) and the clip's quality score (the mean of the head's local quality map, the
number ``vqa.py`` reports before its display-only sigmoid rescaling): 769 values.

Variants (``fastvqa`` = ``fastvqa:b``, and ``fastvqa:faster``):

* FAST-VQA-B (``FAST_VQA_B_1_4.pth``, ``fast-b.yml``): a step is 32 consecutive frames taken every
  2nd frame (~2 s at 30 fps); the spatial offsets are shared by the whole clip (``aligned: 32``);
  attention windows are the backbone's 8x7x7.
* FasterVQA (``FAST_VQA_3D_1_1.pth``, ``f3dvqa-b.yml``): a step is 8 temporal fragments of 4
  frames (every 2nd frame) spread over the whole video; offsets are shared by each pair of
  temporal fragments (``aligned: 8``) and attention windows are 4x7x7, the window the official
  backbone's ``forward`` uses (``resized_window_size=(4, 7, 7)``), so one window never mixes two
  offset draws. (That default also reaches FAST-VQA-B in the repo's last scripts; here FAST-VQA-B
  keeps the backbone's own 8x7x7 window, which its checkpoint's tables are sized for and which the
  authors' later DOVER code runs its FAST-VQA-B-initialised branch with.)

``num_clips`` (default 1) takes more steps spread over the video (:class:`FragmentClips`); the
official FAST-VQA-B test protocol averages 4 clips (``fastvqa:b,clips=4``).

Spatial fragments, as ``get_spatial_fragments`` draws them: cell ``(i, j)`` of the grid starts at
``(min(i * (H // 7), H - 32), min(j * (W // 7), W - 32))`` and its patch is shifted by a random offset
in ``[0, H // 7 - 32)`` (likewise for W; no shift when a cell is at most 32 px), one draw per cell
and per ``aligned``-frame chunk, so a patch follows the same place through time. The official
offsets come from an unseeded torch RNG, so the same video gave different scores on every run;
here they come from ``numpy.random.default_rng([seed, H, W, step])``: **offsets are a pure function
of (seed, H, W, step)** (and the chunk's position in the clip), so the same video always gives the
same features, each clip of a multi-clip run gets its own draw as in the official multi-clip test
(``clips=4``), and ``seed`` (an option, part of the bank key) draws another set. ``forward`` alone,
without step indices, draws as for the first step.

Frames whose short side is below 224 px are first upscaled (bilinear on [0, 1] values, truncated
back to integers, as the official ``fallback_type="upsample"`` does) so the short side is exactly
224. The official function then lays the grid out on the *pre-upscale* size, which leaves the
cells of such frames bunched in the top-left corner of the upscaled picture; we lay it out on the
upscaled frame, which is what the fallback is for. Frames at least 224 px on both sides are untouched.

Normalisation: ImageNet mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375) on the
0-255 scale, RGB, as in ``FusionDataset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors import register
from extractors.deep import DeepExtractor, normalize
from extractors.swin3d import FastVQANet, Triple
from featbank.extraction.sampling import FragmentClips
from featbank.extraction.weights import WeightsSpec

GRID = 7
PATCH = 32
SIZE = GRID * PATCH  # 224
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
FEATURE_DIM = 768
RELEASES = "https://github.com/VQAssessment/FAST-VQA-and-FasterVQA/releases/download/v2.0.0/"


@dataclass(frozen=True)
class Variant:
    """One released model and the test-time sampling of its official config."""

    weights: WeightsSpec
    t_frag: int  # temporal fragments per clip
    aligned: int  # frames that share one draw of spatial offsets
    window: Triple  # attention window used at inference
    clip_len: int = 32
    frame_interval: int = 2


def _weights(filename: str, config: str) -> WeightsSpec:
    return WeightsSpec(filename=filename, sha256=None,  # the release publishes no checksum
                       source=f"{RELEASES}{filename} (GitHub release v2.0.0 of "
                              f"VQAssessment/FAST-VQA-and-FasterVQA; config {config})",
                       license="MIT")


VARIANTS: dict[str, Variant] = {
    "b": Variant(_weights("FAST_VQA_B_1_4.pth", "options/fast/fast-b.yml"), t_frag=1, aligned=32, window=(8, 7, 7)),
    "faster": Variant(_weights("FAST_VQA_3D_1_1.pth", "options/fast/f3dvqa-b.yml"), t_frag=8, aligned=8,
                      window=(4, 7, 7)),
}


def parse_spec(arg: str) -> dict:
    """``"faster,clips=4,seed=1"`` or ``"clips=4"`` (the part after ``fastvqa:``) → constructor keywords."""
    names = {"clips": "num_clips", "seed": "seed"}
    kwargs: dict = {}
    for token in (t.strip() for t in arg.split(",")):
        key, sep, value = token.partition("=")
        if not sep:
            kwargs["variant"] = token
        elif key in names:
            kwargs[names[key]] = int(value)
        else:
            raise ValueError(f"fastvqa options are 'clips=N' and 'seed=N', not {token!r}")
    return kwargs


def cell_starts(length: int) -> tuple[np.ndarray, int]:
    """Start of each grid cell along one axis and the exclusive bound of the random shift."""
    cell = length // GRID
    starts = np.minimum(cell * np.arange(GRID), length - PATCH)
    return starts, max(cell - PATCH, 0)


def fragment_offsets(seed: int, height: int, width: int, chunks: int, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(GRID, GRID, chunks)`` row and column shifts of each cell's patch, for step ``step`` of a
    native ``height`` x ``width`` video: a pure function of its arguments."""
    rng = np.random.default_rng([seed, height, width, step])
    h, w = upscaled_size(height, width)
    shifts = []
    for length in (h, w):
        bound = cell_starts(length)[1]
        shifts.append(rng.integers(0, bound, size=(GRID, GRID, chunks)) if bound > 0
                      else np.zeros((GRID, GRID, chunks), dtype=np.int64))
    return shifts[0], shifts[1]


def upscaled_size(height: int, width: int) -> tuple[int, int]:
    """Frame size after the small-frame fallback: short side 224 when it was shorter."""
    short = min(height, width)
    if short >= SIZE:
        return height, width
    return height * SIZE // short, width * SIZE // short


def fragment_index(seed: int, height: int, width: int, frames: int, aligned: int,
                   step: int = 0) -> tuple[np.ndarray, ...]:
    """Source (frame, row, column) of every pixel of step ``step``'s mosaic, as index arrays that
    broadcast to ``(frames, 7, 32, 7, 32)`` (cell row, pixel row, cell column, pixel column), which
    reshapes to ``(frames, 224, 224)``. They stay unbroadcast, 32x smaller, because every clip
    builds its own and moves them to the device."""
    if frames % aligned:
        raise ValueError(f"{frames} frames do not split into chunks of {aligned} (the official assert)")
    chunks = frames // aligned
    dh, dw = fragment_offsets(seed, height, width, chunks, step)
    h, w = upscaled_size(height, width)
    tops, lefts = cell_starts(h)[0], cell_starts(w)[0]
    inner = np.arange(PATCH)
    # rows[c, i, a, j] and cols[c, i, j, b] for chunk c, cell (i, j), pixel (a, b) of the patch
    rows = tops[None, :, None, None] + dh.transpose(2, 0, 1)[:, :, None, :] + inner[None, None, :, None]
    cols = lefts[None, None, :, None] + dw.transpose(2, 0, 1)[..., None] + inner[None, None, None, :]
    chunk = np.arange(frames) // aligned
    return (np.arange(frames)[:, None, None, None, None], rows[chunk][..., None], cols[chunk][:, :, None])


def upscale(frames: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, W, 3)`` uint8 → the same, short side raised to 224 when below it (else as is).

    Bilinear, no antialiasing, on values divided by 255, multiplied back and truncated to integers:
    the official fallback's arithmetic (``(interpolate(v / 255) * 255).type_as(uint8 video)``)."""
    b, t, h, w, _ = frames.shape
    size = upscaled_size(h, w)
    if size == (h, w):
        return frames
    x = frames.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).mul_(255.0)
    return x.to(torch.uint8).permute(0, 2, 3, 1).reshape(b, t, *size, 3)


@register
class FastVQA(DeepExtractor):
    """FAST-VQA-B (default) or FasterVQA (``fastvqa:faster``): 768 pooled Swin features + quality."""

    name = "fastvqa"
    version = "2"  # 2: fragment offsets drawn per step (1: one draw shared by every clip of a video)
    batch_size = 4  # one step is a 32x224x224 clip (~70 GFLOPs)
    cuda_precision: ClassVar[str] = "fp16"
    """Measured on an H100 (random weights spread by N(0, 0.05)): pooled features within 6e-4
    relative L2 of fp32 and scores within 6e-4 (bf16: 5e-3), at 1.2-1.3x the fp32 throughput."""
    weights: ClassVar[WeightsSpec] = VARIANTS["b"].weights
    weight_variants = tuple(f"fastvqa:{v}" for v in VARIANTS if v != "b")

    def __init__(self, variant: str = "b", num_clips: int = 1, seed: int = 0) -> None:
        if "," in variant or "=" in variant:  # a registry spec such as "fastvqa:faster,clips=4"
            parsed = parse_spec(variant)
            variant, num_clips, seed = (parsed.get("variant", "b"), parsed.get("num_clips", num_clips),
                                        parsed.get("seed", seed))
        if variant not in VARIANTS:
            raise ValueError(f"fastvqa variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant = variant
        self.spec = VARIANTS[variant]
        self.weights = self.spec.weights  # type: ignore[misc]  # per-variant checkpoint
        self.num_clips = num_clips
        self.seed = seed

    @property
    def sampling(self) -> FragmentClips:
        s = self.spec
        return FragmentClips(clip_len=s.clip_len, frame_interval=s.frame_interval, t_frag=s.t_frag,
                             num_clips=self.num_clips, max_steps=self.num_clips)

    def options(self) -> dict:
        return {"variant": self.variant, "num_clips": self.num_clips, "seed": self.seed}

    def feature_names(self) -> list[str]:
        return [f"swin_{i}" for i in range(FEATURE_DIM)] + ["quality"]

    def build_model(self) -> nn.Module:
        return FastVQANet()

    def fragments(self, frames: torch.Tensor, steps: Sequence[int] | None = None) -> torch.Tensor:
        """``(B, T, H, W, 3)`` uint8 → normalised fragment clips ``(B, 3, T, 224, 224)`` float32;
        row ``i`` is cut with step ``steps[i]``'s offsets (all step 0 when ``steps`` is None)."""
        b, t, h, w, _ = frames.shape
        source = upscale(frames)
        mosaics = []
        for i, step in enumerate([0] * b if steps is None else steps):
            index = fragment_index(self.seed, h, w, t, self.spec.aligned, int(step))
            f, r, c = (torch.from_numpy(np.ascontiguousarray(a)).to(frames.device) for a in index)
            mosaics.append(source[i, f, r, c].reshape(t, SIZE, SIZE, 3))
        mosaic = torch.stack(mosaics).float()
        return normalize(mosaic.permute(0, 1, 4, 2, 3), MEAN, STD).permute(0, 2, 1, 3, 4)

    def embed(self, frames: torch.Tensor, steps: Sequence[int] | None = None) -> torch.Tensor:
        pooled, quality = self.model(self.fragments(frames, steps), self.spec.window)
        return torch.cat([pooled.float(), quality.float()[:, None]], dim=1)

    def forward_item(self, batch: np.ndarray, steps: np.ndarray, text: str | None) -> np.ndarray:
        return self.on_device(batch, lambda frames: self.embed(frames, steps))
