"""Catalogue of bad input: every kind gives a clear recorded error, the run completes, nothing is lost.

Two tables, each the one place where its kinds are listed:

* ``MEDIA``: files a manifest can point at. All of them (plus two good videos) go through ONE
  ``extract_manifest`` run with the ``handcrafted`` and ``audio`` extractors; each case then states
  the status it must end in per extractor, and for ``FAILED`` the reason its recorded error must
  name. Cases the manifest itself must refuse (a directory, a dead symlink) are in the same table
  with ``REJECTED`` and are checked against ``load_manifest`` instead.
* ``MANIFESTS``: malformed manifests, each a :class:`ManifestError` naming the line and the reason.

Files are synthesized here with PyAV, Pillow and numpy (tiny, no network).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import extractors
from conftest import moving_frames
from featbank.bank.store import ABSENT, FAILED, OK, FeatureBank, digest_hex
from featbank.extraction.decode import SequentialFrames, VideoFile, open_media
from featbank.errors import ManifestError, MediaError
from featbank.bank.hashing import file_digest
from featbank.io.manifest import load_manifest
from featbank.extraction.orchestrate import extract_manifest
from featbank.demo.synth import write_video

REJECTED = "rejected by the manifest"  # the manifest refuses the row: no extraction at all
FPS = 15
RNG_SEED = 7


# --- Writers for files synth.write_video cannot make ------------------------------------------


def tone(n_frames: int, fps: float = FPS) -> np.ndarray:
    t = np.arange(int(16000 * n_frames / fps)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def encode(path: Path, frames: np.ndarray, pts: np.ndarray | None = None, fmt: str = "mp4",
           codec: str = "libx264", rate: int = FPS, options: dict | None = None,
           container_options: dict | None = None, pix_fmt: str = "yuv420p") -> Path:
    """Video only, any container/codec/pixel format, explicit frame timestamps in units of ``1/rate``."""
    pts = np.arange(len(frames)) if pts is None else pts
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, rate)  # libvpx refuses to open without one
        stream.options = options or {}
        for t, rgb in zip(pts, frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(30)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def good_video(path: Path, n: int = 30, audio: bool = True, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    return write_video(path, moving_frames(n, h, w, seed), FPS, audio=tone(n) if audio else None)


def mp4_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 boxes: name -> (offset, size)."""
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes[data[offset + 4:offset + 8].decode("latin-1")] = (offset, size)
        if size < 8:
            break
        offset += size
    return boxes


