"""Extraction commands: run extractors over a manifest, watch progress, list extractors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import extractors
from featbank.cli.options import (
    EXIT_ITEMS_FAILED,
    add_bank,
    add_track,
    add_weights,
    checked_manifest,
    spec_list,
    weights_policy,
)
from featbank.errors import FeatbankError, UsageError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser("extract", help="extract features of a manifest's items into the bank",
                       description="Decode each item once and run every requested extractor on it. "
                                   "Only missing rows are computed, so re-running resumes a killed run.")
    p.add_argument("--manifest", required=True, type=Path, help="CSV/Parquet manifest")
    p.add_argument("--extractor", required=True, type=spec_list,
                   help=f"comma-separated extractors: {', '.join(extractors.available())}")
    add_bank(p)
    add_track(p)
    add_weights(p)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the dask.distributed cluster at ADDRESS (tcp://host:8786); the bank "
                        "path must be visible to its workers under the same name")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local dask cluster of N worker processes (with --device cuda "
                        "they take the GPUs in turn); 0 runs in this process. Default: this process, unless "
                        "timing the first items shows that a cluster of one worker per core (or "
                        "GPU) would be clearly faster for the work left; the run says which it chose")
    p.add_argument("--retry-failed", action="store_true", help="also redo items that failed before")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="one writer at a time per bank: wait up to this long for another extract or "
                        "import on the same bank to finish (default 0: exit 3 at once, naming it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_extract)

    p = sub.add_parser("status", help="done / failed / pending per extractor, for a manifest or the bank",
                       description="Progress of extraction: for each feature group, how many items are "
                                   "done (ok), failed, absent (no such stream) or still pending. With "
                                   "--manifest, counts that manifest's items (unregistered ones are "
                                   "pending); safe to run while an extraction is writing.")
    add_bank(p)
    p.add_argument("--manifest", type=Path, default=None, help="restrict the counts to this manifest")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("extractors", help="list the registered extractors")
    p.set_defaults(handler=_cmd_extractors)


def _cmd_extract(args: argparse.Namespace) -> int:
    from featbank.extraction.mode import extract

    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 (this process) or a number of workers, not {args.workers}")
    checked_manifest(args.manifest, args.track)
    report = extract(args.manifest, args.bank, args.extractor, scheduler=args.scheduler,
                     workers=args.workers, device=args.device, weights=weights_policy(args),
                     retry_failed=args.retry_failed, progress=not args.no_progress, wait_lock=args.wait_lock)
    print(f"{report.items} items, {report.already_done} already complete, ran {report.mode}")
    for key, counts in report.counts.items():
        print(f"  {key}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for vid, key, err in report.failures:
        print(f"  FAILED {vid} [{key}]: {err.splitlines()[0]}", file=sys.stderr)
    return EXIT_ITEMS_FAILED if report.failures else 0


def _cmd_status(args: argparse.Namespace) -> int:
    import numpy as np

    from featbank.bank.localview import open_for_counting
    from featbank.bank.matrix import lookup_rows
    from featbank.io.manifest import load_manifest

    bank = open_for_counting(args.bank)  # without zarr where it can: a quick command starts fast
    rows, unregistered, total = None, 0, bank.count
    if args.manifest is not None:
        found = lookup_rows(bank, load_manifest(args.manifest))
        rows, unregistered, total = np.unique(found[found >= 0]), int((found < 0).sum()), len(found)
    table = {}
    for key in bank.group_keys():
        counts = bank.counts(key, rows)
        counts["pending"] += unregistered
        table[key] = counts
    if args.json:
        print(json.dumps({"items": total, "groups": table}, indent=2))
        return 0
    print(f"{args.manifest or bank.path}: {total} items")
    for key, counts in table.items():
        settled = counts["ok"] + counts["failed"] + counts["absent"]
        filled = round(24 * settled / max(1, sum(counts.values())))
        print(f"  {key:28s} [{'#' * filled}{'.' * (24 - filled)}] "
              + ", ".join(f"{n} {name}" for name, n in counts.items()))
    return 0


def _cmd_extractors(args: argparse.Namespace) -> int:
    for name in extractors.available():
        try:
            ex = extractors.create(name)
        except FeatbankError as needs_argument:  # timm is one extractor per named model
            print(f"{name:14s} {needs_argument}")
            continue
        weights = ex.weights.filename if ex.weights else "no weights"
        print(f"{name:14s} {type(ex.sampling).__name__:14s} step {ex.step_dim:5d}-d  "
              f"pooled {ex.pooled_dim:5d}-d  {weights}")
    return 0
