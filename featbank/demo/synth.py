"""Write media files from numpy arrays, so the demo and the tests can make small, real inputs.

Files go through the same codecs real datasets use (H.264 in MP4, AAC audio, PNG stills), so
everything downstream (probing, decoding with decord and PyAV, feature extraction) is exercised on
genuine containers rather than on arrays that skip the decoder.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def _check_frames(frames: np.ndarray) -> None:
    """Reject what libx264/yuv420p cannot encode faithfully, with a message naming the fix."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(
            f"yuv420p needs even width and height, got {width}x{height}; crop or pad by one pixel"
        )


def _frame_rate(fps: float) -> Fraction:
    """An exact rational rate (29.97 -> 2997/100), so frame timestamps never drift or collide."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _add_video_stream(container: av.container.OutputContainer, frames: np.ndarray, fps: float,
                      crf: int) -> av.VideoStream:
    """H.264 at constant quality: ``crf`` is the one knob that sets compression strength."""
    stream = container.add_stream("libx264", rate=_frame_rate(fps))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    return stream


def _add_audio_stream(container: av.container.OutputContainer,
                      sample_rate: int) -> av.AudioStream:
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono"
    return stream


def _encode_video(container: av.container.OutputContainer, stream: av.VideoStream,
                  frames: np.ndarray, fps: float) -> None:
    """One tick of ``1/fps`` per frame, so decoders count exactly T frames at the intended rate."""
    time_base = 1 / _frame_rate(fps)
    for index, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = index
        frame.time_base = time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream,
                  audio: np.ndarray, sample_rate: int) -> None:
    """Hand PyAV the whole track; its encoder re-chunks it into AAC's 1024-sample frames."""
    samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)[None, :]
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float,
                audio: np.ndarray | None = None, sample_rate: int = 16000, crf: int = 18) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames (and optional mono float audio in [-1, 1]) to MP4.

    Video is libx264/yuv420p at the given ``crf`` (18 is visually lossless, 45+ is blocky); audio,
    when given, is AAC at ``sample_rate``. Width and height must be even (a yuv420p constraint).
    """
    frames = np.asarray(frames)
    _check_frames(frames)
    if audio is not None and np.asarray(audio).ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {np.asarray(audio).shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        video = _add_video_stream(container, frames, fps, crf)
        sound = _add_audio_stream(container, sample_rate) if audio is not None else None
        _encode_video(container, video, frames, fps)
        if sound is not None:
            _encode_audio(container, sound, audio, sample_rate)
    return path


def write_image(path: str | os.PathLike, frame: np.ndarray) -> Path:
    """Save one ``(H, W, 3)`` uint8 RGB frame losslessly as PNG (the format follows the suffix)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame, mode="RGB").save(path)
    return path
