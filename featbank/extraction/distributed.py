"""Extraction on a dask.distributed cluster: one task per bank chunk, each chunk one writer.

The client plans the run (:func:`featbank.extraction.orchestrate.extraction_session`: it alone registers rows,
resizes arrays and writes attributes), then submits one task per bank chunk that has missing work.
A task opens the bank on its worker, extracts its rows and commits them as whole chunks, status
last, exactly as a single-process run does, so the two produce identical banks. No two tasks share
a chunk, hence no two writers ever touch one chunk file.

Faults: a task whose worker dies is rescheduled by dask on another worker (up to
``distributed.scheduler.allowed-failures`` times); re-running a chunk rewrites the same values,
and its status is only written after its data, so nothing is lost or doubled. A killed client
leaves committed chunks in place; the next run computes what is still pending. An item that fails
is recorded in the bank like in a local run and never fails the task.

GPUs: with a CUDA device, a LocalCluster gets one single-threaded worker per GPU, each worker
declaring the resource ``GPU=1`` and using ``cuda:<worker index>``; tasks ask for ``GPU=1``, so
on an external cluster start GPU workers with ``--resources GPU=1`` (and CPU-only workers without
it for CPU extractors).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import dask
from dask.distributed import Client, LocalCluster, as_completed, get_worker

import extractors
from extractors.base import Extractor
from featbank.bank.store import FeatureBank
from featbank.errors import FeatbankError
from featbank.io.manifest import item_text, media_item
from featbank.extraction.mode import default_workers, extract, uses_gpu
from featbank.extraction.orchestrate import Chunks, ExtractionPlan, ExtractReport, process_chunk
from featbank.extraction.weights import WeightsPolicy

TASK_RETRIES = 2
"""Retries of a task that raised (an I/O error writing the bank, say); dead workers are handled by
the scheduler's own rescheduling, independently of this."""

WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""dask settings for the workers featbank starts.

dask's default starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory back
to the system sooner). Setting it turns off glibc's adaptive threshold, so every decoded frame
buffer above 64 KiB becomes a fresh ``mmap`` and is unmapped again when freed: inside a worker 4
clips of 960x540 took 12.6-15.0 s with 1.48M page faults, against 7.1 s and 54k faults in one
process. ``None`` drops the variable (``distributed.nanny`` skips ``None`` entries of
``pre-spawn-environ``); dask's other pre-spawn settings (one OpenMP/BLAS thread) stay. A value the
user exported in the environment still wins, as dask documents."""

WORKER_EXIT_S = 60.0
"""How long a worker may take to exit when a run is over, before its nanny kills it.

An interpreter that ran librosa and numba takes 1-2 s to finalise, more on a loaded machine;
dask's default (5 s, of which 4 s before killing) printed "Worker process still alive after 4.0
seconds, killing" after ordinary runs on 2 cores. Nothing is pending then, so waiting is safe."""

INTERRUPTED_EXIT_S = 1.0
"""How long a worker may take to stop when the run was interrupted (Ctrl-C, SIGTERM, an error):
its chunk is abandoned (committed chunks stay; the next run redoes the rest), so it is stopped at
once rather than waited for."""

_WORKER_EXTRACTORS: dict[tuple, dict[str, Extractor]] = {}
"""Per worker process: extractors already set up, so models load once per worker, not per task."""


@contextmanager
def local_cluster(n_workers: int, device: str = "cpu") -> Iterator[LocalCluster]:
    """A LocalCluster of ``n_workers`` worker processes with one thread each, set up by
    :data:`WORKER_CONFIG` and shut down cleanly on exit: every worker is given
    :data:`WORKER_EXIT_S` to exit after a finished run, :data:`INTERRUPTED_EXIT_S` after an
    interrupted one, and no worker process outlives the block.

    Processes with one thread each: decoding and extractors release the GIL only partly, and one
    extractor instance per process keeps model memory predictable. With a CUDA device every
    worker declares the resource ``GPU=1``.
    """
    with dask.config.set(WORKER_CONFIG):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, resources={"GPU": 1} if uses_gpu(device) else None)
    try:
        yield cluster
    except BaseException:
        with suppress(Exception):  # best effort: the interruption is what the caller must see
            _stop_workers(cluster, INTERRUPTED_EXIT_S, expected_kill=True)
        with suppress(Exception):
            cluster.close()
        raise
    try:
        _stop_workers(cluster, WORKER_EXIT_S)
    finally:
        cluster.close()


