"""Recipe commands: published challenge systems by name (``featbank recipe list / show / run``).

The logic lives in :mod:`featbank.recipes`; this module only parses options and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featbank.cli.options import (
    EXIT_ITEMS_FAILED,
    add_bank,
    add_weights,
    weights_policy,
)
from featbank.errors import FeatbankError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser("recipe", help="seed systems by name: list, show and run published recipes",
                       description="A recipe rebuilds one published challenge system from featbank's frozen "
                                   "extractors and learners (recipes/*.toml): which extractors, feature blocks, "
                                   "learners and protocol, the published score, and where featbank's version "
                                   "differs.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = actions.add_parser("list", help="every bundled recipe: name, track, published score, one line")
    q.set_defaults(handler=_cmd_list)

    q = actions.add_parser("show", help="a whole recipe, its honest notes and the equivalent commands")
    q.add_argument("name", help="a recipe name (see `featbank recipe list`) or the path of a recipe .toml file")
    q.set_defaults(handler=_cmd_show)

    q = actions.add_parser("run", help="extract what is missing, fit, report, and predict a test manifest",
                           description="Runs a recipe end to end: extracts the features the bank lacks, fits "
                                       "the recipe's learners under its protocol (report in OUT/fit), and with "
                                       "--test predicts the test manifest into the track's submission layout "
                                       "(OUT/submission.zip or .csv). Everything is checked before extracting.",
                           epilog="example (a dry run on the demo's clips, whose labels are FineVD's):\n"
                                  "  featbank demo --out demo_out\n"
                                  "  featbank recipe run fiee --manifest demo_out/train/manifest.csv "
                                  "--track finevd --random-weights",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("name", help="a recipe name or the path of a recipe .toml file")
    q.add_argument("--manifest", required=True, type=Path, help="labelled training manifest")
    q.add_argument("--track", default=None, help="check and score against this track instead of the recipe's")
    q.add_argument("--test", type=Path, default=None, help="manifest to predict into the track's submission layout")
    q.add_argument("--out", type=Path, default=None, help="output directory (default runs/<recipe>)")
    q.add_argument("--protocol", default=None, metavar="SPEC",
                   help="replace the recipe's protocol, e.g. random:3 for a quick check on few items")
    q.add_argument("--pairs", type=Path, default=None, metavar="FILE",
                   help="with the kvq track: the organisers' pair file for Rank1/Rank2")
    q.add_argument("--seed", type=int, default=0, help="seed of the splits and learners")
    q.add_argument("--jobs", type=int, default=-1, help="parallel fits (default: all cores)")
    add_bank(q)
    add_weights(q)
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(handler=_cmd_run)


def _cmd_list(args: argparse.Namespace) -> int:
    from featbank.recipes import available, load_recipe

    rows, broken = [], []
    for name in available():
        try:
            recipe = load_recipe(name)
        except FeatbankError as error:
            broken.append(f"{name}: {error}")
            continue
        rows.append((name, recipe.track, f"{recipe.source.score:.4f}", recipe.title))
    width = max((len(r[0]) for r in rows), default=4)
    print(f"{'name':<{width}}  {'track':<10}  {'score':>6}  system")
    for name, track, score, title in rows:
        print(f"{name:<{width}}  {track:<10}  {score:>6}  {title}")
    for line in broken:
        print(f"cannot load {line}", file=sys.stderr)
    return 2 if broken else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from featbank.recipes import describe, load_recipe

    print(describe(load_recipe(args.name)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from featbank.recipes import run_recipe

    result = run_recipe(args.name, args.manifest, track=args.track, test=args.test, bank=args.bank,
                        out_dir=args.out, device=args.device, weights=weights_policy(args), protocol=args.protocol,
                        pairs=args.pairs, seed=args.seed, n_jobs=args.jobs, progress=not args.no_progress,
                        echo=print)
    print(result.outcome.text)
    if result.submission is not None:
        print(f"submission: {result.submission} ({result.track.layout} layout)")
    for vid, key, err in result.failures:
        print(f"  FAILED {vid} [{key}]: {err.splitlines()[0]}", file=sys.stderr)
    return EXIT_ITEMS_FAILED if result.failures else 0
