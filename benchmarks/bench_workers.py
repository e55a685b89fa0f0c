"""When does a dask cluster pay? In-process against a LocalCluster, over item counts, cold.

For each item count, the same synthesized clips (``handcrafted`` + ``audio``) are extracted into a
fresh bank three ways, each by the ``featbank extract`` command in a fresh process, exactly as a
user runs it (interpreter start, imports, cluster start-up and shutdown included): in one process
(``--workers 0``), on a LocalCluster (``--workers N``), and by default (no option: it times its
first items and picks, see :mod:`featbank.extraction.mode`). The table prints the times side by
side, the cluster's speed-up over in-process (the crossover is where it passes 1) and the way the
default picked, with its estimates.

Two more measurements give the chooser's constants: the cluster's fixed cost (start the workers,
run a first task that imports featbank's extraction code, close them) and, on warm workers, a
worker's time per item against this process's, with dask's default worker environment
(``MALLOC_TRIM_THRESHOLD_=65536``) and with featbank's (:data:`~featbank.extraction.distributed.WORKER_CONFIG`),
minor page faults included.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import pandas as pd
from dask.distributed import Client, LocalCluster

from featbank.demo.data import synthesize
from featbank.extraction.distributed import extract_distributed, local_cluster
from featbank.extraction.mode import CLUSTER_FIXED_S, WORKER_SLOWDOWN
from featbank.extraction.orchestrate import extract_manifest

SPECS = ["handcrafted", "audio"]


def _first_rows(manifest: Path, n: int) -> Path:
    """A manifest of the first ``n`` clips, beside the full one (so its relative paths hold)."""
    path = manifest.with_name(f"first_{n}.csv")
    pd.read_csv(manifest).head(n).to_csv(path, index=False)
    return path


def _timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def _cli_extract(manifest: Path, bank: Path, workers: int | None) -> str:
    """Run ``featbank extract`` in a fresh process; return the way it says it ran."""
    cmd = [str(Path(sys.executable).with_name("featbank")), "extract", "--manifest", str(manifest),
           "--extractor", ",".join(SPECS), "--bank", str(bank), "--no-progress"]
    done = subprocess.run(cmd + ([] if workers is None else ["--workers", str(workers)]),
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    if "still alive" in done.stderr:
        raise RuntimeError(f"a worker had to be killed at shutdown: {done.stderr[-2000:]}")
    return done.stdout.split(", ran ", 1)[1].splitlines()[0]


def _worker_import() -> float:
    """Runs on a worker: import what every extraction task needs, the first task's fixed cost."""
    start = time.perf_counter()
    import featbank.extraction.distributed  # noqa: F401  (its import is what is timed)

    return time.perf_counter() - start


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cluster_fixed_cost(workers: int) -> tuple[float, float, float]:
    """Seconds to start a LocalCluster, run the first (importing) task on every worker, close it."""
    start = time.perf_counter()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        started = time.perf_counter()
        client.run(_worker_import)
        ran = time.perf_counter()
    return started - start, ran - started, time.perf_counter() - ran


def warm_worker_items(manifest: Path, root: Path, n: int) -> dict[str, tuple[float, float]]:
    """Seconds and minor page faults per item, warm: in this process, on one worker started with
    dask's default environment, and on one started by :func:`local_cluster`."""
    out: dict[str, tuple[float, float]] = {}
    extract_manifest(manifest, root / "warm-here-0.zarr", SPECS, progress=False)  # imports, JIT, caches
    faults = _minor_faults()
    took, _ = _timed(lambda: extract_manifest(manifest, root / "warm-here.zarr", SPECS, progress=False))
    out["in this process"] = (took / n, (_minor_faults() - faults) / n)
    with local_cluster(1) as ours:  # first: a dask-default nanny leaks its variable into os.environ
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536}):
            dask_default = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
        with dask_default:
            for name, cluster in (("worker, dask default env", dask_default), ("worker, featbank env", ours)):
                def run(tag: str, address: str = cluster.scheduler_address) -> None:
                    extract_distributed(manifest, root / f"warm-{tag}.zarr", SPECS, scheduler=address, progress=False)

                with Client(cluster) as client:
                    run(f"{name}-0")
                    before = sum(client.run(_minor_faults).values())
                    took, _ = _timed(lambda tag=name: run(tag))
                    out[name] = (took / n, (sum(client.run(_minor_faults).values()) - before) / n)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench workers")
    parser.add_argument("--counts", default="8,48,128", help="item counts to compare, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="size of the cluster compared")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--size", default="144x192", help="HEIGHTxWIDTH of each clip (even numbers)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each way per count (median)")
    parser.add_argument("--warm-items", type=int, default=8, help="items of the warm per-item comparison")
    args = parser.parse_args(argv)
    counts = sorted(int(c) for c in args.counts.split(","))
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = math.ceil(max(counts) / 12)
        full = synthesize(root / "data", n_sources=sources, variants=math.ceil(max(counts) / sources),
                          seconds=args.seconds, size=(height, width))
        ways = {"here": 0, "cluster": args.workers, "default": None}
        rows = []
        for n in counts:
            manifest = _first_rows(full, n)
            times: dict[str, list[float]] = {way: [] for way in ways}
            picked = ""
            for repeat in range(args.repeats):
                for way, workers in ways.items():  # interleaved: machine noise hits every way alike
                    bank = root / f"{way}-{n}-{repeat}.zarr"
                    took, mode = _timed(lambda m=manifest, b=bank, w=workers: _cli_extract(m, b, w))
                    times[way].append(took)
                    picked = mode if way == "default" else picked
            med = {way: statistics.median(ts) for way, ts in times.items()}
            rows.append((n, med, picked))
        fixed = cluster_fixed_cost(args.workers)
        warm = warm_worker_items(_first_rows(full, min(args.warm_items, max(counts))), root,
                                 min(args.warm_items, max(counts)))
    print(f"workers: clips of {args.seconds:g} s at {width}x{height}, extractors {', '.join(SPECS)}; "
          f"cold runs (start-up and shutdown included), median of {args.repeats}")
    print(f"  {'items':>5s} {'in-process':>11s} {f'{args.workers} workers':>11s} {'speed-up':>9s} "
          f"{'default':>9s} {'default/best':>12s}  default picked")
    for n, med, picked in rows:
        best = min(med["here"], med["cluster"])
        print(f"  {n:5d} {med['here']:9.1f} s {med['cluster']:9.1f} s {med['here'] / med['cluster']:8.2f}x "
              f"{med['default']:7.1f} s {med['default'] / best:11.2f}x  {picked}")
    print(f"  cluster fixed cost, {args.workers} workers: start {fixed[0]:.1f} s + first task {fixed[1]:.1f} s "
          f"+ close {fixed[2]:.1f} s = {sum(fixed):.1f} s (chooser assumes {CLUSTER_FIXED_S:.1f} s)")
    here_s = warm["in this process"][0]
    print(f"  warm, per item ({min(args.warm_items, max(counts))} items):")
    for name, (seconds, faults) in warm.items():
        print(f"    {name:26s} {seconds:6.3f} s  {seconds / here_s:5.2f}x  {faults:9.0f} minor faults")
    print(f"  (chooser assumes a worker item costs {WORKER_SLOWDOWN:.2f}x one here)")
