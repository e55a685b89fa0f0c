"""In this process or on a dask cluster: the way an ``extract`` run goes, picked by its work.

A LocalCluster has a fixed price: worker interpreters start and import dask, featbank and every
extractor module, each worker sets up its extractors (weights included) and warms up (JIT,
caches) before its first item, and the workers must exit at the end. Spreading the work only
pays when it is large against that price: on 2 cores, 48 short clips took 50-53 s on a cluster
against 24-27 s in one process. So a run without ``--workers`` or ``--scheduler`` measures its
work first and starts a cluster only when the estimate says it is clearly faster.

How the work is measured: the first :data:`PROBE_ITEMS` pending items are extracted here and
committed like any rows (nothing is computed twice, whatever is picked afterwards). The last of
them times one warm item on this machine, with these files and these extractors; the first one's
extra time is the warm-up each worker repeats; the client's own extractor set-up time
(:attr:`~featbank.extraction.orchestrate.ExtractionPlan.setup_s`) is the set-up each worker
repeats. :func:`choose_workers` turns that into estimates for both ways (a pure function); the
numbers behind its constants come from ``bench workers``, which prints in-process and cluster
times side by side over item counts, with the way this chooser picked.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from featbank.extraction.orchestrate import (Chunks, ExtractionPlan, ExtractReport, extraction_session,
                                             progress_bar, run_here)
from featbank.extraction.weights import WeightsPolicy

PROBE_ITEMS = 2
"""Items timed in this process before choosing: the first carries the warm-up, the last is warm."""

CLUSTER_FIXED_S = 15.0
"""Seconds a LocalCluster costs beyond the extractors' own set-up: starting worker interpreters,
importing dask, zarr and featbank in them (all workers at once, competing for the cores), the
first task's round trip, and the workers' exit (an interpreter that ran librosa takes 1-2 s to
finalise). On the 2-core VM ``bench workers`` measured start + first task + close at 5.6-15.6 s
depending on the machine's load, and cold ``featbank extract`` runs of 48 short clips took 30 s
longer on 2 workers than in one process, of which about 10 s is the extractors' set-up on the
workers: the conservative end is taken, as a wrong "in this process" costs at most the missed
speed-up while a wrong "cluster" made runs twice as slow."""

WORKER_SLOWDOWN = 1.3
"""A warm item on a worker against one in this process (the task runs beside the worker's event
loop, per-chunk bank I/O on the worker, results and progress sent back, the scheduler sharing the
cores). ``bench workers`` measured 1.34x and 1.66x on the loaded 2-core VM (1.0-1.2x in quieter
interleaved runs)."""

MIN_GAIN = 1.25
"""A cluster is started only when estimated at least this much faster: the in-process way is the
simpler one (one process to interrupt, no start-up to fail), and the estimates are rough."""


@dataclass(frozen=True)
class WorkCosts:
    """What one item costs, as measured by the probe."""

    item_s: float
    """One warm item in this process."""
    warmup_s: float = 0.0
    """Extra time of a process's first item (JIT compilation, caches), paid once per worker."""
    setup_s: float = 0.0
    """Building and setting up the extractors (module imports, weights), paid once per worker."""


@dataclass(frozen=True)
class Choice:
    """The way picked for the remaining work, with the estimates it was picked on."""

    workers: int
    """0: in this process; otherwise the size of the LocalCluster to start."""
    here_s: float
    """Estimated seconds in this process."""
    cluster_s: float = math.inf
    """Estimated seconds on the best cluster considered (``inf`` when none was possible)."""
    cluster_workers: int = 0
    """Workers of that cluster."""

    def describe(self) -> str:
        if not self.cluster_workers:
            return f"in this process (estimated {self.here_s:.0f} s; too little work to spread)"
        here, there = f"{self.here_s:.0f} s here", f"{self.cluster_s:.0f} s on {self.cluster_workers} workers"
        if self.workers:
            return f"on {self.workers} local workers (estimated {there} against {here})"
        return f"in this process (estimated {here} against {there})"


def makespan(chunk_sizes: Sequence[int], workers: int) -> int:
    """Items on the busiest of ``workers`` when whole chunks go to whichever worker is free first
    (as the scheduler hands out tasks), largest chunks first."""
    loads = [0] * max(1, workers)
    for size in sorted(chunk_sizes, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + size)
    return max(loads)


def choose_workers(chunk_sizes: Sequence[int], costs: WorkCosts, slots: int) -> Choice:
    """The way to run chunks of ``chunk_sizes`` items at ``costs`` on ``slots`` parallel slots
    (CPU cores, or GPUs): a LocalCluster of as many workers as estimated fastest, when that is at
    least :data:`MIN_GAIN` times faster than this process, else this process (``workers == 0``).

    A chunk is one task, so a cluster never has more useful workers than chunks; one worker only
    adds its start-up to the same sequential work.
    """
    here = sum(chunk_sizes) * costs.item_s
    best = Choice(workers=0, here_s=here)
    per_worker_start = CLUSTER_FIXED_S + costs.setup_s + costs.warmup_s
    for n in range(2, min(slots, len(chunk_sizes)) + 1):
        estimate = per_worker_start + makespan(chunk_sizes, n) * costs.item_s * WORKER_SLOWDOWN
        if estimate < best.cluster_s:
            best = Choice(workers=0, here_s=here, cluster_s=estimate, cluster_workers=n)
    if best.cluster_workers and best.cluster_s * MIN_GAIN <= here:
        return Choice(best.cluster_workers, here, best.cluster_s, best.cluster_workers)
    return best


