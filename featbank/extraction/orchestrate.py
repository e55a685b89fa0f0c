"""Extraction over a manifest: hash → register rows → find missing work → extract → commit by chunk.

Work is grouped by bank chunk (``ROW_CHUNK`` rows) and each chunk is committed as soon as its items
are done, so a killed run loses at most one chunk of work and a re-run computes only what is
missing. ``process_chunk`` is the self-contained unit a distributed scheduler can run elsewhere.
"""

from __future__ import annotations

import importlib.metadata as md
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import extractors
from extractors.base import Extractor
from featbank.bank.compact import pack_finished
from featbank.bank.schema import GroupLayout, GroupSchema
from featbank.bank.session import write_session
from featbank.bank.store import FAILED, PENDING, ROW_CHUNK, FeatureBank, ItemRecord
from featbank.errors import BankError, ManifestError
from featbank.extraction.item import extract_item
from featbank.bank.hashing import digest_paths
from featbank.io.manifest import Manifest, MediaItem, load_manifest
from featbank.extraction.weights import WeightsPolicy


Chunks = dict[int, dict[int, list[Extractor]]]
"""Work grouped by bank chunk: chunk index -> bank row -> extractors still to run on it."""


@dataclass
class ExtractReport:
    """What one ``extract`` run did: per extractor key, how many rows ended in each status."""

    items: int
    already_done: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, key, error)
    mode: str = ""
    """How the work ran (in this process, or on which cluster, and why), for the user to read."""

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def schema_of(extractor: Extractor, spec: str) -> GroupSchema:
    """What the bank records about the group an extractor (asked for as ``spec``) fills."""
    s = extractor.sampling
    return GroupSchema(
        extractor=extractor.name, spec=spec, version=extractor.version,
        layout=GroupLayout(pooled_dim=extractor.pooled_dim, max_steps=s.max_steps,
                           step_dim=extractor.step_dim, frames_per_step=s.frames_per_step),
        config=extractor.config(), feature_names=tuple(extractor.feature_names()),
        pooled_names=tuple(extractor.pooled_names()), weights=extractor.weights_provenance(),
        runtime=extractor.runtime(), decoder={"decord": md.version("decord"), "av": md.version("av")},
    )


def check_same_weights(stored: Mapping | None, extractor: Extractor, bank_path: str) -> None:
    """Refuse to add rows to a group built from a different checkpoint file.

    Pinned checkpoints are part of the group key already; an unpinned file is identified only by
    the checksum recorded when the group was created, so a swapped file must be caught here.
    """
    current = extractor.weights_provenance()
    if not stored or not current or stored.get("random") or current.get("random"):
        return
    if stored.get("sha256") and current.get("sha256") and stored["sha256"] != current["sha256"]:
        raise BankError(f"{bank_path}: group {extractor.key} was extracted with {stored['filename']} "
                        f"sha256 {stored['sha256']}, but the file found now has sha256 "
                        f"{current['sha256']}; restore the original file or use another bank")


def item_texts(manifest: Manifest, rows: np.ndarray, exs: Sequence[Extractor]) -> dict[int, dict[str, str]]:
    """Per bank row, the manifest text each text-reading extractor needs (e.g. the prompt).

    A row is one media file: two manifest rows with the same file but different prompts would
    need two feature rows, which a content-keyed bank cannot hold, so that is refused.
    """
    columns = sorted({ex.text_column for ex in exs if ex.text_column})
    missing = [c for c in columns if c not in manifest.table.columns]
    if missing:
        readers = ", ".join(ex.name for ex in exs if ex.text_column in missing)
        raise ManifestError(f"{manifest.source}: {readers} needs column(s) {', '.join(missing)}")
    texts: dict[int, dict[str, str]] = {}
    for column in columns:
        values = manifest.table[column].fillna("").astype(str).tolist()
        for row, vid, text in zip(rows.tolist(), manifest.video_ids, values):
            known = texts.setdefault(row, {}).setdefault(column, text)
            if known != text:
                raise ManifestError(f"{manifest.source}: {vid} is the same file as an earlier row but "
                                    f"has a different {column!r}; one file can carry one {column}")
    return texts


def register_manifest(bank: FeatureBank, manifest: Manifest, digests: list[bytes] | None = None) -> np.ndarray:
    """Bank rows of the manifest's items (hashing only files the bank has not seen unchanged,
    unless the ``digests`` of its items are given)."""
    paths = manifest.media_paths()
    if digests is None:
        digests = digest_paths(paths, bank.hash_cache())
    rows = bank.register(digests)
    bank.save_track(manifest.source, manifest.video_ids, paths, digests)
    return rows


