"""Deep extractors: throughput model-only vs end to end, reduced precision's error, decoders per GPU.

For each extractor, over the same synthesized clips (random weights: speed does not depend on the
values), timed side by side and summarised by the median of ``--repeats``:
  model-only   ``forward`` on batches of already-decoded steps (what the network alone sustains);
  end to end   ``extract_item`` per video: decode, sample, resize on the device, forward, pool.
Their ratio says how much of the network's speed survives decoding. On CUDA it also reports how far
the extractor's reduced precision moves the features from fp32 (worst relative L2 error and lowest
cosine over the steps), and with ``--gpu-workers 1,4`` the end-to-end rate of a dask run with that
many decoding worker processes sharing each GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import extractors
from featbank.extraction.decode import iter_steps, open_media
from featbank.demo.data import synthesize
from featbank.extraction.item import extract_item
from featbank.extraction.weights import WeightsPolicy

RANDOM = WeightsPolicy(random=True)
PROMPT = "a red car driving along a wet coastal road at dusk"  # for text-reading extractors (clip:prompt)


def texts_for(ex) -> dict[str, str]:
    return {ex.text_column: PROMPT} if ex.text_column else {}


def decoded_batches(paths: list[Path], ex) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every step of every clip, decoded once and cut into the extractor's batches (with their
    step indices, which ``forward_item`` takes)."""
    steps = []
    for path in paths:
        src = open_media(path)
        steps += [(step, frames) for _, step, frames in iter_steps(src, [ex.sampling.plan(src.info)])]
    b = ex.batch_size
    return [(np.stack([f for _, f in steps[i:i + b]]), np.array([s for s, _ in steps[i:i + b]]))
            for i in range(0, len(steps), b)]


def run_model(ex, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    text = PROMPT if ex.text_column else None
    return np.concatenate([ex.forward_item(frames, steps, text) for frames, steps in batches])


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: cuDNN autotuning, lazy allocations, first-call compilation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def precision_error(ex, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Worst relative L2 error and lowest cosine of reduced-precision features against fp32."""
    reduced = run_model(ex, batches)
    os.environ["FEATBANK_PRECISION"] = "fp32"
    try:
        full = run_model(ex, batches)
    finally:
        del os.environ["FEATBANK_PRECISION"]
    rel = np.linalg.norm(reduced - full, axis=1) / np.maximum(np.linalg.norm(full, axis=1), 1e-12)
    cos = (reduced * full).sum(1) / np.maximum(np.linalg.norm(reduced, axis=1) * np.linalg.norm(full, axis=1), 1e-12)
    return float(rel.max()), float(cos.min())


def distinct_copies(paths: list[Path], n: int, out_dir: Path) -> Path:
    """A manifest of ``n`` files remuxed (no re-encode) from ``paths`` with a distinct title each:
    the bank keys items by content, so plain copies would collapse into one row, and encoding
    hundreds of clips would take longer than the benchmark."""
    import av

    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        target = out_dir / f"copy{i:04d}.mp4"
        with av.open(str(paths[i % len(paths)])) as src, av.open(str(target), "w") as dst:
            dst.metadata["title"] = f"featbank benchmark copy {i}"
            streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
            for packet in src.demux():
                if packet.stream.index in streams and packet.dts is not None:
                    packet.stream = streams[packet.stream.index]
                    dst.mux(packet)
        names.append(target.name)
    manifest = out_dir / "manifest.csv"
    pd.DataFrame({"video_id": [f"copy{i}" for i in range(n)], "path": names}).to_csv(manifest, index=False)
    return manifest


def gpu_workers_rate(manifest: Path, spec: str, workers: int, tmp: Path) -> float:
    from featbank.extraction.distributed import extract_distributed

    bank = tmp / f"bank-{spec.replace(':', '_')}-{workers}.zarr"
    t0 = time.perf_counter()
    report = extract_distributed(manifest, bank, [spec], workers=workers, device="cuda", weights=RANDOM,
                                 progress=False)
    return report.items / (time.perf_counter() - t0)


def bench_one(spec: str, args: argparse.Namespace, paths: list[Path], many: Path | None, tmp: Path) -> None:
    """One extractor's line (and precision / GPU-worker lines); its model is freed on return."""
    ex = extractors.create(spec)
    ex.setup(args.device, RANDOM)
    batches = decoded_batches(paths, ex)
    n_steps = sum(len(steps) for _, steps in batches)
    model = timed(lambda: run_model(ex, batches), args.repeats)
    e2e = timed(lambda: [extract_item(p, [ex], texts_for(ex)) for p in paths], args.repeats)
    print(f"  {spec:28s} {n_steps:5d} {n_steps / model:14.2f} {n_steps / e2e:12.2f} "
          f"{len(paths) / e2e:13.3f} {model / e2e:10.2f}")
    if args.device.startswith("cuda") and ex.precision != "fp32":
        rel, cos = precision_error(ex, batches)
        print(f"    {ex.precision} vs fp32: worst relative L2 error {rel:.2e}, lowest cosine {cos:.6f}")
    for n in [int(v) for v in args.gpu_workers.split(",") if v]:
        rate = gpu_workers_rate(many, spec, n, tmp)
        print(f"    dask, {n} decoding worker(s) sharing the GPU, {args.gpu_videos} clips: "
              f"{rate:.3f} videos/s (cluster start and model loads included)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks deep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", default="timm:resnet50,clip,liqe,slowfast,fastvqa")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", default="540x960", help="HxW of the synthesized clips")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu-workers", default="", help="e.g. 1,4: dask workers sharing the GPU (cuda only)")
    ap.add_argument("--gpu-videos", type=int, default=128,
                    help="clips for --gpu-workers (remuxed copies of the clips above); a task is one "
                         "32-row bank chunk, so N workers need at least 32N clips to all have work")
    args = ap.parse_args(argv if argv is not None else [])
    h, w = (int(v) for v in args.size.split("x"))
    specs = [s for s in args.extractors.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = synthesize(tmp, n_sources=args.videos, variants=1, seconds=args.seconds, size=(h, w),
                              fps=30, seed=0)
        paths = [tmp / p for p in pd.read_csv(manifest)["path"]]
        many = distinct_copies(paths, args.gpu_videos, tmp / "many") if args.gpu_workers else None
        print(f"deep: {len(paths)} clips of {args.seconds:g} s at {w}x{h}/30 fps on {args.device}, "
              f"median of {args.repeats} (random weights)")
        print(f"  {'extractor':28s} {'steps':>5s} {'model steps/s':>14s} {'e2e steps/s':>12s} "
              f"{'e2e videos/s':>13s} {'e2e/model':>10s}")
        for spec in specs:
            bench_one(spec, args, paths, many, tmp)
