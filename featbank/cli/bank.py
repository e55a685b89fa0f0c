"""Bank inspection commands: what the bank holds, whether its structure is sound, and packing
finished groups for fast cold reads."""

from __future__ import annotations

import argparse
import json
import sys

from featbank.cli.options import add_bank


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser("info", help="what the bank holds")
    add_bank(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--failures", action="store_true", help="list failed items and their errors")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("validate", help="check every array and chunk of the bank; exit 3 when damaged",
                       description="Reads every chunk of every array (items, status, pooled, steps, mask, "
                                   "timestamps, frame_indices) and checks that rows marked done hold their "
                                   "data. Exit 0 when sound, 3 when damaged (or, with --repair, when "
                                   "something could not be repaired).")
    add_bank(p)
    p.add_argument("--repair", action="store_true",
                   help="rewrite lost metadata and unreadable chunks, and mark damaged rows pending so the "
                        "next `featbank extract` recomputes them (takes the bank's write lock)")
    p.add_argument("--break-lock", action="store_true",
                   help="remove the write lock left by an extract or import that is gone (another host, "
                        "or a machine that rebooted); never while that run is still writing")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("compact", help="pack finished feature groups into a few large files for fast loading",
                       description="Rewrites the status and pooled features of every finished group (no "
                                   "row pending), and the items' digests, as chunks of ~64 MB instead of one "
                                   "small file per 32 rows, "
                                   "so loading a group reads like one contiguous file, also from a cold "
                                   "disk. Safe to interrupt: the new files are written beside the old ones "
                                   "and switched to in one step. A later extract or import into a packed "
                                   "group gives it back its 32-row chunks first. extract and import pack "
                                   "what they finish themselves (extract: groups of 1024+ rows), so this is "
                                   "for banks written otherwise or by older featbanks. Local banks only; "
                                   "takes the bank's write lock.")
    add_bank(p)
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for another extract or import on the bank to finish")
    p.set_defaults(handler=_cmd_compact)


def _cmd_info(args: argparse.Namespace) -> int:
    from featbank.bank.store import FeatureBank, describe

    bank = FeatureBank(args.bank, mode="r")
    summary = bank.summary()
    if args.failures:
        summary["failures"] = {k: bank.failures(k) for k in bank.group_keys()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(describe(summary))
    for key, recs in summary.get("failures", {}).items():
        for digest, rec in recs.items():
            print(f"  FAILED [{key}] {rec.get('video_id')} ({digest[:12]}): {rec['error'].splitlines()[0]}")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from featbank.bank.compact import compact_bank
    from featbank.bank.session import write_session
    from featbank.bank.store import FeatureBank

    FeatureBank(args.bank, mode="r").close()  # a missing or foreign bank is refused before any lock
    with write_session(args.bank, wait=args.wait_lock), FeatureBank(args.bank) as bank:
        for line in compact_bank(bank):
            print(line)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    import warnings

    import zarr

    from featbank.bank.lock import BankLock, describe_holder
    from featbank.bank.session import write_session
    from featbank.bank.store import FeatureBank, bank_location
    from featbank.bank.validate import inspect_bank, repair_bank

    # zarr warns of every folder without metadata; validate names those itself, as problems
    warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
    location = bank_location(args.bank)
    if args.break_lock:
        lock = BankLock(location)
        holder = lock.holder()
        lock.break_lock()
        print(f"{args.bank}: " + (f"removed the write lock of {describe_holder(holder)}" if holder is not None
                                  else "no write lock to remove"))
    with FeatureBank(args.bank, mode="r") as bank:
        health = inspect_bank(bank)
    for p in health.all_problems:
        print(f"problem: {p}", file=sys.stderr)
    if health.all_problems and args.repair and (health.problems or health.stale):
        with write_session(args.bank), FeatureBank(args.bank) as bank:
            for action in repair_bank(bank, health):
                print(f"repaired: {action}")
            health = inspect_bank(bank)
        for p in health.all_problems:
            print(f"still: {p}", file=sys.stderr)
    elif health.all_problems:
        print(f"to repair: `featbank validate --bank {args.bank} --repair` marks damaged rows pending, then "
              f"`featbank extract` recomputes them", file=sys.stderr)
    print(f"{args.bank}: {'OK' if not health.all_problems else f'{len(health.all_problems)} problem(s)'}")
    return 3 if health.all_problems else 0
