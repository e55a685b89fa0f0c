"""Options and helpers several commands share: the bank, the track check, weights and fit options.

Kept apart from the command modules so each option is spelled (and documented) once, and free of
heavy imports so that building the parser for ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from featbank.errors import UsageError

EXIT_ITEMS_FAILED = 6
DEFAULT_BANK = os.environ.get("FEATBANK_BANK", "featbank.zarr")


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def spec_list(value: str) -> list[str]:
    """Comma-separated extractor specs or feature blocks; an extractor's own options stay with it.

    ``fastvqa:b,clips=4,slowfast`` is two specs: a part of the form ``key=value`` (no ``:`` before
    its ``=``) continues the spec before it, as extractor options are written ``name:arg,key=value``.
    """
    specs: list[str] = []
    for part in csv_list(value):
        key = part.split("=", 1)[0]
        if specs and "=" in part and ":" not in key:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return specs


def learner_list(value: str) -> list[str]:
    """Comma-separated learner specs; commas inside a spec's parentheses stay in it."""
    from regressors.spec import split_learners

    return split_learners(value)


def add_bank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bank", default=DEFAULT_BANK,
                   help="Zarr feature bank: a directory or an fsspec URL such as s3://bucket/bank.zarr "
                        "(default: $FEATBANK_BANK or ./featbank.zarr)")


def add_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=None,
                   help="check the manifest against a challenge track first (see `featbank tracks`)")


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device for deep extractors (cpu, cuda, cuda:1)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="directory of pretrained checkpoints (default: $FEATBANK_WEIGHTS; the torch-hub "
                        "and Hugging Face caches are searched too); see `featbank weights list`")
    p.add_argument("--random-weights", action="store_true",
                   help="build deep extractors with seeded RANDOM weights instead of checkpoints: for "
                        "dry runs and tests only; recorded in the bank, in groups of their own")
    p.add_argument("--accept-non-commercial", action="store_true",
                   help="confirm this is non-commercial research, as some checkpoints' licences require")


def weights_policy(args: argparse.Namespace):
    from featbank.extraction.weights import WeightsPolicy, weights_dir

    return WeightsPolicy(directory=weights_dir(args.weights_dir), random=args.random_weights,
                         accept_non_commercial=args.accept_non_commercial)


def add_fit_options(p: argparse.ArgumentParser) -> None:
    from regressors import LEARNERS

    p.add_argument("--learners", type=learner_list, default=["svr", "elasticnet", "lightgbm", "mlp"],
                   help=f"base learners, comma-separated, from: {', '.join(LEARNERS)} "
                        "(default: svr,elasticnet,lightgbm,mlp); a learner takes parameters as "
                        "NAME(key=value, ...), e.g. 'mlp(hidden=(128,), loss=\"l1+plcc+srcc\")' or "
                        "'temporal(pooling=\"attention\")' (temporal reads per-step features)")
    p.add_argument("--protocol", default=None, metavar="SPEC",
                   help="how samples are split for scoring (see 'protocols' below)")
    p.add_argument("--folds", type=int, default=None, help="shorthand for --protocol kfold:FOLDSxREPEATS")
    p.add_argument("--repeats", type=int, default=None, help="repeat k-fold with new seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and learners")
    p.add_argument("--stack", action="store_true",
                   help="fit a non-negative linear meta-learner on the base models' held-out predictions "
                        "(trained on inner folds only, so the reported stack score does not leak)")
    p.add_argument("--stack-mode", choices=("nested", "ring", "oof"), default="nested",
                   help="nested (default): the honest stack above, k + k(k-1)/2 fits per base under k-fold; "
                        "ring: still honest, each fold's meta-learner trained on its two neighbour folds only, "
                        "2k fits per base (10 instead of 15 at k=5); oof: the meta-learner is trained on the other "
                        "folds' out-of-fold predictions, k fits per base, for a slightly optimistic stack score")
    p.add_argument("--reduce", default=None, metavar="pca:N",
                   help="end every pooled base's preprocessing with a PCA to N components, fitted on each "
                        "fit's training part and shared by its learners and targets: deep features of thousands "
                        "of dimensions fit many times faster (blocks no wider than N pass unchanged; the temporal "
                        "head reads its per-step input unreduced). Measured: 6000 videos x 4096-d, 4 learners, "
                        "6 targets, 5 folds, --reduce pca:128 --stack-mode ring: 2.5 min on 2 cores")
    p.add_argument("--jobs", type=int, default=-1, help="parallel fits (default: all cores)")
    p.add_argument("--device", default="cpu",
                   help="torch device the torch heads (mlp, temporal) train on, e.g. cuda (default: cpu); "
                        "use --jobs 1 with one GPU")


def protocol_epilog(default: str) -> str:
    """The protocols section of ``fit`` / ``evaluate`` help, from the protocol table."""
    from featbank.learning.protocols import protocol_help

    return (f"protocols (default {default}):\n{protocol_help()}\n"
            "feature blocks: A,B fits one model per block (blended by --stack); A+B joins them into one matrix.\n"
            "learner svr_grid is VIDEVAL's RBF-SVR with its inner 80/20 grid search.")


def protocol_spec(args: argparse.Namespace, default: str) -> str:
    """The protocol the options name: --protocol, or k-fold from --folds/--repeats, else ``default``."""
    if args.protocol is not None:
        if args.folds is not None or args.repeats is not None:
            raise UsageError("give either --protocol or --folds/--repeats, not both")
        return args.protocol
    if args.folds is not None or args.repeats is not None:
        return f"kfold:{args.folds or 5}x{args.repeats or 1}"
    return default


def checked_manifest(path: Path, track_name: str | None):
    """Load and validate the manifest, and check it against ``track_name`` when given."""
    from featbank.io.manifest import load_manifest
    from featbank.io.tracks import load_track

    manifest = load_manifest(path)
    track = load_track(track_name) if track_name else None
    if track is not None:
        track.check(manifest)
    return manifest, track
