"""Decode each item once and hand every extractor the steps its sampling plan asks for.

Video frames come from decord (random access by frame index, seeking to the nearest key frame),
audio from PyAV (decord's audio reader mishandles some containers), still images from Pillow. The
union of all plans' frame indices is decoded in ascending order, a bounded batch at a time, and a
step is handed out as soon as its last frame is decoded and then dropped, so memory holds only the
steps currently open, never the whole video.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from featbank.errors import MediaError
from featbank.media import MediaInfo
from featbank.sampling import Plan

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
DECODE_BATCH = 16


class VideoFile:
    """A video opened for random frame access plus one-shot audio decoding."""

    def __init__(self, path: Path) -> None:
        import decord  # deferred: decord prints to stderr at import on some systems

        self.path = path
        if path.stat().st_size == 0:
            raise MediaError(f"{path}: empty file (0 bytes)")
        try:
            self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            n_frames = len(self._reader)
            height, width = self._reader[0].shape[:2]
            fps = float(self._reader.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as exc:
            raise MediaError(f"{path}: not a decodable video ({_first_line(exc)})") from exc
        if n_frames < 1 or not np.isfinite(fps) or fps <= 0:
            raise MediaError(f"{path}: video stream has {n_frames} frames at {fps} fps")
        self.info = MediaInfo(n_frames=n_frames, fps=fps, width=width, height=height,
                              has_audio=_has_audio(path))

    def frames(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._reader.get_batch(indices.tolist()).asnumpy()
        except Exception as exc:  # decord raises its own and RuntimeErrors on broken packets
            raise MediaError(f"{self.path}: decoding frames failed ({_first_line(exc)})") from exc

    def audio(self, sample_rate: int) -> np.ndarray | None:
        return read_audio(self.path, sample_rate) if self.info.has_audio else None


class ImageFile:
    """A still image, served to every extractor as a one-frame video without audio."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with Image.open(path) as img:
                self._frame = np.asarray(img.convert("RGB"))
        except Exception as exc:  # Pillow raises several types for unreadable files
            raise MediaError(f"{path}: not a readable image ({_first_line(exc)})") from exc
        h, w = self._frame.shape[:2]
        self.info = MediaInfo(n_frames=1, fps=1.0, width=w, height=h, has_audio=False, is_image=True)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.repeat(self._frame[None], len(indices), axis=0)

    def audio(self, sample_rate: int) -> None:
        return None


MediaSource = VideoFile | ImageFile


def open_media(path: Path) -> MediaSource:
    """Open an item for decoding; :class:`MediaError` when it is absent or undecodable."""
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFile(path)
    return VideoFile(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _has_audio(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio) > 0
    except av.FFmpegError:
        return False


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream as mono float32 at ``sample_rate`` (FFmpeg's resampler)."""
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except (av.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: decoding audio failed ({_first_line(exc)})") from exc
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def audio_steps(audio: np.ndarray, plan: Plan, sample_rate: int) -> np.ndarray:
    """One full second of audio per step, ``(steps, sample_rate)``.

    A step starting less than a second before the end takes the track's last full second instead,
    so no step is padded with silence (which would bias energy and spectral statistics). A track
    shorter than a second is zero-padded: there is nothing else to show.
    """
    if audio.shape[0] < sample_rate:
        audio = np.pad(audio, (0, sample_rate - audio.shape[0]))
    last_start = audio.shape[0] - sample_rate
    starts = np.minimum((plan.timestamps * sample_rate).astype(np.int64), last_start)
    return np.stack([audio[s:s + sample_rate] for s in starts])


def iter_steps(source: MediaSource, plans: list[Plan],
               batch: int = DECODE_BATCH) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(plan_index, step_index, frames)`` for every step of every plan, decoding once.

    Frames shared by several plans (a key frame that is also a clip frame) are decoded once and
    copied into each step that needs them.
    """
    wanted: dict[int, list[tuple[int, int, int]]] = {}
    remaining: dict[tuple[int, int], int] = {}
    for p, plan in enumerate(plans):
        for s, row in enumerate(plan.frame_indices):
            remaining[(p, s)] = len(row)
            for slot, frame in enumerate(row):
                wanted.setdefault(int(frame), []).append((p, s, slot))
    order = np.array(sorted(wanted), dtype=np.int64)
    open_steps: dict[tuple[int, int], np.ndarray] = {}
    for start in range(0, len(order), batch):
        indices = order[start:start + batch]
        decoded = source.frames(indices)
        for frame_index, frame in zip(indices.tolist(), decoded):
            for p, s, slot in wanted[frame_index]:
                buf = open_steps.get((p, s))
                if buf is None:
                    buf = np.empty((remaining[(p, s)], *frame.shape), dtype=frame.dtype)
                    open_steps[(p, s)] = buf
                buf[slot] = frame
                remaining[(p, s)] -= 1
                if remaining[(p, s)] == 0:
                    yield p, s, open_steps.pop((p, s))
