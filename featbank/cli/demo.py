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
    p.add_argument("--halo", type=_share, default=None,
                   help="share (0..1) of the overall impression in every dimension's label (default 0.75, "
                        "which makes the dimensions correlate with overall as FineVD-GC's do; 0 gives "
                        "labels that each follow one distortion: then one feature group sees all a "
                        "label depends on, and the stack has little to add)")
    p.add_argument("--jobs", type=int, default=-1, help="parallel jobs for synthesis and fitting (-1: every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    from featbank.demo.run import run_demo

    halo = {} if args.halo is None else {"halo": args.halo}
    run_demo(args.out, n_sources=args.sources, variants=args.variants, learners=args.learners,
             n_jobs=args.jobs, progress=not args.no_progress, **halo)
    return 0
