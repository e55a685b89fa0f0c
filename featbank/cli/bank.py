"""Bank inspection commands: what the bank holds and whether its structure is sound."""

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

    p = sub.add_parser("validate", help="check the bank's structure; exit 3 when broken")
    add_bank(p)
    p.set_defaults(handler=_cmd_validate)


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


def _cmd_validate(args: argparse.Namespace) -> int:
    from featbank.bank.store import FeatureBank

    problems = FeatureBank(args.bank, mode="r").validate()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"{args.bank}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 3 if problems else 0
