"""The ``demo`` command: the whole pipeline on synthesized data, with no network, GPU or weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from featbank.cli.options import learner_list


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser("demo", help="synthesize a small distorted-video dataset and run the whole pipeline",
                       description="Needs no network, GPU or weights. Generates procedural clips with "
                                   "audio at graded distortion levels, extracts handcrafted+audio "
                                   "features, fits a stack for seven targets, predicts a held-out set.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="working directory (default demo_out)")
    p.add_argument("--sources", type=int, default=24, help="distinct source clips (default 24)")
    p.add_argument("--variants", type=int, default=6, help="distorted variants per source (default 6)")
    p.add_argument("--learners", type=learner_list, default=None,
                   help="learner specs as for `fit` (default svr,elasticnet,lightgbm,temporal)")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from featbank.demo.run import run_demo

    run_demo(args.out, n_sources=args.sources, variants=args.variants, learners=args.learners,
             n_jobs=args.jobs, progress=not args.no_progress)
    return 0
