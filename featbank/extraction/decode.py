"""Decode each item once and hand every extractor the steps its sampling plan asks for.

Every file is first probed with PyAV, so a file that is not a video (text, HTML, an image under a
video name, an audio-only MP4) gets a message that says so instead of a decoder's internal check
failures, and the probe's codec name picks the decoder: decord (random access by frame index,
seeking to the nearest key frame) for the codecs it is known to handle (:data:`DECORD_CODECS`),
PyAV's sequential pass for every other codec (AV1, GIF...) and where decord returns malformed frames
(see :class:`SequentialFrames`); a codec no FFmpeg here can decode gets a message naming what to
install. Audio comes from PyAV (decord's audio reader mishandles some containers), still images
from Pillow. The union of all plans' frame indices is decoded in ascending order, a bounded batch at
a time, and a step is handed out as soon as its last frame is decoded and then dropped, so memory
holds only the steps currently open, never the whole video.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from featbank.errors import MediaError
from featbank.io.manifest import MediaItem, VirtualItem
from featbank.extraction.media import MediaInfo
from featbank.extraction.sampling import Plan

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
DECODE_BATCH = 16


@dataclass(frozen=True)
class Probe:
    """What PyAV's demuxer says a file holds, before any decoder is involved.

    ``video_codec`` is FFmpeg's name for the first video stream's codec (``h264``, ``av1``, ``gif``),
    ``None`` when that codec is unknown to the FFmpeg inside PyAV (no decoder for it at all).
    """

    format: str
    n_video: int
    n_audio: int
    video_codec: str | None = None

    @property
    def is_image(self) -> bool:
        """A still image under a video name (``x.mp4`` holding PNG bytes): FFmpeg's image demuxers."""
        return self.format == "image2" or self.format.endswith("_pipe")


def probe(path: Path) -> Probe:
    """Open the container with PyAV; :class:`MediaError` naming the reason when FFmpeg cannot."""
    try:
        with av.open(str(path)) as container:
            video = container.streams.video
            context = video[0].codec_context if video else None
            codec = context.codec.canonical_name if context is not None else None
            return Probe(container.format.name, len(video), len(container.streams.audio), codec)
    except Exception as exc:  # FFmpegError mostly; a demuxer on hostile bytes may raise others
        raise MediaError(f"{path}: cannot decode: FFmpeg finds no media container in it (corrupt, "
                         f"truncated, or not a video at all: {_first_line(exc)})") from exc


DECORD_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mpeg4", "mpeg2video", "mjpeg", "prores",
                           "ffv1", "huffyuv", "utvideo", "rawvideo"})
"""Codecs decord 0.6 opens and decodes correctly (8- and 10-bit, 4:2:0 to 4:4:4, each checked in
tests/test_bad_inputs.py). Every other codec is decoded by PyAV in one sequential pass: decord's
bundled FFmpeg has no AV1 decoder ("cannot find video stream"), cannot count an animated GIF's
frames ("broken metadata"), and returns wrongly sized frames for RGB codecs such as QuickTime RLE
and PNG-in-MOV. PyAV's FFmpeg decodes all of these; decord stays the first choice where it works
because it seeks to the frames a sparse sampling plan asks for instead of decoding them all."""


class SequentialFrames:
    """Frames by index from one in-order PyAV decoding pass, rotated as the container says.

    The decoder for codecs outside :data:`DECORD_CODECS`, and the fallback for files whose frames
    decord returns malformed. decord 0.6 infers the channel count from the row stride: when the
    stride (the row's bytes, rounded up for alignment) divided by the width is a whole number other
    than 3, frames come back with 4, 6, 12... "channels" and ``get_batch`` raises. That happens for
    narrow videos (width 8, 16, 24 px) and for rotated ones whose displayed width divides the coded
    stride (a 64x48 or 640x480 clip shot in portrait). :func:`iter_steps` asks for ascending
    indices, so one pass serves a whole item; a request for an earlier frame restarts the pass.
    Frames are turned by the display matrix, as decord does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: av.container.InputContainer | None = None
        self._decoded: Iterator[av.VideoFrame] | None = None
        self._next = 0  # index of the frame the pass yields next

    def _restart(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._decoded = self._container.decode(stream)
        self._next = 0

    def get(self, indices: np.ndarray) -> np.ndarray:
        order = indices.tolist()
        wanted = set(order)
        if self._decoded is None or min(wanted) < self._next:
            self._restart()
        got: dict[int, np.ndarray] = {}
        last = max(wanted)
        for frame in self._decoded:
            index, self._next = self._next, self._next + 1
            if index in wanted:
                turns = int(round(frame.rotation / 90)) % 4
                got[index] = np.rot90(frame.to_ndarray(format="rgb24"), turns)
            if index == last:
                break
        if len(got) < len(wanted):
            raise MediaError(f"{self.path}: video ended after {self._next} frames, "
                             f"frame {min(wanted - set(got))} was asked for (truncated stream?)")
        return np.stack([got[i] for i in order])


def stream_timing(path: Path) -> tuple[int, float]:
    """``(n_frames, fps)`` of the first video stream, from the container, as decord reports them.

    Matroska/WebM and GIF headers may carry no frame count; then the packets are counted in one
    demuxing pass (reading, not decoding). fps is the average rate, else FFmpeg's guess, else
    frames over duration.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            return n_frames, float(rate)
        seconds = container.duration / av.time_base if container.duration else 0.0
        return n_frames, n_frames / seconds if seconds > 0 else float("nan")


