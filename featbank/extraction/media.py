"""What we know about one media item after probing it, before any frame is decoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaInfo:
    """Container facts every sampling plan is computed from.

    ``duration`` is in seconds; for a still image it is 0 and ``n_frames`` is 1, so per-second
    samplings still yield one step and an image is just a one-frame video to every extractor.
    """

    n_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    is_image: bool = False

    @property
    def duration(self) -> float:
        if self.is_image or self.fps <= 0:
            return 0.0
        return self.n_frames / self.fps
