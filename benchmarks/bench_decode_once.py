"""Decoding at the floor, and decode once for K extractors vs K separate decodes.

Clips: ``--clips`` synthesized H.264 videos per ``--sizes`` (960x540 and 1920x1080 by default), 10 s
at 30 fps with an AAC track, a drifting texture under a moving gradient, encoded once by PyAV's
libx264 (``veryfast``, crf 23: B-frames, CABAC, a key frame every 250 frames, as x264 defaults)
and kept in ``--cache`` for the next run. Every way below runs over the same clips, interleaved and
repeated, and is summarised by its median:

  floor candidates, the same video frames the extractors' plans need, each as fast as it goes:
    PyAV threaded, every frame     ``thread_type="AUTO"`` pass up to the last wanted frame, nothing converted
    PyAV threaded, wanted to RGB   the same pass, wanted frames converted to RGB
    decord, wanted frames          ``get_batch`` of the wanted frames (seeking), RGB: featbank's
                                   reader until the per-file choice, so also the "before" row
  featbank decode-only             ``iter_steps`` with the extractors' plans and pixel requests
  featbank decode-only + audio     the same plus the soundtrack at 16 kHz
  one pass                         ``extract_item`` with all extractors together (featbank's path)
  K passes                         ``extract_item`` once per extractor (what per-extractor scripts do)

Ratios printed: decode-only / fastest floor candidate (goal <= 1.2), one pass / decode-only + audio
(goal <= 1.3) and K passes / one pass (the saving of decoding once; K video extractors would need
>= 0.8 K, which only K *video* extractors can reach: an audio extractor shares no video decode).
Minor page faults of one pass per clip are printed too (``ru_minflt``, in-process). Every way runs
with BLAS held at one thread, as ``featbank extract`` runs each item (``process_chunk``): a threaded
BLAS spends many times the CPU on the extractors' small matrix products on a busy 2-core machine
(the audio extractor's gammatone product took 0.8 s under cProfile for two 540p clips, against
too little to list on one thread), which would measure a path featbank does not take.

A last section checks the reader choice (:meth:`VideoFile.choose_reader`) on a sparse plan (one
key frame per second): on the first clip above (x264's own key frames, at most 250 frames apart)
and on a 540p clip with a key frame every second, where seeking wins; it prints what was chosen and
both times. Their per-frame CPU is what :data:`DECORD_FRAME_COST` weighs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

import extractors
from featbank.extraction.decode import STEP_BUFFERS, VideoFile, iter_steps, open_media
from featbank.extraction.item import extract_item
from featbank.extraction.orchestrate import single_threaded_blas
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsPolicy

SIZES = {"540": (960, 540), "1080": (1920, 1080)}
FPS = 30


def synthesize_clip(path: Path, width: int, height: int, seconds: float, seed: int, gop: int = 250) -> Path:
    """An H.264 + AAC clip: drifting 4x4-pixel noise texture under a moving colour gradient."""
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 4 + 64, width // 4 + 64, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    ramp = (np.arange(width) % 256).astype(np.uint8)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23", "g": str(gop)}
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
        for i in range(round(seconds * FPS)):
            image = texture[(2 * i) % 256:(2 * i) % 256 + height, (3 * i) % 256:(3 * i) % 256 + width].copy()
            image[..., 0] = image[..., 0] // 2 + np.roll(ramp, 5 * i)[None, :] // 2
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        t = np.arange(int(seconds * 48000)) / 48000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        for start in range(0, t.size, 1024):
            frame = av.AudioFrame.from_ndarray(np.stack([tone[start:start + 1024]] * 2), format="fltp",
                                               layout="stereo")
            frame.sample_rate = 48000
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    partial.rename(path)
    return path


def wanted_frames(path: Path, exs: list) -> np.ndarray:
    info = open_media(path).info
    plans = [e.sampling.plan(info).frame_indices.ravel() for e in exs if e.sampling.modality == "video"]
    return np.unique(np.concatenate(plans)) if plans else np.zeros(0, np.int64)


def pyav_pass(path: Path, wanted: np.ndarray, to_rgb: bool) -> None:
    last, keep = int(wanted[-1]), set(wanted.tolist())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if to_rgb and index in keep:
                frame.to_ndarray(format="rgb24")
            if index == last:
                break


def decord_frames(path: Path, wanted: np.ndarray) -> None:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    for start in range(0, len(wanted), 16):
        reader.get_batch(wanted[start:start + 16].tolist()).asnumpy()


def featbank_decode(path: Path, exs: list, audio: bool) -> None:
    source = open_media(path)
    video = [e for e in exs if e.sampling.modality == "video"]
    plans, pixels = [e.sampling.plan(source.info) for e in video], [e.pixels for e in video]
    for _ in iter_steps(source, plans, pixels, pool=STEP_BUFFERS):
        pass
    if audio:
        source.audio(16000)


def timed(ways: dict[str, Callable[[], None]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds (all threads of this process) of each way, run interleaved so
    machine noise hits all alike. CPU time is the steadier of the two on a shared machine."""
    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: statistics.median(ts) for name, ts in wall.items()},
            {name: statistics.median(ts) for name, ts in cpu.items()})