def overwrite_middle(box: str) -> Callable[[Path], Path]:
    """A good MP4 whose ``box`` (``mdat`` = the packets, ``moov`` = the index) has its middle third
    overwritten with random bytes: a bad disk sector or a botched partial download."""

    def make(path: Path) -> Path:
        data = bytearray(good_video(path, seed=3).read_bytes())
        start, size = mp4_boxes(bytes(data))[box]
        a = start + size // 3
        data[a:a + size // 3] = np.random.default_rng(RNG_SEED).bytes(size // 3)
        path.write_bytes(bytes(data))
        return path

    return make


def truncated(fraction: float | None = None, n_bytes: int | None = None,
              faststart: bool = False) -> Callable[[Path], Path]:
    """The first part of a good MP4. Without ``faststart`` the index (moov) sits at the end and is
    cut away; with it the index survives and promises packets that are not there."""

    def make(path: Path) -> Path:
        if faststart:
            full = encode(path, moving_frames(45, seed=4), container_options={"movflags": "faststart"})
        else:
            full = good_video(path, seed=4)
        data = full.read_bytes()
        path.write_bytes(data[: n_bytes if n_bytes is not None else int(len(data) * fraction)])
        return path

    return make


def rotated(path: Path) -> Path:
    """A phone-style portrait clip: coded 64x48, with a 90° clockwise display matrix in ``tkhd``.

    FFmpeg 8 ignores the old ``rotate`` metadata tag when muxing and PyAV cannot attach the display
    matrix, so the matrix is patched in (that box's layout is fixed: the matrix is 44 bytes after
    the box type).
    """
    data = bytearray(encode(path, moving_frames(15, seed=5)).read_bytes())
    at = data.find(b"tkhd") + 44
    assert data[at:at + 36] == struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    data[at:at + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def variable_frame_rate(path: Path) -> Path:
    """20 frames at irregular times (gaps of 1 to 7 ticks of 1/30 s), as screen recorders write."""
    gaps = [1, 1, 3, 1, 5, 1, 1, 2, 7, 1, 1, 1, 4, 1, 1, 1, 1, 3, 1]
    return encode(path, moving_frames(20, seed=6), pts=np.cumsum([0, *gaps]), rate=30)


def uhd(path: Path) -> Path:
    """3840x2160, 3 frames of a cheap-to-encode drifting gradient (ultrafast preset)."""
    x = np.arange(3840, dtype=np.int32)[None, :] // 7
    y = np.arange(2160, dtype=np.int32)[:, None] // 5
    frames = []
    for k in range(3):
        base = ((x + y + 9 * k) % 256).astype(np.uint8)
        frames.append(np.stack([base, 255 - base, base[::-1]], axis=-1))
    return encode(path, np.stack(frames), options={"preset": "ultrafast", "crf": "30"})


def image(array: np.ndarray, mode: str | None = None, convert: str | None = None) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        img = Image.fromarray(array, mode) if mode else Image.fromarray(array)
        (img.convert(convert) if convert else img).save(path)
        return path

    return make


def noise(*shape: int) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).integers(0, 256, size=shape, dtype=np.uint8)


def write_bytes(content: bytes) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return make


def png_bytes_as(path: Path) -> Path:
    image(noise(24, 32, 3))(path.with_suffix(".src.png"))
    path.write_bytes(path.with_suffix(".src.png").read_bytes())
    path.with_suffix(".src.png").unlink()
    return path


def truncated_png(path: Path) -> Path:
    data = image(noise(40, 40, 3))(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def directory(path: Path) -> Path:
    path.mkdir()
    return path


def dead_symlink(path: Path) -> Path:
    path.symlink_to(path.with_name("nowhere.mp4"))
    return path


def symlink_to(target: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.symlink_to(path.with_name(target))
        return path

    return make


def copy_of(source: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(path.with_name(source).read_bytes())
        return path

    return make


# --- Codecs: which decoder serves each, and that the picture survives -----------------------------


def gradient_frames(n: int = 8, size: int = 32) -> np.ndarray:
    """Smooth colour ramps drifting a little each frame: lossy codecs keep them within a few
    levels even at 32x32, so a decoded picture can be compared with its source."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([np.stack([(x * 8 + 10 * k) % 256, y * 8 % 256, ((x + y) * 4 + 20 * k) % 256], axis=-1)
                     for k in range(n)]).astype(np.uint8)


CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".avi": "avi", ".gif": "gif"}


@dataclass(frozen=True)
class Codec:
    """One codec/pixel-format clip (8 frames, 32x32): the FFmpeg codec name decode.py sees and the
    decoder it must route the stream to."""

    file: str
    encoder: str
    pix_fmt: str
    codec: str
    decoder: str  # "decord" or "pyav"
    options: tuple[tuple[str, str], ...] = ()
    tolerance: float = 12.0  # mean absolute error, in 8-bit levels, allowed against the source

    @property
    def needs(self) -> str:
        return f"{self.encoder}/{self.pix_fmt}"

    def make(self, path: Path) -> Path:
        return encode(path, gradient_frames(), fmt=CONTAINERS[path.suffix], codec=self.encoder,
                      options=dict(self.options), pix_fmt=self.pix_fmt)


VP9_FAST = (("deadline", "realtime"), ("cpu-used", "8"))
X265_QUIET = (("x265-params", "log-level=none"),)
CODECS = [
    # decord's bundled FFmpeg has no AV1 decoder and cannot count a GIF's frames: PyAV decodes them
    Codec("av1.mp4", "libsvtav1", "yuv420p", "av1", "pyav"),
    Codec("av1_matroska.mkv", "libsvtav1", "yuv420p", "av1", "pyav"),
    Codec("animated.gif", "gif", "rgb8", "gif", "pyav", tolerance=24.0),  # a 3-3-2 bit palette
    # decord returns wrongly sized frames for RGB codecs
    Codec("qtrle_rgb.mov", "qtrle", "rgb24", "qtrle", "pyav"),
    Codec("vp9_in_mp4.mp4", "libvpx-vp9", "yuv420p", "vp9", "decord", VP9_FAST),
    Codec("vp8.webm", "libvpx", "yuv420p", "vp8", "decord"),
    Codec("hevc_8bit.mp4", "libx265", "yuv420p", "hevc", "decord", X265_QUIET),
    Codec("hevc_10bit.mp4", "libx265", "yuv420p10le", "hevc", "decord", X265_QUIET),
    Codec("prores_422_10bit.mov", "prores_ks", "yuv422p10le", "prores", "decord"),
    Codec("mjpeg.avi", "mjpeg", "yuvj420p", "mjpeg", "decord"),
    Codec("h264_yuv444.mp4", "libx264", "yuv444p", "h264", "decord"),
    Codec("h264_10bit.mp4", "libx264", "yuv420p10le", "h264", "decord"),
    Codec("mpeg4_part2.mp4", "mpeg4", "yuv420p", "mpeg4", "decord"),
]


def unknown_codec(path: Path) -> Path:
    """An MP4 whose sample entry names a codec no FFmpeg knows (fourcc ``zzzz``): no decoder anywhere."""
    data = encode(path, gradient_frames()).read_bytes()
    at = data.find(b"avc1", data.find(b"stsd"))
    path.write_bytes(data[:at] + b"zzzz" + data[at + 4:])
    return path


def pillow_gif(durations_ms: list[int]) -> Callable[[Path], Path]:
    """A GIF as Pillow writes it, one frame per duration (a single one: a still GIF)."""

    def make(path: Path) -> Path:
        frames = [Image.fromarray(noise(32, 40, 3)[:, ::-1] if k % 2 else noise(32, 40, 3))
                  for k in range(len(durations_ms))]
        frames[0].save(path, save_all=len(frames) > 1, append_images=frames[1:], loop=0,
                       duration=durations_ms if len(frames) > 1 else durations_ms[0])
        return path

    return make


# --- The media catalogue -----------------------------------------------------------------------

CANNOT_DECODE = r"cannot decode"


@dataclass(frozen=True)
class Media:
    """One kind of file. ``statuses``: expected status per extractor (``handcrafted``, ``audio``),
    or ``REJECTED``; ``reason``: regex every recorded error (or the manifest error) must match."""

    file: str
    make: Callable[[Path], Path]
    statuses: tuple[int, int] | str
    reason: str = ""
    needs: tuple[str, ...] = ()  # encoders (``name`` or ``name/pix_fmt``) PyAV must have, else skipped
    check: Callable[[FeatureBank, int], None] | None = field(default=None, compare=False)


def dims_are(width: int, height: int, is_image: int = 0) -> Callable[[FeatureBank, int], None]:
    def check(bank: FeatureBank, row: int) -> None:
        got = [int(bank.items[k][row]) for k in ("width", "height", "is_image")]
        assert got == [width, height, is_image]

    return check


def brightness_near(value: float) -> Callable[[FeatureBank, int], None]:
    """A 0..65535 ramp must come out mid-grey, not clipped to white by ``convert('RGB')``."""

    def check(bank: FeatureBank, row: int) -> None:
        ex = extractors.create("handcrafted")
        pooled, _ = bank.pooled(ex.key, np.array([row]))
        assert pooled[0, ex.pooled_names().index("brightness_mean_mean")] == pytest.approx(value, abs=0.05)

    return check


def same_row_as(other: str) -> Callable[[FeatureBank, int], None]:
    def check(bank: FeatureBank, row: int) -> None:
        assert row == _ROWS[other], "identical content must share one bank row"

    return check


F, A = FAILED, ABSENT
MEDIA = [
    # not a video at all (zero-byte and text are also in test_extract.py / test_cli.py, at the
    # extract_item and CLI level; here they are part of the one-run catalogue)
    Media("zero_byte.mp4", write_bytes(b""), (F, F), r"empty file \(0 bytes\)"),
    Media("random_bytes.mp4", write_bytes(np.random.default_rng(1).bytes(4000)), (F, F),
          CANNOT_DECODE),
    Media("text.mp4", write_bytes(b"video_id,path\nthis is a CSV, not a video\n" * 40), (F, F),
          CANNOT_DECODE),
    Media("page.mp4", write_bytes(b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n" * 30),
          (F, F), CANNOT_DECODE),
    # damaged MP4s
    Media("truncated_half.mp4", truncated(fraction=0.5), (F, F), CANNOT_DECODE),
    Media("truncated_1kb.mp4", truncated(n_bytes=1024), (F, F), CANNOT_DECODE),
    Media("truncated_faststart.mp4", truncated(fraction=0.6, faststart=True), (F, F), CANNOT_DECODE),
    # the index is intact, packets are garbage: the picture cannot be decoded, nor the sound.
    # decord's decoder thread reports the bad packet while the file is opened or while frames are
    # read, depending on timing, so the message is "cannot decode the video stream" or "...frames"
    Media("corrupt_mdat.mp4", overwrite_middle("mdat"), (F, F), r"cannot decode|decoding audio failed"),
    Media("corrupt_moov.mp4", overwrite_middle("moov"), (F, F), CANNOT_DECODE),
    # streams missing or minimal
    Media("audio_only.mp4", audio_only, (F, F), r"no video stream"),
    Media("no_audio.mp4", lambda p: good_video(p, audio=False, seed=8), (OK, A)),  # also test_extract.py
    Media("one_frame.mp4", lambda p: good_video(p, n=1, seed=9), (OK, OK)),  # also test_extract.py
    Media("two_frames.mp4", lambda p: good_video(p, n=2, seed=10), (OK, OK)),
    # decord turns it (as players do) but returns 4-"channel" frames for this size; the PyAV
    # fallback serves the same turned picture: OK, stored as 48 wide, 64 high
    Media("rotated_90.mp4", rotated, (OK, A), check=dims_are(48, 64)),
    # decord reports 20 frames at the average 16.7 fps; steps are placed by frame index, so a
    # "second" is approximate on VFR input, but every feature is finite: OK
    Media("variable_frame_rate.mp4", variable_frame_rate, (OK, A)),
    # 4K: decoded a bounded batch at a time (see test_extract.py::test_iter_steps...), handcrafted
    # area-downscales before its statistics; a few seconds, finite features: OK
    Media("uhd_3840x2160.mp4", uhd, (OK, A), check=dims_are(3840, 2160)),
    # 8x8: decord's frames are malformed at this width; PyAV serves them, and handcrafted then
    # names the size it needs. The soundtrack is unaffected.
    Media("tiny_8x8.mp4", lambda p: good_video(p, n=15, h=8, w=8, seed=11), (F, OK),
          r"at least 16 px, got 8x8"),
    # still images
    Media("odd_35x19.png", image(noise(19, 35, 3)), (OK, A), check=dims_are(35, 19, is_image=1)),
    Media("grey.png", image(noise(32, 32), "L"), (OK, A)),
    Media("rgba.png", image(noise(32, 32, 4), "RGBA"), (OK, A)),
    Media("grey_16bit.png", image(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)),
          (OK, A), check=brightness_near(0.5)),
    Media("cmyk.jpg", image(noise(32, 32, 3), convert="CMYK"), (OK, A)),
    Media("truncated.png", truncated_png, (F, F), r"not a readable image \(image file is truncated"),
    # PNG bytes under a video name: FFmpeg's probe finds an image, so it is served as one
    Media("png_bytes.mp4", png_bytes_as, (OK, A), check=dims_are(32, 24, is_image=1)),
    # names and links
    Media("vidéo ünï.mp4", lambda p: good_video(p, seed=12), (OK, OK)),
    Media("with spaces in name.mp4", lambda p: good_video(p, seed=13), (OK, OK)),
    Media("duplicate_of_good_a.mp4", copy_of("good_a.mp4"), (OK, OK), check=same_row_as("good_a.mp4")),
    Media("symlink_to_good_b.mp4", symlink_to("good_b.mp4"), (OK, OK), check=same_row_as("good_b.mp4")),
    Media("directory.mp4", directory, REJECTED, r"path is a directory, not a file at line\(s\) 3"),
    Media("dead_symlink.mp4", dead_symlink, REJECTED, r"broken symbolic link .*at line\(s\) 3"),
    # other containers
    Media("h264.mkv", lambda p: encode(p, moving_frames(15, seed=14), fmt="matroska"), (OK, A)),
    Media("vp9.webm", lambda p: encode(p, moving_frames(15, seed=15), fmt="webm", codec="libvpx-vp9",
                                       options={"deadline": "realtime", "cpu-used": "8"}),
          (OK, A), needs=("libvpx-vp9",)),
    # every codec of CODECS: decoded (by the decoder that table names), full size, finite features
    *(Media(c.file, c.make, (OK, A), needs=(c.needs,), check=dims_are(32, 32)) for c in CODECS),
    Media("gif_variable_delays.gif", pillow_gif([40, 80, 200, 40, 40, 500]), (OK, A), check=dims_are(40, 32)),
    Media("gif_still.gif", pillow_gif([100]), (OK, A), check=dims_are(40, 32)),
    Media("unknown_codec.mp4", unknown_codec, (F, F),
          r"video codec is unknown to FFmpeg .*install a PyAV build .*or transcode"),
    # missing file, path escaping the root, NaN label, duplicate id: manifest errors, see MANIFESTS
]
GOOD = ["good_a.mp4", "good_b.mp4"]
_ROWS: dict[str, int] = {}  # file -> bank row, filled by the catalogue run


def encoder_available(need: str) -> bool:
    """Whether PyAV here can encode ``need``: an encoder name, or ``encoder/pixel_format``."""
    encoder, _, pix_fmt = need.partition("/")
    if encoder not in av.codecs_available:
        return False
    formats = av.Codec(encoder, "w").video_formats
    return not pix_fmt or formats is None or pix_fmt in {f.name for f in formats}


def available(case: Media | Codec) -> bool:
    needs = (case.needs,) if isinstance(case, Codec) else case.needs
    return all(encoder_available(need) for need in needs)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """ONE manifest holding every extractable case plus two good videos, extracted once."""
    root = tmp_path_factory.mktemp("media")
    for i, name in enumerate(GOOD):
        good_video(root / name, seed=20 + i)
    cases = [c for c in MEDIA if c.statuses != REJECTED and available(c)]
    for case in cases:
        case.make(root / case.file)
    files = GOOD + [c.file for c in cases]
    manifest = root / "manifest.csv"
    pd.DataFrame({"video_id": [Path(f).stem for f in files], "path": files,
                  "overall": np.arange(len(files)) % 5 + 1.0}).to_csv(manifest, index=False)
    bank_path = root / "bank.zarr"
    report = extract_manifest(manifest, bank_path, ["handcrafted", "audio"], progress=False)
    bank = FeatureBank(bank_path, mode="r")
    rows = bank.rows_of([file_digest(root / f) for f in files])
    _ROWS.update(zip(files, rows.tolist()))
    return {"root": root, "manifest": manifest, "bank": bank_path, "report": report, "files": files}


KEYS = [extractors.create("handcrafted").key, extractors.create("audio").key]
DECORD_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\]|/github/workspace")  # decord's log prefixes


@pytest.mark.parametrize("case", MEDIA, ids=lambda case: case.file)
def test_media_case(case: Media, request, tmp_path):
    if not available(case):
        pytest.skip(f"PyAV here cannot encode {case.needs}")
    if case.statuses == REJECTED:
        case.make(tmp_path / case.file)
        (tmp_path / "good.mp4").write_bytes(b"x")  # existence is all the manifest checks
        manifest = tmp_path / "m.csv"
        pd.DataFrame({"video_id": ["good", "bad"], "path": ["good.mp4", case.file]}).to_csv(
            manifest, index=False)
        with pytest.raises(ManifestError, match=case.reason):
            load_manifest(manifest)
        with pytest.raises(ManifestError, match=case.reason):  # before any work is done
            extract_manifest(manifest, tmp_path / "bank.zarr", ["handcrafted"], progress=False)
        assert not (tmp_path / "bank.zarr").exists()
        return
    catalogue = request.getfixturevalue("catalogue")  # the one shared run, made on first use
    bank = FeatureBank(catalogue["bank"], mode="r")
    row = _ROWS[case.file]
    for key, expected in zip(KEYS, case.statuses):
        status = int(bank.status(key, np.array([row]))[0])
        failure = bank.failures(key).get(digest_hex(bank.digests()[row]))
        pooled, _ = bank.pooled(key, np.array([row]))
        assert status == expected, f"{key}: {failure}"
        if expected == FAILED:
            error = failure["error"]
            assert re.search(case.reason, error, re.IGNORECASE), error
            assert case.file in error or re.search(r"\d+x\d+", error), "names the file or the size"
            assert not DECORD_NOISE.search(error), error
        else:
            assert failure is None
            assert np.isfinite(pooled).all() if expected == OK else np.isnan(pooled).all()
    if case.check is not None:
        case.check(bank, row)


def test_catalogue_run_completes_and_keeps_every_good_item(catalogue):
    report, bank = catalogue["report"], FeatureBank(catalogue["bank"], mode="r")
    assert bank.validate() == []
    rows = np.array([_ROWS[f] for f in GOOD])
    for key in KEYS:
        pooled, status = bank.pooled(key, rows)
        assert (status == OK).all() and np.isfinite(pooled).all()
    n_failed = sum(int((bank.status(key) == FAILED).sum()) for key in KEYS)
    assert report.n_failed == n_failed > 0
    assert {vid for vid, _, _ in report.failures} <= {Path(f).stem for f in catalogue["files"]}
    assert all(report.counts[key]["pending"] == 0 for key in KEYS)


def test_rerun_recomputes_nothing_and_loses_nothing(catalogue):
    bank = FeatureBank(catalogue["bank"], mode="r")
    before = {key: (bank.status(key).copy(), bank.pooled(key, np.arange(bank.count))[0],
                    {k: v["error"] for k, v in bank.failures(key).items()}) for key in KEYS}
    report = extract_manifest(catalogue["manifest"], catalogue["bank"], ["handcrafted", "audio"],
                              progress=False)
    assert report.already_done == report.items == bank.count and report.n_failed == 0
    after = FeatureBank(catalogue["bank"], mode="r")
    assert after.validate() == []
    for key, (status, pooled, failures) in before.items():
        np.testing.assert_array_equal(after.status(key), status)
        np.testing.assert_array_equal(after.pooled(key, np.arange(after.count))[0], pooled)
        assert {k: v["error"] for k, v in after.failures(key).items()} == failures


def test_pyav_fallback_turns_frames_as_decord_does(tmp_path):
    """Where decord works on a rotated clip (96x64 turned), the fallback must give the same picture."""
    data = bytearray(encode(tmp_path / "r.mp4", moving_frames(6, 64, 96)).read_bytes())
    at = data.find(b"tkhd") + 44
    data[at:at + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    (tmp_path / "r.mp4").write_bytes(bytes(data))
    source = open_media(tmp_path / "r.mp4")
    assert source.decoder == "decord" and (source.info.width, source.info.height) == (64, 96)
    indices = np.array([0, 2, 5])
    decord_frames = source.frames(indices)
    pyav_frames = SequentialFrames(tmp_path / "r.mp4").get(indices)
    assert pyav_frames.shape == decord_frames.shape == (3, 96, 64, 3)
    assert np.abs(pyav_frames.astype(int) - decord_frames).max() <= 2


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.file)
def test_codec_is_routed_to_its_decoder_and_decoded_faithfully(codec: Codec, tmp_path):
    if not available(codec):
        pytest.skip(f"PyAV here cannot encode {codec.needs} (its FFmpeg lacks that encoder or pixel format)")
    source = open_media(codec.make(tmp_path / codec.file))
    assert (source.codec, source.decoder) == (codec.codec, codec.decoder)
    # GIF stores delays in whole centiseconds: 1/15 s becomes 6 or 7, an average of 16.7 fps
    assert (source.info.n_frames, source.info.fps) == (8, pytest.approx(FPS, rel=0.15))
    frames = source.frames(np.array([0, 3, 7]))
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    error = np.abs(frames.astype(int) - gradient_frames()[[0, 3, 7]]).mean()
    assert error < codec.tolerance, f"{codec.file}: mean error {error:.1f} levels against the source"


def test_decode_failures_name_the_codec_and_decoder(tmp_path):
    """A damaged AV1 file (routed to PyAV) fails like a damaged H.264 one does, naming its codec."""
    source = Codec("x.mkv", "libsvtav1", "yuv420p", "av1", "pyav")
    if not available(source):
        pytest.skip("PyAV here cannot encode AV1 (libsvtav1)")
    data = source.make(tmp_path / "x.mkv").read_bytes()
    path = tmp_path / "damaged_av1.mkv"
    path.write_bytes(data[:len(data) // 3] + np.random.default_rng(RNG_SEED).bytes(len(data) // 3))
    with pytest.raises(MediaError, match=r"damaged_av1.mkv: .*(av1 video stream|truncated)"):
        source = open_media(path)
        source.frames(np.arange(source.info.n_frames))


def test_unexpected_exceptions_fail_their_item_not_the_run(tmp_path, monkeypatch):
    """A decoder bug or MemoryError on one item is recorded with its traceback; the run goes on."""
    import featbank.extraction.item

    names = ["fine.mp4", "oom.mp4", "bug.mp4"]
    for i, name in enumerate(names):
        good_video(tmp_path / name, n=15, seed=30 + i)
    original_decode, original_open = VideoFile.decode, featbank.extraction.item.open_media

    def decode(self, indices, *args):
        if self.path.name == "oom.mp4":
            raise MemoryError("cannot allocate 3.2 GiB")
        return original_decode(self, indices, *args)

    def open_media_with_bug(path):
        if path.name == "bug.mp4":
            raise ValueError("a decoder bug")
        return original_open(path)

    monkeypatch.setattr(VideoFile, "decode", decode)
    monkeypatch.setattr(featbank.extraction.item, "open_media", open_media_with_bug)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"video_id": [Path(n).stem for n in names], "path": names}).to_csv(manifest, index=False)
    report = extract_manifest(manifest, tmp_path / "bank.zarr", ["handcrafted", "audio"], progress=False)
    errors = {(vid, key.split("@")[0]): error.splitlines()[0] for vid, key, error in report.failures}
    assert set(errors) == {("oom", "handcrafted"), ("bug", "handcrafted"), ("bug", "audio")}
    assert "unexpected error while decoding frames: MemoryError" in errors["oom", "handcrafted"]
    assert "unexpected error while opening: ValueError('a decoder bug')" in errors["bug", "audio"]
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    assert bank.validate() == [] and report.counts[KEYS[1]]["ok"] == 2  # oom's sound is fine


# --- The manifest catalogue --------------------------------------------------------------------
# Already covered elsewhere (so not repeated here), listed to keep the whole count in one place:
#   duplicate video_id; non-numeric label ("bad", "good" alike); NaN label; missing file; "../" path escaping
#   the root; absolute path; both required columns missing; manifest file absent; unreadable
#   Parquet  -> tests/test_manifest.py
#   NaN label, duplicate id, escaping path, missing file through `featbank extract` (exit code 2,
#   nothing written) -> tests/test_cli.py::test_malformed_manifest_exits_2_before_any_work
#   a directory or a dead symlink as the path -> MEDIA above (REJECTED)

HEADER = "video_id,path,overall\n"

MANIFESTS = [
    ("empty_file", "", r"is empty: expected a header line"),
    ("blank_lines_only", "  \n\n", r"is empty"),
    ("header_only", HEADER, r"manifest has no items"),
    ("no_video_id_column", "path,overall\na.mp4,1\n",
     r"missing required column\(s\): video_id \(columns found: 'path', 'overall'\)"),
    ("no_path_column", "video_id,overall\na,1\n", r"missing required column\(s\): path"),
    ("path_column_with_space", "video_id, path ,overall\na,a.mp4,1\n",
     r"missing required column\(s\): path \(columns found: .*' path '"),
    ("inf_label", HEADER + "a,a.mp4,1\nb,b.mp4,inf\n",
     r"label 'overall' is infinite \(not finite\) at line\(s\) 3"),
    ("minus_inf_label", HEADER + "a,a.mp4,-inf\nb,b.mp4,2\n", r"infinite \(not finite\) at line\(s\) 2"),
    ("empty_path", HEADER + "a,,1\nb,b.mp4,2\n", r"empty path at line\(s\) 2"),
    ("empty_video_id", HEADER + "a,a.mp4,1\n,b.mp4,2\n", r"empty video_id at line\(s\) 3"),
    ("empty_label_column", "video_id,path,overall,blur\na,a.mp4,1,\nb,b.mp4,2,\n",
     r"label column 'blur' is entirely empty.*meta_blur"),
    ("binary_garbage", np.random.default_rng(0).bytes(3000), r"cannot read manifest"),
    ("parquet_without_path", pd.DataFrame({"video_id": ["a"], "overall": [1.0]}),
     r"missing required column\(s\): path"),
]


@pytest.mark.parametrize("name, content, message", MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_manifest_case(name, content, message, tmp_path):
    for f in ("a.mp4", "b.mp4"):
        (tmp_path / f).write_bytes(b"x")
    if isinstance(content, pd.DataFrame):
        path = tmp_path / f"{name}.parquet"
        content.to_parquet(path)
    else:
        path = tmp_path / f"{name}.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(path)
    assert str(path) in str(err.value)


def test_catalogue_counts():
    """Issue #13 asks for 50+ kinds of bad input in all; keep the tables honest about it."""
    assert len(MEDIA) + len(MANIFESTS) >= 50 and len(MANIFESTS) >= 10
    assert len({c.file for c in MEDIA}) == len(MEDIA) and not (set(GOOD) & {c.file for c in MEDIA})
