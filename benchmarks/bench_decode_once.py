"""Decode once for K extractors vs K separate decodes, and what decoding alone costs.

``--extractors`` picks the K (default: the CPU ones; deep ones run with random weights, on
``--device``). Three ways over the same synthesized 360p clips, timed side by side in one process, repeated, and
summarised by the median:
  (a) decode-only: iterate every frame the extractors' plans need, run nothing;
  (b) one pass:    extract_item with all CPU extractors together (featbank's path);
  (c) K passes:    extract_item once per extractor (what per-extractor scripts do).
Reported: medians, (c)/(b) — the saving of decoding once — and (a)/(b) — the decoder's share.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

import extractors
from featbank.extraction.decode import iter_steps, open_media
from featbank.demo.data import synthesize
from featbank.extraction.item import extract_item
from featbank.extraction.weights import WeightsPolicy


def _decode_only(paths: list[Path], exs: list) -> None:
    for path in paths:
        src = open_media(path)
        plans = [e.sampling.plan(src.info) for e in exs if e.sampling.modality == "video"]
        for _ in iter_steps(src, plans):
            pass
        src.audio(16000)


def _one_pass(paths: list[Path], exs: list) -> None:
    for path in paths:
        extract_item(path, exs)


def _k_passes(paths: list[Path], exs: list) -> None:
    for ex in exs:
        for path in paths:
            extract_item(path, [ex])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks decode_once")
    ap.add_argument("--extractors", default="handcrafted,audio")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clips", type=int, default=6)
    args = ap.parse_args(argv if argv is not None else [])
    specs = [s for s in args.extractors.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthesize(Path(tmp), n_sources=args.clips, variants=1, seconds=4.0, size=(360, 640),
                              fps=30)
        paths = [Path(tmp) / p for p in pd.read_csv(manifest)["path"]]
        exs = [extractors.create(s) for s in specs]
        for ex in exs:
            ex.setup(args.device, WeightsPolicy(random=True))
        _one_pass(paths[:1], exs)  # warm-up
        ways = {"decode-only": _decode_only, "one pass": _one_pass, "K passes": _k_passes}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, fn in ways.items():  # interleaved, so machine noise hits all three alike
                t0 = time.perf_counter()
                fn(paths, exs)
                times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    n = len(paths)
    print(f"decode_once: {n} clips of 4 s at 640x360/30 fps, extractors {', '.join(specs)} on "
          f"{args.device}, median of {args.repeats}")
    for name, m in med.items():
        print(f"  {name:12s} {m:7.3f} s   {n / m:6.2f} videos/s")
    print(f"  ratio K passes / one pass:     {med['K passes'] / med['one pass']:.2f}x")
    print(f"  ratio decode-only / one pass:  {med['decode-only'] / med['one pass']:.2f}")
