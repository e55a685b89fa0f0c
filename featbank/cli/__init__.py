"""The ``featbank`` command line: extract → fit → predict, plus bank inspection and the demo.

Exit codes: 0 success · 1 error · 2 invalid manifest or usage · 3 bank problem ·
4 missing/mismatching weights · 6 run completed but some items failed (recorded in the bank) ·
130 interrupted.

Each command family lives in its own module (``extract``, ``learn``, ``score``, ``weights``, ``io``, ``bank``,
``demo``) with its ``add_parsers`` and handlers; shared options are in ``options``. Nothing heavy
(torch, zarr, pandas, scikit-learn) is imported until a handler runs, so ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import sys

from featbank import __version__
from featbank.cli import bank, demo, extract, io, learn, score, weights
from featbank.cli.options import DEFAULT_BANK, EXIT_ITEMS_FAILED
from featbank.errors import FeatbankError

__all__ = ["DEFAULT_BANK", "EXIT_ITEMS_FAILED", "build_parser", "main"]

EPILOG = """\
typical session:
  featbank extract --manifest train.csv --extractor handcrafted,audio
  featbank fit     --manifest train.csv --features handcrafted,audio --targets overall --stack
  featbank predict --manifest test.csv  --model runs/fit/model --out submission.csv
  featbank info                              # what the bank holds

exit codes: 0 ok, 1 error, 2 invalid manifest/usage, 3 bank problem, 4 missing weights,
            6 finished but some items failed (see `featbank info --failures`),
            130 interrupted (committed rows are kept)
"""

EXIT_INTERRUPTED = 130

# In the order the commands are listed by --help: the workflow first, then data, bank, demo.
_FAMILIES = (extract, learn, score, weights, io, bank, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featbank", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Decode each video once, bank frozen features in Zarr, and fit regressor "
                    "stacks scored the way quality-assessment challenges score them.")
    parser.add_argument("--version", action="version", version=f"featbank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in _FAMILIES:
        family.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FeatbankError as exc:
        print(f"featbank {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("featbank: interrupted; committed rows are kept, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