def bench_size(label: str, paths: list[Path], exs: list, repeats: int) -> None:
    wanted = {p: wanted_frames(p, exs) for p in paths}
    each = lambda fn: (lambda: [fn(p) for p in paths])
    floor = {
        "PyAV threaded, every frame": each(lambda p: pyav_pass(p, wanted[p], to_rgb=False)),
        "PyAV threaded, wanted to RGB": each(lambda p: pyav_pass(p, wanted[p], to_rgb=True)),
        "decord, wanted frames": each(lambda p: decord_frames(p, wanted[p])),
    }
    ways = {
        **floor,
        "featbank decode-only": each(lambda p: featbank_decode(p, exs, audio=False)),
        "featbank decode-only + audio": each(lambda p: featbank_decode(p, exs, audio=True)),
        "one pass": each(lambda p: extract_item(p, exs)),
        "K passes": each(lambda p: [extract_item(p, [e]) for e in exs]),
    }
    with single_threaded_blas():  # as ``extract`` runs every item (process_chunk)
        extract_item(paths[0], exs)  # warm-up: imports, filter designs, buffer pool
        med, cpu = timed(ways, repeats)
        faults = []
        for path in paths:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            extract_item(path, exs)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    width, height = SIZES[label]
    print(f"\n{len(paths)} clips {width}x{height}, 10 s at {FPS} fps, {len(wanted[paths[0]])} of "
          f"{10 * FPS} frames wanted per clip; median of {repeats}, seconds for all clips")
    print(f"  {'':30s} {'wall':>8s} {'CPU':>8s} {'videos/s':>9s}")
    for name, m in med.items():
        print(f"  {name:30s} {m:8.3f} {cpu[name]:8.3f} {len(paths) / m:9.2f}")
    for kind, t in (("wall", med), ("CPU", cpu)):
        fastest = min(floor, key=t.get)
        print(f"  {kind}: featbank decode-only / fastest floor ({fastest}): "
              f"{t['featbank decode-only'] / t[fastest]:.2f} (goal <= 1.2); one pass / decode-only + audio: "
              f"{t['one pass'] / t['featbank decode-only + audio']:.2f} (goal <= 1.3); K passes / one pass: "
              f"{t['K passes'] / t['one pass']:.2f} (K = {len(exs)})")
    print(f"  minor page faults per clip, one pass: {int(statistics.median(faults))}")


def bench_reader_choice(paths: list[Path], cache: Path, repeats: int) -> None:
    """Sparse plan (one key frame per second): the chooser's pick against both readers' times."""
    clips = {"x264 key frames": paths[0],
             "1 key frame/s": synthesize_clip(cache / "540_gop30.mp4", *SIZES["540"], 10.0, seed=99, gop=30)}
    print("\nreader choice on KeyFrames (10 frames of 300), median of", repeats)
    for label, path in clips.items():
        source = open_media(path)
        assert isinstance(source, VideoFile)
        wanted = KeyFrames().plan(source.info).frame_indices.ravel()
        med, cpu = timed({"pyav": lambda p=path, w=wanted: pyav_pass(p, w, to_rgb=True),
                          "decord": lambda p=path, w=wanted: decord_frames(p, w)}, repeats)
        print(f"  {label:15s} chose {source.choose_reader(wanted):6s}  PyAV pass {med['pyav']:.3f} s "
              f"(CPU {cpu['pyav']:.3f}), decord seeking {med['decord']:.3f} s (CPU {cpu['decord']:.3f}); "
              f"decord's seek cost {source.seek_cost(wanted)} frames of {int(wanted[-1]) + 1}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks decode_once")
    ap.add_argument("--extractors", default="handcrafted,audio")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="540,1080", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--clips", type=int, default=2, help="clips per size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "featbank" / "bench_clips", help="where synthesized clips are kept between runs")
    args = ap.parse_args(argv if argv is not None else [])
    specs = [s for s in args.extractors.split(",") if s]
    exs = [extractors.create(s) for s in specs]
    for ex in exs:
        ex.setup(args.device, WeightsPolicy(random=True))
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"decode_once: extractors {', '.join(specs)} on {args.device}; clips in {args.cache}")
    first: list[Path] = []
    for label in args.sizes.split(","):
        width, height = SIZES[label]
        paths = [synthesize_clip(args.cache / f"{label}_{i}.mp4", width, height, 10.0, seed=i)
                 for i in range(args.clips)]
        first = first or paths
        bench_size(label, paths, exs, args.repeats)
    bench_reader_choice(first, args.cache, args.repeats)