def _stop_workers(cluster: LocalCluster, timeout: float, expected_kill: bool = False) -> None:
    """Close every worker of ``cluster`` through its nanny, each allowed ``timeout`` seconds.

    ``LocalCluster.close`` gives each worker dask's fixed 5 s; closing the nannies first with our
    own timeout is what :data:`WORKER_EXIT_S` needs. When the kill is the point (an interrupted
    run), the nanny's "still alive ... killing" warning is expected and not shown.
    """
    async def close_all() -> None:
        await asyncio.gather(*(nanny.close(timeout=timeout) for nanny in list(cluster.workers.values())))

    nanny_log = logging.getLogger("distributed.nanny")
    level = nanny_log.level
    if expected_kill:
        nanny_log.setLevel(logging.ERROR)
    try:
        cluster.sync(close_all)
    finally:
        nanny_log.setLevel(level)


@contextmanager
def connect(scheduler: str | None, workers: int | None, device: str) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a new :func:`local_cluster` of ``workers``
    processes (default: sized to the machine), closed again on exit."""
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as error:
            raise FeatbankError(f"cannot reach the dask scheduler at {scheduler}: {error}") from error
        with client:
            yield client
        return
    with local_cluster(workers or default_workers(device), device) as cluster, Client(cluster) as client:
        yield client


def _worker_device(device: str) -> str:
    """Spread a bare ``cuda`` device over the GPUs by the worker's index in a LocalCluster."""
    if device != "cuda":
        return device
    import torch

    name = get_worker().name
    index = name if isinstance(name, int) else 0
    return f"cuda:{index % max(1, torch.cuda.device_count())}"


def _extractors_on_worker(specs: tuple[str, ...], device: str, weights: WeightsPolicy) -> dict[str, Extractor]:
    cache_key = (specs, device, weights)
    if cache_key not in _WORKER_EXTRACTORS:
        built = {}
        for spec in specs:
            ex = extractors.create(spec)
            ex.setup(_worker_device(device), weights)
            built[spec] = ex
        _WORKER_EXTRACTORS[cache_key] = built
    return _WORKER_EXTRACTORS[cache_key]


def run_chunk(bank_path: str, work: dict[int, list[str]], paths: dict[int, str], ids: dict[int, str],
              texts: dict[int, dict[str, str]], specs: tuple[str, ...], device: str,
              weights: WeightsPolicy, progress_event: tuple[str, str] | None = None) -> list[tuple[str, str, str]]:
    """The task: extract and commit the rows of one chunk on whichever worker runs it.

    With ``progress_event`` (topic, message), each finished item logs that event, so the client's
    progress bar moves per item; the chunk is still committed whole, at the end.
    """
    built = _extractors_on_worker(specs, device, weights)
    bank = FeatureBank(bank_path)
    worker = get_worker()
    on_item = (lambda: worker.log_event(*progress_event)) if progress_event else None
    return process_chunk(bank, {row: [built[s] for s in names] for row, names in work.items()},
                         {row: media_item(p, Path("/")) for row, p in paths.items()}, ids,  # item_text: absolute
                         texts, on_item=on_item)


