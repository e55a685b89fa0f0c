"""Extraction over a manifest: hash → register rows → find missing work → extract → commit by chunk.

Work is grouped by bank chunk (``ROW_CHUNK`` rows) and each chunk is committed as soon as its items
are done, so a killed run loses at most one chunk of work and a re-run computes only what is
missing. ``process_chunk`` is the self-contained unit a distributed scheduler can run elsewhere.
"""

from __future__ import annotations

import importlib.metadata as md
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import extractors
from extractors.base import Extractor
from featbank import __version__
from featbank.bank import FAILED, PENDING, ROW_CHUNK, STATUS_NAMES, FeatureBank, GroupLayout, ItemRecord
from featbank.extract import extract_item
from featbank.hashing import digest_paths
from featbank.manifest import Manifest, load_manifest


@dataclass
class ExtractReport:
    """What one ``extract`` run did: per extractor key, how many rows ended in each status."""

    items: int
    already_done: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, key, error)

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def layout_of(extractor: Extractor) -> GroupLayout:
    s = extractor.sampling
    return GroupLayout(pooled_dim=extractor.pooled_dim, max_steps=s.max_steps,
                       step_dim=extractor.step_dim, frames_per_step=s.frames_per_step)


def provenance_of(extractor: Extractor, spec: str) -> dict:
    weights = extractor.weights
    return {
        "extractor": extractor.name,
        "spec": spec,
        "version": extractor.version,
        "config": extractor.config(),
        "feature_names": extractor.feature_names(),
        "pooled_names": extractor.pooled_names(),
        "weights": None if weights is None else {"filename": weights.filename, "sha256": weights.sha256},
        "decoder": {"decord": md.version("decord"), "av": md.version("av")},
        "featbank": __version__,
    }


def register_manifest(bank: FeatureBank, manifest: Manifest) -> np.ndarray:
    """Bank rows of the manifest's items (hashing only files the bank has not seen unchanged)."""
    paths = manifest.media_paths()
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


def process_chunk(bank: FeatureBank, work: dict[int, list[Extractor]], paths: dict[int, Path],
                  ids: dict[int, str], on_item: Callable[[], None] | None = None) -> list[tuple[str, str, str]]:
    """Extract the rows of one chunk, commit them together, return the failures."""
    records: dict[int, ItemRecord] = {}
    outputs: dict[str, dict[int, object]] = defaultdict(dict)
    failures = []
    for row in sorted(work):
        record, results = extract_item(paths[row], work[row])
        records[row] = record
        for key, out in results.items():
            outputs[key][row] = out
            if out.status == FAILED:
                failures.append((ids[row], key, out.error or ""))
        if on_item:
            on_item()
    bank.commit(np.array(sorted(work)), records, outputs, ids)
    return failures


def extract_manifest(manifest_path: str | Path, bank_path: str | Path, specs: Sequence[str],
                     device: str = "cpu", weights_dir: Path | None = None, retry_failed: bool = False,
                     progress: bool = True) -> ExtractReport:
    """Bring the bank up to date for every item of the manifest and every requested extractor."""
    from tqdm.auto import tqdm

    manifest = load_manifest(manifest_path)
    exs = [extractors.create(s) for s in specs]
    for ex in exs:
        ex.setup(device, weights_dir)  # missing weights fail here, before any decoding
    bank = FeatureBank(bank_path)
    rows = register_manifest(bank, manifest)
    for ex, spec in zip(exs, specs):
        bank.ensure_group(ex.key, layout_of(ex), provenance_of(ex, spec))
    work = pending_work(bank, rows, exs, retry_failed)
    paths: dict[int, Path] = {}
    ids: dict[int, str] = {}
    for row, path, vid in zip(rows.tolist(), manifest.media_paths(), manifest.video_ids):
        paths.setdefault(row, path)
        ids.setdefault(row, vid)
    report = ExtractReport(items=len(np.unique(rows)), already_done=len(np.unique(rows)) - len(work))
    by_chunk: dict[int, dict[int, list[Extractor]]] = defaultdict(dict)
    for row, exs_for_row in work.items():
        by_chunk[row // ROW_CHUNK][row] = exs_for_row
    with tqdm(total=len(work), desc="extract", unit="item", disable=not progress) as bar:
        for chunk in sorted(by_chunk):
            report.failures += process_chunk(bank, by_chunk[chunk], paths, ids, on_item=lambda: bar.update())
            bar.set_postfix(failed=len(report.failures))
    unique = np.unique(rows)
    for ex in exs:
        codes = np.bincount(bank.status(ex.key, unique), minlength=len(STATUS_NAMES))
        report.counts[ex.key] = {STATUS_NAMES[c]: int(codes[c]) for c in STATUS_NAMES}
    return report


__all__ = ["ExtractReport", "extract_manifest", "process_chunk", "pending_work", "register_manifest"]
