"""Decode each item once and hand every extractor the steps its sampling plan asks for.

Every file is first probed with PyAV, so a file that is not a video (text, HTML, an image under a
video name, an audio-only MP4) gets a message that says so instead of a decoder's internal check
failures, and the probe's codec name says which decoders can serve it: decord (random access by
frame index, seeking to the nearest key frame) for the codecs it is known to handle
(:data:`DECORD_CODECS`), PyAV alone for every other codec (AV1, GIF...) and where decord returns
malformed frames (see :class:`SequentialFrames`); a codec no FFmpeg here can decode gets a message
naming what to install. Audio comes from PyAV (decord's audio reader mishandles some containers),
still images from Pillow.

Which of the two reads an item's frames is chosen per file from what each would decode (see
:meth:`VideoFile.choose_reader`): PyAV's threaded decoder in one sequential pass, or decord
seeking from key frame to key frame, which only wins when the wanted frames are sparse and key
frames frequent (one frame per second of a long video). A decoded frame is converted only into what
the plans wanting it ask for (:class:`~featbank.extraction.pixels.Pixels`): RGB for the frames
an extractor reads in colour, the Y' plane for the ones it reads as luma. The union of all plans'
frame indices is decoded in ascending order and a step is handed out as soon as its last frame is
decoded, so memory holds only the steps currently open, never the whole video; with ``reuse`` the
step buffers are recycled (see :class:`BufferPool`) instead of allocated afresh for every step.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import av
import numpy as np
from PIL import Image

from featbank.errors import MediaError
from featbank.extraction.media import MediaInfo
from featbank.extraction.pixels import BT601, RGB_FRAMES, Luma, Pixels, StepPixels
from featbank.extraction.sampling import Plan
from featbank.io.manifest import MediaItem, VirtualItem

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
tests/test_bad_inputs.py). Every other codec is decoded by PyAV only: decord's bundled FFmpeg has
no AV1 decoder ("cannot find video stream"), cannot count an animated GIF's frames ("broken
metadata"), and returns wrongly sized frames for RGB codecs such as QuickTime RLE and PNG-in-MOV.
For these codecs decord is kept because it seeks to the frames a sparse sampling plan asks for
instead of decoding them all; :meth:`VideoFile.choose_reader` decides per file which one reads."""

DECORD_FRAME_COST = 2.0
"""Wall-time cost of one frame decoded by decord (one thread, seeking) in frames of PyAV's threaded
sequential pass on the 2-core machine: PyAV's frame threads use both cores where decord uses one,
and every seek restarts decoding at a key frame. ``python -m benchmarks decode_once`` prints both
readers' times on a sparse plan in its last section (1.2-2.1 per frame measured under heavy load,
where threads gain least); 2 keeps PyAV's pass unless seeking saves at least half the frames."""


# --- Decoded frames, converted on demand -----------------------------------------------------------

_Y_PLANE_FORMAT = re.compile(r"(?:yuva?(?P<full>j?)4[0-4][0-4]p|nv(?:12|21|16|24|42)|(?P<gray>gray))"
                             r"(?:(?P<bits>9|10|12|14|16)le)?")


def y_plane_levels(frame: av.VideoFrame) -> tuple[int, int, float, float] | None:
    """``(low, high, scale, offset)`` of a frame's Y' plane, ``None`` when it has none.

    Codes are clipped to ``[low, high]`` (the nominal range: 16..235 scaled to the bit depth for
    limited-range video, the full code range otherwise), then ``code * scale + offset`` is luma on
    0..255, the scale on which the RGB path's ``0.299 R + 0.587 G + 0.114 B`` lies. Clipping keeps
    the overshoot a codec's ringing leaves below black and above white out of the statistics, as
    the conversion to 8-bit RGB always did. Planar and semi-planar YUV and grey, 8 to 16 bits
    stored little-endian in the low bits, qualify; everything else (RGB, palettes, big-endian or
    MSB-aligned formats) is read through RGB.
    """
    match = _Y_PLANE_FORMAT.fullmatch(frame.format.name)
    if match is None:
        return None
    bits = int(match["bits"] or 8)
    full = bool(match["full"] or match["gray"]) or frame.color_range == 2  # 2: AVCOL_RANGE_JPEG
    if full:
        high = (1 << bits) - 1
        return 0, high, 255 / high, 0.0
    low, high = 16 << (bits - 8), 235 << (bits - 8)
    scale = 255 / (high - low)
    return low, high, scale, -low * scale