def extract_distributed(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
                        scheduler: str | None = None, workers: int | None = None, device: str = "cpu",
                        weights: WeightsPolicy | None = None, retry_failed: bool = False,
                        progress: bool = True, wait_lock: float = 0.0) -> ExtractReport:
    """Like :func:`featbank.extraction.orchestrate.extract_manifest`, with the chunks spread over the workers
    of the cluster at ``scheduler``, or of a LocalCluster of ``workers`` processes (default: sized
    to the machine, never more than there are chunks to do), whatever the amount of work
    (:func:`featbank.extraction.mode.extract` starts a cluster only when it pays). Nothing is
    started when nothing is missing. The bank (a path or an fsspec URL) must be reachable by every
    worker under the same name. The client holds the bank's write lock for its workers for the
    whole run."""
    return extract(manifest_path, bank_path, specs, scheduler=scheduler,
                   workers=None if scheduler else workers or default_workers(device), device=device,
                   weights=weights, retry_failed=retry_failed, progress=progress, wait_lock=wait_lock)


def run_on_cluster(plan: ExtractionPlan, chunks: Chunks, scheduler: str | None, workers: int | None,
                   device: str, weights: WeightsPolicy, bar) -> list[tuple[str, str, str]]:
    """Extract ``chunks`` of ``plan`` on the cluster at ``scheduler``, or on a LocalCluster of
    ``workers`` processes (default: sized to the machine; never more than there are chunks),
    moving ``bar`` per item; return the failures."""
    n_workers = min(workers or default_workers(device), len(chunks))
    with connect(scheduler, n_workers, device) as client:
        return _run_plan(client, plan, chunks, device, weights, bar)


class _ItemProgress:
    """A progress bar moved per item by worker events and settled per chunk by task results.

    Events only make the bar move sooner. A retried chunk announces its items again, and an event
    may arrive after its chunk's result, so each chunk's share is capped at its size and set
    exactly when the chunk finishes: the bar ends at the true total either way.
    """

    def __init__(self, bar, sizes: dict[str, int]) -> None:
        self._bar, self._sizes, self._lock = bar, sizes, threading.Lock()
        self._shown = dict.fromkeys(sizes, 0)

    def on_event(self, event: tuple[float, str]) -> None:
        """``Client.subscribe_topic`` handler: one item of chunk ``event[1]`` is done."""
        chunk = event[1]
        with self._lock:
            if self._shown.get(chunk, 0) < self._sizes.get(chunk, 0):
                self._shown[chunk] += 1
                self._bar.update(1)

    def chunk_done(self, chunk: str) -> None:
        with self._lock:
            self._bar.update(self._sizes[chunk] - self._shown[chunk])
            self._shown[chunk] = self._sizes[chunk]


def _run_plan(client: Client, plan: ExtractionPlan, chunks: Chunks, device: str, weights: WeightsPolicy,
              bar) -> list[tuple[str, str, str]]:
    spec_of = {ex.key: spec for ex, spec in zip(plan.extractors, plan.specs)}
    options = {"resources": {"GPU": 1}} if uses_gpu(device) else {}
    topic = f"featbank-progress-{uuid.uuid4().hex[:8]}"
    names = {chunk: f"featbank-chunk-{chunk}-{uuid.uuid4().hex[:8]}" for chunk in chunks}
    progress = not bar.disable
    failures: list[tuple[str, str, str]] = []
    tracker = _ItemProgress(bar, {names[chunk]: len(work) for chunk, work in chunks.items()})
    if progress:  # subscribed before submitting, so no item's event is missed
        client.subscribe_topic(topic, tracker.on_event)
    try:
        futures = {}
        for chunk, work in chunks.items():
            future = client.submit(
                run_chunk, plan.bank.location,
                {row: [spec_of[ex.key] for ex in exs] for row, exs in work.items()},
                {row: item_text(plan.paths[row]) for row in work}, {row: plan.ids[row] for row in work},
                {row: plan.texts[row] for row in work if row in plan.texts}, tuple(plan.specs), device,
                weights, (topic, names[chunk]) if progress else None,
                key=names[chunk], retries=TASK_RETRIES, pure=False, **options,
            )
            futures[future] = names[chunk]
        for future in as_completed(futures):
            failures += future.result()
            tracker.chunk_done(futures[future])
            bar.set_postfix(failed=len(failures))
    finally:
        if progress:
            client.unsubscribe_topic(topic)
    return failures
