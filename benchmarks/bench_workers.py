"""Extraction throughput: in one process vs a LocalCluster of 1 and of 2 dask workers.

The same synthesized clips are extracted (``handcrafted`` + ``audio``) into a fresh bank by each
way, interleaved and repeated, and the medians compared. The clusters are started once, before
timing, so the numbers are steady-state throughput; cluster start-up is timed separately. Work is
split by bank chunk (32 items), so the set holds several chunks for two workers to share.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dask.distributed import LocalCluster

from featbank.demo.data import synthesize
from featbank.extraction.distributed import extract_distributed
from featbank.extraction.orchestrate import extract_manifest

SPECS = ["handcrafted", "audio"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench workers")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--variants", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = synthesize(root / "data", n_sources=args.sources, variants=args.variants, seconds=3.0)
        n = args.sources * args.variants
        startup: dict[int, float] = {}
        clusters = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            clusters[workers] = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None)
            startup[workers] = time.perf_counter() - t0
        ways = {
            "in-process": lambda bank: extract_manifest(manifest, bank, SPECS, progress=False),
            "1 worker": lambda bank: extract_distributed(manifest, bank, SPECS, progress=False,
                                                         scheduler=clusters[1].scheduler_address),
            "2 workers": lambda bank: extract_distributed(manifest, bank, SPECS, progress=False,
                                                          scheduler=clusters[2].scheduler_address),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        try:
            for repeat in range(args.repeats):
                for name, run in ways.items():  # interleaved: machine noise hits every way alike
                    bank = root / f"{name.replace(' ', '_')}-{repeat}.zarr"
                    t0 = time.perf_counter()
                    run(bank)
                    times[name].append(time.perf_counter() - t0)
        finally:
            for cluster in clusters.values():
                cluster.close()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"workers: {n} clips of 3 s at 192x144/15 fps, extractors {', '.join(SPECS)}, "
          f"median of {args.repeats} (clusters started before timing)")
    for name, m in med.items():
        print(f"  {name:11s} {m:7.2f} s   {n / m:6.2f} videos/s")
    print(f"  ratio 2 workers / 1 worker (throughput):  {med['1 worker'] / med['2 workers']:.2f}x")
    print(f"  ratio 1 worker / in-process (throughput): {med['in-process'] / med['1 worker']:.2f}x")
    print(f"  cluster start-up: 1 worker {startup[1]:.1f} s, 2 workers {startup[2]:.1f} s")