def pending_work(bank: FeatureBank, rows: np.ndarray, exs: Sequence[Extractor],
                 retry_failed: bool) -> dict[int, list[Extractor]]:
    """For each row, the extractors still to run on it."""
    todo_status = (PENDING, FAILED) if retry_failed else (PENDING,)
    work: dict[int, list[Extractor]] = defaultdict(list)
    unique = np.unique(rows)
    for ex in exs:
        status = bank.status(ex.key, unique)
        for r in unique[np.isin(status, todo_status)]:
            work[int(r)].append(ex)
    return dict(work)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: threadpool_limits | None = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS at one thread while any thread of this process is inside.

    BLAS thread limits are process-wide, so a plain per-call limit would be lifted by the first of
    two concurrent callers (threaded dask workers) to finish, mid-computation of the other.
    """
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = threadpool_limits(1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def process_chunk(bank: FeatureBank, work: dict[int, list[Extractor]], paths: dict[int, MediaItem],
                  ids: dict[int, str], texts: dict[int, dict[str, str]] | None = None,
                  on_item: Callable[[], None] | None = None) -> list[tuple[str, str, str]]:
    """Extract the rows of one chunk, commit them together, return the failures.

    BLAS runs single-threaded here, wherever the chunk runs: a multi-threaded BLAS sums in an
    order that depends on its thread count, which would make a bank built in one process differ
    in the last bits from one built by single-threaded dask workers. Parallelism comes from
    workers (and torch's own threads for deep extractors), not from BLAS inside one item.
    """
    records: dict[int, ItemRecord] = {}
    outputs: dict[str, dict[int, object]] = defaultdict(dict)
    failures = []
    for row in sorted(work):
        with single_threaded_blas():
            record, results = extract_item(paths[row], work[row], (texts or {}).get(row))
        records[row] = record
        for key, out in results.items():
            outputs[key][row] = out
            if out.status == FAILED:
                failures.append((ids[row], key, out.error or ""))
        if on_item:
            on_item()
    bank.commit(np.array(sorted(work)), records, outputs, ids)
    return failures


@dataclass
class ExtractionPlan:
    """Everything a run needs after the bank is prepared: the work, grouped by bank chunk.

    Built by the client alone (it is the only process that registers rows, resizes arrays or
    writes attributes); executing it only writes whole chunks, so chunks can go to any worker.
    """

    bank: FeatureBank
    specs: list[str]
    extractors: list[Extractor]
    rows: np.ndarray
    chunks: Chunks
    paths: dict[int, MediaItem]
    ids: dict[int, str]
    texts: dict[int, dict[str, str]]
    setup_s: float = 0.0
    """Seconds this process took to build and set up the extractors (module imports, weights): the
    start-up every worker of a cluster repeats before its first item."""

    @property
    def n_items(self) -> int:
        return sum(len(work) for work in self.chunks.values())

    def report(self, failures: list[tuple[str, str, str]], mode: str = "") -> ExtractReport:
        """Final counts per extractor over the manifest's rows, read back from the bank."""
        unique = np.unique(self.rows)
        report = ExtractReport(items=len(unique), already_done=len(unique) - self.n_items, failures=failures,
                               mode=mode)
        for ex in self.extractors:
            report.counts[ex.key] = self.bank.counts(ex.key, unique)
        return report


def _prepared(manifest_path: str | Path, specs: Sequence[str], device: str,
              weights: WeightsPolicy | None) -> tuple[Manifest, list[Extractor], float]:
    """The manifest, validated, its extractors set up (missing weights fail here, before any
    decoding or any write), and the seconds that set-up took."""
    manifest = load_manifest(manifest_path)
    start = time.perf_counter()
    exs = [extractors.create(s) for s in specs]
    for ex in exs:
        ex.setup(device, weights)
    return manifest, exs, time.perf_counter() - start


def _plan(bank: FeatureBank, manifest: Manifest, exs: list[Extractor], specs: Sequence[str],
          rows: np.ndarray, retry_failed: bool, setup_s: float = 0.0) -> ExtractionPlan:
    """The missing work of ``rows`` (the manifest's bank rows), grouped by chunk."""
    paths: dict[int, MediaItem] = {}
    ids: dict[int, str] = {}
    for row, path, vid in zip(rows.tolist(), manifest.media_paths(), manifest.video_ids):
        paths.setdefault(row, path)
        ids.setdefault(row, vid)
    chunks: Chunks = defaultdict(dict)
    for row, exs_for_row in pending_work(bank, rows, exs, retry_failed).items():
        chunks[row // ROW_CHUNK][row] = exs_for_row
    return ExtractionPlan(bank, list(specs), exs, rows, dict(sorted(chunks.items())), paths, ids,
                          item_texts(manifest, rows, exs), setup_s)


def _register(bank: FeatureBank, manifest: Manifest, exs: list[Extractor], specs: Sequence[str],
              digests: list[bytes] | None = None) -> np.ndarray:
    """Register the manifest's items and the extractors' groups (the writes a plan needs)."""
    rows = register_manifest(bank, manifest, digests)
    for ex, spec in zip(exs, specs):
        bank.ensure_group(ex.key, schema_of(ex, spec))
        bank.root.require_group("failures").require_group(ex.key)  # workers only add below it
    _refuse_swapped_weights(bank, exs)
    return rows


def _refuse_swapped_weights(bank: FeatureBank, exs: list[Extractor]) -> None:
    """Every group must have been computed from the checkpoint each extractor now loads."""
    for ex in exs:
        check_same_weights(bank.schema(ex.key).weights, ex, bank.path)


def _existing_bank(bank_path: str | Path) -> FeatureBank | None:
    """The bank opened read-only, None when there is none yet (or it cannot be opened: the write
    path then says why)."""
    try:
        return FeatureBank(bank_path, mode="r")
    except BankError:
        return None


def _settled_plan(bank: FeatureBank, manifest: Manifest, exs: list[Extractor], specs: Sequence[str],
                  digests: list[bytes], retry_failed: bool) -> ExtractionPlan | None:
    """An empty plan on the read-only ``bank`` when it already holds every item and group the run
    asks for, else None. Such a run takes no lock and writes nothing, so it works on a read-only
    bank and beside another writer."""
    rows = bank.rows_of(digests)
    if (rows < 0).any() or not set(ex.key for ex in exs) <= set(bank.group_keys()):
        return None
    _refuse_swapped_weights(bank, exs)  # even when there is nothing to compute
    plan = _plan(bank, manifest, exs, specs, rows, retry_failed)
    return plan if not plan.chunks else None


def plan_extraction(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
                    device: str = "cpu", weights: WeightsPolicy | None = None,
                    retry_failed: bool = False) -> ExtractionPlan:
    """Validate, set up extractors, register the manifest's items and groups in the bank, and list
    the missing work by chunk. Takes no lock: :func:`extraction_session` is the safe entry."""
    manifest, exs, setup_s = _prepared(manifest_path, specs, device, weights)
    bank = FeatureBank(bank_path)
    return _plan(bank, manifest, exs, specs, _register(bank, manifest, exs, specs), retry_failed, setup_s)


@contextmanager
def extraction_session(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
                       device: str = "cpu", weights: WeightsPolicy | None = None, retry_failed: bool = False,
                       wait_lock: float = 0.0) -> Iterator[ExtractionPlan]:
    """The plan of a run, under the bank's write lock until the ``with`` block (the execution)
    ends: one writer at a time per bank (see :mod:`featbank.bank.lock`; ``wait_lock`` seconds to
    wait for another writer). Full-disk and read-only errors inside become one BankError.

    When the bank already holds everything asked, the plan is empty and made without the lock or
    any write. A run that ends normally packs the large groups it left finished
    (:func:`featbank.bank.compact.pack_finished`).
    """
    manifest, exs, setup_s = _prepared(manifest_path, specs, device, weights)
    existing = _existing_bank(bank_path)
    digests = digest_paths(manifest.media_paths(), existing.hash_cache() if existing else {})
    settled = existing and _settled_plan(existing, manifest, exs, specs, digests, retry_failed)
    if settled:
        yield settled
        return
    if existing:
        existing.close()
    with write_session(bank_path, wait=wait_lock):
        bank = FeatureBank(bank_path)
        rows = _register(bank, manifest, exs, specs, digests)
        yield _plan(bank, manifest, exs, specs, rows, retry_failed, setup_s)
        pack_finished(bank, [ex.key for ex in exs])  # large finished groups: read cold from a few files


def progress_bar(total: int, enabled: bool):
    """The one progress bar of a run, moved per finished item whichever way the run goes."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="extract", unit="item", disable=not enabled)


def run_here(plan: ExtractionPlan, chunks: Chunks, bar,
             on_item: Callable[[], None] | None = None) -> list[tuple[str, str, str]]:
    """Extract and commit ``chunks`` of ``plan`` in this process, one chunk at a time; return the
    failures. ``on_item`` is called after each item, besides moving ``bar``."""
    failures: list[tuple[str, str, str]] = []

    def item_done() -> None:
        bar.update()
        if on_item:
            on_item()

    for work in chunks.values():
        failures += process_chunk(plan.bank, work, plan.paths, plan.ids, plan.texts, on_item=item_done)
        bar.set_postfix(failed=len(failures))
    return failures


def extract_manifest(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
                     device: str = "cpu", weights: WeightsPolicy | None = None, retry_failed: bool = False,
                     progress: bool = True, wait_lock: float = 0.0) -> ExtractReport:
    """Bring the bank up to date for every item of the manifest and every requested extractor,
    in this process, committing chunk by chunk (:func:`featbank.extraction.mode.extract` picks
    between this and a dask cluster by the work). Another writer on the bank is waited for up to
    ``wait_lock`` seconds, then refused (BankError)."""
    with extraction_session(manifest_path, bank_path, specs, device, weights, retry_failed, wait_lock) as plan:
        with progress_bar(plan.n_items, progress) as bar:
            failures = run_here(plan, plan.chunks, bar)
        return plan.report(failures, "in this process")


__all__ = ["Chunks", "ExtractReport", "ExtractionPlan", "extract_manifest", "extraction_session", "pending_work",
           "plan_extraction", "process_chunk", "progress_bar", "register_manifest", "run_here"]