def _probe(plan: ExtractionPlan, bar) -> tuple[WorkCosts, list[tuple[str, str, str]], Chunks]:
    """Extract and commit the first :data:`PROBE_ITEMS` pending items here; return what they cost,
    their failures and the work left.

    The probed rows are committed on their own, before any task is submitted, so the rest of their
    chunk can go to a worker without two writers on one chunk file. A probed item that fails at
    once (an unreadable file) makes the work look cheaper than it is: the run then stays in this
    process, the side a wrong guess costs least on."""
    first, work = next(iter(plan.chunks.items()))
    probed = sorted(work)[:PROBE_ITEMS]
    stamps = [time.perf_counter()]
    failures = run_here(plan, {first: {row: work[row] for row in probed}}, bar,
                        on_item=lambda: stamps.append(time.perf_counter()))
    took = [b - a for a, b in pairwise(stamps)]
    costs = WorkCosts(item_s=took[-1], warmup_s=max(0.0, took[0] - took[-1]), setup_s=plan.setup_s)
    rest = {chunk: {row: exs for row, exs in rows.items() if chunk != first or row not in probed}
            for chunk, rows in plan.chunks.items()}
    return costs, failures, {chunk: rows for chunk, rows in rest.items() if rows}


def uses_gpu(device: str) -> bool:
    return device.startswith("cuda")


def default_workers(device: str) -> int:
    """Parallel slots of this machine: one per GPU for CUDA devices, otherwise one per CPU core
    this process may use."""
    if uses_gpu(device):
        import torch

        return max(1, torch.cuda.device_count())
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(usable))


def free_slots(device: str) -> int:
    """Parallel slots a new cluster could use now: the GPUs, or the cores not already busy with
    other work (the 1-minute load average, less this process's own share), at least 1.

    On a machine other jobs keep busy, more workers add processes, not cores: on the 2-core VM at
    a load of 8-12, 64 clips of 24 s took 127 s on 2 workers against 89 s in one process."""
    slots = default_workers(device)
    if uses_gpu(device) or not hasattr(os, "getloadavg"):
        return slots
    busy_elsewhere = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, min(slots, math.floor(slots - busy_elsewhere + 0.5)))


def extract(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
            scheduler: str | None = None, workers: int | None = None, device: str = "cpu",
            weights: WeightsPolicy | None = None, retry_failed: bool = False, progress: bool = True,
            wait_lock: float = 0.0) -> ExtractReport:
    """Bring the bank up to date for the manifest's items and ``specs``, the way the work calls
    for: on the cluster at ``scheduler`` when one is named, on a LocalCluster of ``workers``
    processes when ``workers`` is positive, in this process when it is 0, and otherwise (``None``)
    in this process unless :func:`choose_workers` finds that a LocalCluster pays. The report's
    ``mode`` says which way ran and why. dask is imported only when a cluster is used."""
    weights = weights or WeightsPolicy()
    with extraction_session(manifest_path, bank_path, specs, device, weights, retry_failed, wait_lock) as plan:
        if not plan.chunks:
            return plan.report([], "nothing to do")
        with progress_bar(plan.n_items, progress) as bar:
            if scheduler or workers:
                mode = f"on the cluster at {scheduler}" if scheduler else \
                       f"on {min(workers, len(plan.chunks))} local workers (--workers {workers})"
                return plan.report(_on_cluster(plan, plan.chunks, scheduler, workers, device, weights, bar), mode)
            slots = 0 if workers == 0 else free_slots(device)
            if slots < 2 or len(plan.chunks) < 2:
                reason = ("--workers 0" if workers == 0 else "one bank chunk of work" if slots >= 2 else
                          f"{slots} {'GPU' if uses_gpu(device) else 'free core'}")
                return plan.report(run_here(plan, plan.chunks, bar), f"in this process ({reason})")
            costs, failures, rest = _probe(plan, bar)
            choice = choose_workers([len(rows) for rows in rest.values()], costs, slots)
            if choice.workers:
                failures += _on_cluster(plan, rest, None, choice.workers, device, weights, bar)
            else:
                failures += run_here(plan, rest, bar)
            return plan.report(failures, choice.describe())


def _on_cluster(plan: ExtractionPlan, chunks: Chunks, scheduler: str | None, workers: int | None, device: str,
                weights: WeightsPolicy, bar) -> list[tuple[str, str, str]]:
    from featbank.extraction.distributed import run_on_cluster  # dask: only when a cluster runs

    return run_on_cluster(plan, chunks, scheduler, workers, device, weights, bar)


__all__ = ["Choice", "WorkCosts", "choose_workers", "default_workers", "extract", "free_slots", "makespan",
           "uses_gpu"]
