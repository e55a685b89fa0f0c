"""Temporal sampling plans: which frames (or audio seconds) each extractor sees.

An extractor declares a :class:`Sampling`; the decoder takes the union of all plans for one video
and decodes it once. Plans are pure functions of :class:`~featbank.extraction.media.MediaInfo`, computed from
timestamps, so the same file always yields the same indices; those indices are stored in the bank.

Every plan is a list of *steps* (the extractor's time axis). For the per-second samplings a step is
one second of the video; for :class:`UniformFrames` it is one of N frames spread over the video.
Videos longer than ``max_steps`` seconds keep ``max_steps`` seconds spread evenly over their whole
length, so the time axis has a fixed bound and still covers the entire video.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from featbank.extraction.media import MediaInfo


@dataclass(frozen=True)
class Plan:
    """Frame indices per step (``(steps, frames_per_step)``, int64) and each step's start time (s)."""

    frame_indices: np.ndarray
    timestamps: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.timestamps.shape[0])


def second_starts(duration: float, max_steps: int) -> np.ndarray:
    """Start time of each 1-s step: ``round(duration)`` seconds (at least one), at most ``max_steps``."""
    n = max(1, int(round(duration)))
    if n <= max_steps:
        return np.arange(n, dtype=np.float64)
    return np.floor(np.linspace(0, n - 1, max_steps)).astype(np.float64)


def _frame_at(t: float | np.ndarray, info: MediaInfo) -> np.ndarray:
    idx = np.floor(np.asarray(t, dtype=np.float64) * info.fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, info.n_frames - 1)