def _plane_view(plane: av.video.plane.VideoPlane, width: int, height: int, dtype: np.dtype,
                channels: int = 1) -> np.ndarray:
    """The plane's pixels as ``(height, width[, channels])`` without copying (rows are padded)."""
    flat = np.frombuffer(plane, dtype=dtype)
    rows = flat[:height * (plane.line_size // dtype.itemsize)].reshape(height, -1)
    view = rows[:, :width * channels]
    return view.reshape(height, width, channels) if channels > 1 else view


class AVPicture:
    """One frame from PyAV, turned as the container says, converted only into what is asked of it.

    Each representation is computed at most once, however many plans want the frame; both are
    views into buffers FFmpeg owns, valid while this object lives.
    """

    def __init__(self, frame: av.VideoFrame) -> None:
        self.frame = frame
        self.turns = round(frame.rotation / 90) % 4

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` as displayed."""
        size = (self.frame.height, self.frame.width)
        return size[::-1] if self.turns % 2 else size

    @cached_property
    def rgb(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB as displayed."""
        frame = self.frame.reformat(format="rgb24")
        view = _plane_view(frame.planes[0], frame.width, frame.height, np.dtype(np.uint8), 3)
        return np.rot90(view, self.turns) if self.turns else view

    @cached_property
    def _levels(self) -> tuple[int, int, float, float] | None:
        return y_plane_levels(self.frame)

    @property
    def luma_kind(self) -> tuple[np.dtype, float, float]:
        """``(dtype, scale, offset)`` of the codes :meth:`write_luma` writes (see :class:`Luma`)."""
        if self._levels is None:
            return np.dtype(np.float32), 1.0, 0.0
        dtype = np.dtype(np.uint8 if self._levels[1] < 256 else "<u2")
        return dtype, self._levels[2], self._levels[3]

    def write_luma(self, out: np.ndarray) -> None:
        """Write this frame's luma codes into ``out`` (shape ``(H, W)``, dtype of :attr:`luma_kind`)."""
        if self._levels is None:
            np.matmul(self.rgb, BT601, out=out)
            return
        frame = self.frame
        plane = _plane_view(frame.planes[0], frame.width, frame.height, out.dtype)
        np.clip(np.rot90(plane, self.turns) if self.turns else plane, self._levels[0], self._levels[1],
                out=out)


class ArrayPicture:
    """A frame that arrives as RGB (decord, still images): luma comes from BT.601 weights."""

    luma_kind = (np.dtype(np.float32), 1.0, 0.0)

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.shape = rgb.shape[:2]

    def write_luma(self, out: np.ndarray) -> None:
        np.matmul(self.rgb, BT601, out=out)


Picture = AVPicture | ArrayPicture


class StreamEnded(MediaError):
    """PyAV's pass ended before a frame the plan asks for (a truncated stream, or a frame count
    from the container that the decoder does not reach)."""


class SequentialFrames:
    """Frames by index from one in-order pass of PyAV's threaded decoder, turned as the container says.

    The reader for codecs outside :data:`DECORD_CODECS`, the fallback for files whose frames
    decord returns malformed, and the faster reader for dense plans on any codec. decord 0.6 infers
    the channel count from the row stride: when the stride (the row's bytes, rounded up for
    alignment) divided by the width is a whole number other than 3, frames come back with 4, 6,
    12... "channels" and ``get_batch`` raises. That happens for narrow videos (width 8, 16, 24 px)
    and for rotated ones whose displayed width divides the coded stride (a 64x48 or 640x480 clip
    shot in portrait). :func:`iter_steps` asks for ascending indices, so one pass serves a whole
    item; a request for an earlier frame restarts the pass. Frames are turned by the display
    matrix, as decord does.
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

    def pictures(self, indices: np.ndarray) -> Iterator[tuple[int, AVPicture]]:
        """``(index, picture)`` for each of ``indices`` (ascending, unique), in that order."""
        if len(indices) == 0:
            return
        if self._decoded is None or int(indices[0]) < self._next:
            self._restart()
        position, last = 0, int(indices[-1])
        for frame in self._decoded:
            index, self._next = self._next, self._next + 1
            if index == indices[position]:
                yield index, AVPicture(frame)
                position += 1
            if index == last:
                return
        raise StreamEnded(f"{self.path}: video ended after {self._next} frames, frame "
                          f"{int(indices[position])} was asked for (truncated stream?)")

    def get(self, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), H, W, 3)`` RGB in the order asked, duplicates allowed."""
        unique = np.unique(indices)
        got = {index: picture.rgb.copy() for index, picture in self.pictures(unique)}
        return np.stack([got[i] for i in indices.tolist()])


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
    """A video opened for frame access plus one-shot audio decoding.

    The stream's codec says which decoders can read it (:attr:`decoder` is ``"decord"`` where
    decord can, see :data:`DECORD_CODECS`); :meth:`decode` picks the cheaper one per request. A
    codec the FFmpeg inside PyAV has no decoder for fails with a message that says what to install.
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
        self.key_frames = np.zeros(0, dtype=np.int64)  # decord's key-frame indices, where it reads
        self._sequential = SequentialFrames(path)
        try:
            if self.decoder == "decord":
                n_frames, fps, first = self._open_decord()
            else:
                n_frames, fps = stream_timing(path)
                first = self._sequential.get(np.array([0])).shape[1:]
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
        """decord's frame count, fps and first frame's shape. Frames decord returns malformed (not 3
        channels, see :class:`SequentialFrames`) are served by PyAV instead.

        The reader is closed again: an open decord reader keeps decoding ahead on its own thread
        (0.45 s of CPU per 10-s 540p clip, measured), which is waste whenever PyAV reads the
        frames. :attr:`_decord` reopens it when seeking is chosen.
        """
        reader = self._decord
        n_frames, first, fps = len(reader), reader[0].shape, float(reader.get_avg_fps())
        self.key_frames = np.asarray(reader.get_key_indices(), dtype=np.int64)  # from its packet index
        del self._decord
        if first[2] != 3:
            self.decoder = "pyav"
        return n_frames, fps, first

    @cached_property
    def _decord(self):  # decord.VideoReader; untyped because decord is imported late
        import decord  # deferred: decord prints to stderr at import on some systems

        return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8 RGB of any frames, in the order asked (random access)."""
        try:
            if self.decoder == "pyav":
                return self._sequential.get(indices)
            return self._decord.get_batch(indices.tolist()).asnumpy()
        except MediaError:
            raise
        except Exception as exc:  # decord raises its own and RuntimeErrors on broken packets
            raise self._decode_error(indices, exc) from exc

    def _decode_error(self, indices: np.ndarray, exc: BaseException) -> MediaError:
        return MediaError(f"{self.path}: cannot decode frames {indices[0]}..{indices[-1]}, the "
                          f"{self.codec} video stream is corrupt or truncated ({_decord_reason(exc)})")

    def seek_cost(self, indices: np.ndarray) -> int:
        """Frames decord decodes to serve ascending ``indices``: from the key frame opening each
        group of pictures that holds a wanted frame up to the group's last wanted frame. The key
        frames are decord's own index (:attr:`key_frames`, read when the file is opened)."""
        keys = self.key_frames if self.key_frames.size and self.key_frames[0] == 0 else np.r_[0, self.key_frames]
        group = np.searchsorted(keys, indices, side="right") - 1
        last_in_group = np.r_[np.flatnonzero(np.diff(group)), len(indices) - 1]
        return int(np.sum(indices[last_in_group] - keys[group[last_in_group]] + 1))

    def choose_reader(self, indices: np.ndarray, luma: bool = False) -> str:
        """``"pyav"`` (one threaded sequential pass) or ``"decord"`` (seeking), whichever decodes less.

        The sequential pass decodes every frame up to the last one wanted; decord decodes each
        group of pictures holding a wanted frame up to that frame (:meth:`seek_cost`), at
        :data:`DECORD_FRAME_COST` times the cost per frame. Seeking wins on sparse plans over
        frequent key frames (one frame per second of a clip with a key frame every second). When
        ``luma`` is wanted the pass is PyAV's whatever the cost: decord returns RGB only, and luma
        taken from RGB is not the Y' plane's, so an extractor's features would depend on which
        other extractors shared the decode.
        """
        if self.decoder != "decord" or len(indices) == 0 or luma:
            return "pyav"
        sequential = int(indices[-1]) + 1
        return "decord" if self.seek_cost(indices) * DECORD_FRAME_COST < sequential else "pyav"

    def decode(self, indices: np.ndarray, batch: int = DECODE_BATCH,
               luma: bool = False) -> Iterator[tuple[int, Picture]]:
        """``(index, picture)`` for each of ``indices`` (ascending, unique), decoding each once;
        ``luma``: some picture will be asked for its luma (see :meth:`choose_reader`).

        decord reads ``batch`` frames per call. When PyAV's pass ends before a frame decord counted
        (their frame counts can differ by a frame or two at the end of a stream), decord serves the
        rest, so the choice of reader never fails an item the other could read.
        """
        done = -1
        try:
            if self.choose_reader(indices, luma) == "pyav":
                try:
                    for index, picture in self._sequential.pictures(indices):
                        done = index
                        yield index, picture
                    return
                except StreamEnded:
                    if self.decoder != "decord":
                        raise
            rest = indices[indices > done]
            for start in range(0, len(rest), batch):
                chunk = rest[start:start + batch]
                for index, rgb in zip(chunk.tolist(), self._decord.get_batch(chunk.tolist()).asnumpy()):
                    yield index, ArrayPicture(rgb)
        except MediaError:
            raise
        except Exception as exc:  # decord raises its own and RuntimeErrors on broken packets
            raise self._decode_error(indices, exc) from exc

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

    def decode(self, indices: np.ndarray, batch: int = DECODE_BATCH,
               luma: bool = False) -> Iterator[tuple[int, Picture]]:
        picture = ArrayPicture(self._frame)
        for index in indices.tolist():
            yield index, picture

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


# --- Steps ---------------------------------------------------------------------------------------


class BufferPool:
    """Arrays handed back for reuse, by shape and dtype, up to ``max_bytes`` in all.

    A fresh 8-frame 1080p step is 16-50 MB. numpy takes blocks that large from malloc, which maps
    them freshly, so every page faults on first touch (220-340k minor faults per 1080p clip were
    measured before this pool), and under dask's ``MALLOC_TRIM_THRESHOLD_`` every freed block goes
    back to the system. Handing the same buffers from step to step and item to item touches their
    pages once. When a buffer of another size does not fit, the ones kept for other sizes are
    dropped: a run's frame size changes with its videos, and the last size is the likely next one.
    """

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple[tuple[int, ...], str], list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array of that shape and dtype, uninitialised: a kept one if any, else a new one."""
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            kept = self._free.get(key)
            if kept:
                array = kept.pop()
                self._bytes -= array.nbytes
                return array
        return np.empty(shape, dtype)

    def give(self, *arrays: np.ndarray | None) -> None:
        """Keep ``arrays`` for a later :meth:`take`; the caller must hold no view of them any more."""
        with self._lock:
            for array in arrays:
                if array is None or array.base is not None or array.nbytes > self.max_bytes:
                    continue
                key = (array.shape, array.dtype.str)
                if self._bytes + array.nbytes > self.max_bytes:
                    self._free = {key: self._free.get(key, [])}
                    self._bytes = sum(a.nbytes for a in self._free[key])
                    if self._bytes + array.nbytes > self.max_bytes:
                        continue
                self._free.setdefault(key, []).append(array)
                self._bytes += array.nbytes


STEP_BUFFERS = BufferPool()
"""The pool :func:`~featbank.extraction.item.extract_item` decodes into: one per process."""

Step = np.ndarray | StepPixels


def _new_step(picture: Picture, request: Pixels, n_frames: int, pool: BufferPool | None) -> Step:
    """Buffers for one step of ``n_frames`` frames shaped like ``picture``, as ``request`` asks."""
    take = pool.take if pool is not None else np.empty
    height, width = picture.shape
    n_rgb = request.rgb_slots(n_frames)
    rgb = take((n_rgb, height, width, 3), np.uint8) if n_rgb else None
    if request.plain_rgb:
        return rgb
    luma = None
    if request.luma:
        dtype, scale, offset = picture.luma_kind
        luma = Luma(take((n_frames, height, width), dtype), scale, offset)
    return StepPixels(rgb, luma)


def _write(step: Step, slot: int, picture: Picture) -> None:
    """Put ``picture`` into frame ``slot`` of ``step``, in every representation the step holds."""
    rgb = step if isinstance(step, np.ndarray) else step.rgb
    if rgb is not None and slot < rgb.shape[0]:
        rgb[slot] = picture.rgb
    if isinstance(step, StepPixels) and step.luma is not None:
        luma = step.luma
        if picture.luma_kind == (luma.codes.dtype, luma.scale, luma.offset):
            picture.write_luma(luma.codes[slot])
        else:  # the stream changed pixel format mid-step: re-express this frame in the step's codes
            dtype, scale, offset = picture.luma_kind
            codes = np.empty(luma.codes.shape[1:], dtype)
            picture.write_luma(codes)
            values = Luma(codes, scale, offset).values()
            luma.codes[slot] = np.round((values - luma.offset) / luma.scale) \
                if luma.codes.dtype.kind == "u" else values


def _release(step: Step, pool: BufferPool) -> None:
    if isinstance(step, np.ndarray):
        pool.give(step)
    else:
        pool.give(step.rgb, step.luma.codes if step.luma is not None else None)


PREFETCH = 8
"""Pictures the decoding thread of :func:`prefetched` may hold ahead of the consumer."""


@dataclass(frozen=True)
class _Raised:
    error: BaseException


_END = object()


def prefetched(items: Iterator, depth: int = PREFETCH) -> Iterator:
    """The items of ``items``, produced by a background thread up to ``depth`` ahead of the caller.

    Why: decoding the next frames and the extractors' work on the current step (the hand-crafted
    statistics, a CNN on the CPU) then overlap instead of taking turns; FFmpeg, decord and numpy
    release the GIL while they work. Measured by ``bench decode_once`` (two 10-s clips, quiet 2-core
    VM), one pass of ``handcrafted`` + ``audio`` against decoding alone (+ audio): 1.40x -> 1.24x
    wall at 540p, 1.15x -> 1.03x at 1080p; CPU time unchanged (1.28x at 540p). An exception
    of the producer is raised here, where its item would have come; when the caller stops early
    (an exception, ``close()``) the producer is stopped and joined before this returns, and
    ``items`` is closed, so the decoder is never used by two threads at once.
    """
    pending: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Raised(error))
            return
        put(_END)

    thread = threading.Thread(target=produce, name="featbank-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()


def iter_steps(source: MediaSource, plans: list[Plan], pixels: list[Pixels] | None = None,
               batch: int = DECODE_BATCH, pool: BufferPool | None = None) -> Iterator[tuple[int, int, Step]]:
    """Yield ``(plan_index, step_index, step)`` for every step of every plan, decoding once.

    A step is ``(frames, H, W, 3)`` uint8 RGB for plans whose :class:`Pixels` (default: RGB for
    all) is the default, else :class:`StepPixels` holding what it asks for. Frames shared by
    several plans (a key frame that is also a clip frame) are decoded and converted once and
    copied into each step that needs them. With ``pool``, a step's buffers come from it and go
    back to it as soon as the consumer asks for the next step, so the consumer must be done with
    (or have copied) a step by then; without, every step is a fresh array it may keep.
    """
    requests = pixels or [RGB_FRAMES] * len(plans)
    wanted: dict[int, list[tuple[int, int, int]]] = {}
    remaining: dict[tuple[int, int], int] = {}
    for p, plan in enumerate(plans):
        for s, row in enumerate(plan.frame_indices):
            remaining[(p, s)] = len(row)
            for slot, frame in enumerate(row):
                wanted.setdefault(int(frame), []).append((p, s, slot))
    order = np.array(sorted(wanted), dtype=np.int64)
    open_steps: dict[tuple[int, int], Step] = {}
    for frame_index, picture in prefetched(source.decode(order, batch, any(r.luma for r in requests))):
        for p, s, slot in wanted[frame_index]:
            step = open_steps.get((p, s))
            if step is None:
                step = open_steps[(p, s)] = _new_step(picture, requests[p], len(plans[p].frame_indices[s]), pool)
            _write(step, slot, picture)
            remaining[(p, s)] -= 1
            if remaining[(p, s)] == 0:
                yield p, s, open_steps.pop((p, s))
                if pool is not None:
                    _release(step, pool)