class VideoFile:
    """A video opened for random frame access plus one-shot audio decoding.

    The stream's codec picks the decoder (see :data:`DECORD_CODECS`); a codec the FFmpeg inside PyAV
    has no decoder for fails with a message that says what to install.
    """

    def __init__(self, path: Path, streams: Probe) -> None:
        self.path = path
        if streams.n_video == 0:
            raise MediaError(f"{path}: no video stream (the file holds {streams.n_audio} audio "
                             f"stream(s) and no picture)")
        if streams.video_codec is None:
            raise MediaError(
                f"{path}: cannot decode: its video codec is unknown to FFmpeg {av.ffmpeg_version_info} "
                f"(in PyAV {av.__version__}), so no decoder exists for it here; install a PyAV build "
                f"whose FFmpeg has that decoder (`pip install --upgrade av`), or transcode the file "
                f"(`ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4`)")
        self.codec = streams.video_codec
        self.decoder = "decord" if self.codec in DECORD_CODECS else "pyav"
        try:
            if self.decoder == "decord":
                n_frames, fps, first = self._open_decord()
            else:
                self._reader = SequentialFrames(path)
                n_frames, fps = stream_timing(path)
                first = self._reader.get(np.array([0])).shape[1:]
        except MediaError:
            raise
        except Exception as exc:  # decord raises DECORDError/RuntimeError, PyAV its FFmpegErrors
            raise MediaError(f"{path}: cannot decode the {self.codec} video stream with "
                             f"{self.decoder}, corrupt or truncated ({_decord_reason(exc)})") from exc
        if n_frames < 1 or not np.isfinite(fps) or fps <= 0:
            raise MediaError(f"{path}: {self.codec} video stream has {n_frames} frames at {fps} fps")
        height, width = first[:2]
        self.info = MediaInfo(n_frames=n_frames, fps=fps, width=width, height=height,
                              has_audio=streams.n_audio > 0)

    def _open_decord(self) -> tuple[int, float, tuple[int, ...]]:
        """Open with decord; its frame count, fps and first frame's shape. Frames decord returns
        malformed (not 3 channels, see :class:`SequentialFrames`) are served by PyAV instead."""
        import decord  # deferred: decord prints to stderr at import on some systems

        reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        n_frames, first, fps = len(reader), reader[0].shape, float(reader.get_avg_fps())
        if first[2] != 3:
            self.decoder, self._reader = "pyav", SequentialFrames(self.path)
        else:
            self._reader = reader
        return n_frames, fps, first

    def frames(self, indices: np.ndarray) -> np.ndarray:
        try:
            if isinstance(self._reader, SequentialFrames):
                return self._reader.get(indices)
            return self._reader.get_batch(indices.tolist()).asnumpy()
        except MediaError:
            raise
        except Exception as exc:  # decord raises its own and RuntimeErrors on broken packets
            raise MediaError(f"{self.path}: cannot decode frames {indices[0]}..{indices[-1]}, the "
                             f"{self.codec} video stream is corrupt or truncated "
                             f"({_decord_reason(exc)})") from exc

    def audio(self, sample_rate: int) -> np.ndarray | None:
        return read_audio(self.path, sample_rate) if self.info.has_audio else None


class ImageFile:
    """A still image, served to every extractor as a one-frame video without audio."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with Image.open(path) as img:
                self._frame = rgb8(img)
        except Exception as exc:  # Pillow raises several types for unreadable files
            raise MediaError(f"{path}: not a readable image ({_first_line(exc)})") from exc
        h, w = self._frame.shape[:2]
        self.info = MediaInfo(n_frames=1, fps=1.0, width=w, height=h, has_audio=False, is_image=True)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.repeat(self._frame[None], len(indices), axis=0)

    def audio(self, sample_rate: int) -> None:
        return None


INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def rgb8(img: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of any Pillow image.

    Pillow's ``convert("RGB")`` clips integer greyscale (16-bit PNG loads as ``I;16``) at 255
    instead of scaling it, which turns a 16-bit image almost white; those keep their top 8 bits
    (``I``, 32-bit, is read as 16-bit data, which is what PNG and most TIFFs hold).
    """
    if img.mode in INTEGER_MODES:
        grey = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


MediaSource = VideoFile | ImageFile


def open_media(path: MediaItem) -> MediaSource:
    """Open an item for decoding; :class:`MediaError` when it is absent or undecodable.

    The suffix picks images; anything else is probed, and served as an image when FFmpeg finds
    a still-image format inside (PNG bytes saved as ``x.mp4``). An imported item has only the
    features it was imported with, so extracting anything else from it is a per-item failure.
    """
    if isinstance(path, VirtualItem):
        raise MediaError(f"{path.uri}: imported item has no media to decode (its features came from "
                         f"`featbank import`; import other feature sets for it the same way)")
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFile(path)
    streams = probe(path)
    if streams.is_image:
        return ImageFile(path)
    return VideoFile(path, streams)


def _first_line(exc: BaseException, message: str | None = None) -> str:
    """First line of ``message`` (default: the exception's), at most 300 characters."""
    text = (str(exc) if message is None else message).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ")


def _decord_reason(exc: BaseException) -> str:
    """decord's message without its ``[hh:mm:ss] /build/path/file.cc:123:`` prefixes."""
    return _first_line(exc, _DECORD_PREFIX.sub("", str(exc)))


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