@dataclass(frozen=True)
class Sampling:
    """Base of all sampling plans. ``max_steps`` bounds the stored time axis."""

    max_steps: int = 64

    modality = "video"

    @property
    def frames_per_step(self) -> int:
        raise NotImplementedError

    def plan(self, info: MediaInfo) -> Plan:
        raise NotImplementedError

    def config(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class KeyFrames(Sampling):
    """One key frame per second: the first frame of each 1-s window (SimpleVQA's convention)."""

    @property
    def frames_per_step(self) -> int:
        return 1

    def plan(self, info: MediaInfo) -> Plan:
        starts = second_starts(info.duration, self.max_steps)
        return Plan(_frame_at(starts, info)[:, None], starts)


@dataclass(frozen=True)
class Clips(Sampling):
    """``frames`` frames from each 1-s window.

    ``consecutive=False`` spreads them evenly over the second (SlowFast-style clips);
    ``consecutive=True`` takes adjacent frames from the window start, which is what frame-difference
    statistics need to see duplicated (stuttering) frames; a window that would run past the last
    frame slides back inside the video, because a padded copy would read as a dropped frame. Only a
    video shorter than the window repeats its last frame.
    """

    frames: int = 32
    consecutive: bool = False

    @property
    def frames_per_step(self) -> int:
        return self.frames

    def plan(self, info: MediaInfo) -> Plan:
        starts = second_starts(info.duration, self.max_steps)
        first = _frame_at(starts, info)
        if self.consecutive:
            first = np.minimum(first, max(info.n_frames - self.frames, 0))
            idx = first[:, None] + np.arange(self.frames)[None, :]
        else:
            window = max(info.fps, 1.0)
            offsets = (np.arange(self.frames, dtype=np.float64) + 0.5) * window / self.frames
            idx = np.floor(first[:, None] + offsets[None, :])
        return Plan(np.clip(idx, 0, info.n_frames - 1).astype(np.int64), starts)


@dataclass(frozen=True)
class UniformFrames(Sampling):
    """``n`` frames spread uniformly over the whole video (the centre of ``n`` equal segments)."""

    n: int = 16

    def __post_init__(self) -> None:
        if self.max_steps < self.n:
            object.__setattr__(self, "max_steps", self.n)

    @property
    def frames_per_step(self) -> int:
        return 1

    def plan(self, info: MediaInfo) -> Plan:
        centres = (np.arange(self.n, dtype=np.float64) + 0.5) * info.n_frames / self.n
        idx = np.clip(np.floor(centres).astype(np.int64), 0, info.n_frames - 1)
        times = idx / info.fps if info.fps > 0 else np.zeros(self.n)
        return Plan(idx[:, None], times.astype(np.float64))


@dataclass(frozen=True)
class AudioSeconds(Sampling):
    """The audio track cut into the same 1-s steps as the video, resampled to mono ``sample_rate``."""

    sample_rate: int = 16000

    modality = "audio"

    @property
    def frames_per_step(self) -> int:
        return 0

    def plan(self, info: MediaInfo) -> Plan:
        starts = second_starts(info.duration, self.max_steps)
        return Plan(np.zeros((starts.shape[0], 0), dtype=np.int64), starts)


@dataclass(frozen=True)
class FragmentClips(Sampling):
    """FAST-VQA's test-time clips: each step is one ``clip_len``-frame clip, ``num_clips`` of them.

    Follows the official ``fastvqa/datasets/fusion_datasets.py`` samplers at test time
    (VQAssessment/FAST-VQA-and-FasterVQA), with their randomness replaced by fixed positions:

    * ``t_frag == 1`` (FAST-VQA-B, ``SampleFrames``): ``clip_len`` frames ``frame_interval`` apart;
      the video minus one clip's span is cut into ``num_clips`` equal parts and clip ``k`` starts
      at the middle of part ``k`` (MMAction2's test-mode offsets, exactly).
    * ``t_frag > 1`` (FasterVQA, ``FragmentSampleFrames``): the video is cut into ``t_frag`` equal
      segments and each contributes a run of ``clip_len // t_frag`` frames ``frame_interval``
      apart, so one clip spans the whole video. The official sampler puts each run at a random
      offset inside its segment; here clip ``k`` puts all its runs at the middle of the ``k``-th of
      ``num_clips`` equal parts of the free room, so the clips interleave instead of repeating.

    Indices past the last frame wrap around to the start (``np.mod``), as in both official
    samplers, which only matters for videos shorter than one clip's span. Positions are computed
    from the frame count alone, so the plan is a pure function of :class:`MediaInfo`; each step's
    timestamp is its first frame's time.
    """

    clip_len: int = 32
    frame_interval: int = 2
    t_frag: int = 1
    num_clips: int = 1

    def __post_init__(self) -> None:
        if self.clip_len % self.t_frag:
            raise ValueError(f"clip_len {self.clip_len} is not a multiple of t_frag {self.t_frag}")
        if min(self.clip_len, self.frame_interval, self.t_frag, self.num_clips) < 1:
            raise ValueError("clip_len, frame_interval, t_frag and num_clips must be positive")
        if self.max_steps < self.num_clips:
            object.__setattr__(self, "max_steps", self.num_clips)

    @property
    def frames_per_step(self) -> int:
        return self.clip_len

    def plan(self, info: MediaInfo) -> Plan:
        n = max(info.n_frames, 1)
        clips = np.arange(self.num_clips)
        if self.t_frag == 1:
            span = self.clip_len * self.frame_interval
            part = (n - span + 1) / self.num_clips
            starts = np.floor(clips * part + part / 2).astype(np.int64) if n > span - 1 else np.zeros_like(clips)
            idx = starts[:, None] + np.arange(self.clip_len)[None, :] * self.frame_interval
        else:
            run = self.clip_len // self.t_frag
            segment = n // self.t_frag
            room = segment - run * self.frame_interval
            offsets = np.floor((clips + 0.5) * room / self.num_clips).astype(np.int64) if room > 0 \
                else np.zeros_like(clips)
            within = np.arange(self.t_frag)[:, None] * segment + np.arange(run)[None, :] * self.frame_interval
            idx = offsets[:, None] + within.reshape(1, -1)
        idx = np.mod(idx, n).astype(np.int64)
        times = idx[:, 0] / info.fps if info.fps > 0 else np.zeros(self.num_clips)
        return Plan(idx, times.astype(np.float64))
