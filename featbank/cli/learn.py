"""Learning commands: cross-validated fits, protocol evaluation, and prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from featbank.cli.options import (EXIT_ITEMS_FAILED, add_bank, add_fit_options, add_track, add_weights,
                                   checked_manifest, csv_list, protocol_epilog, protocol_spec, weights_policy)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser("fit", help="evaluate learners (and the stack) under a protocol, then fit the final model",
                       description="Scores every (feature block x learner) base model per target, and with "
                                   "--stack their honest blend, under a protocol (grouped 5-fold CV by "
                                   "default), writes predictions, scores and a report, then refits the final "
                                   "model on every row into OUT/model for `featbank predict`.",
                       epilog=protocol_epilog("kfold:5, grouped by `group` when present"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_learning_inputs(p)
    add_track(p)
    p.add_argument("--out", type=Path, default=Path("runs/fit"), help="output directory (default runs/fit)")
    p.set_defaults(handler=_cmd_fit)

    p = sub.add_parser("evaluate", help="score learners and the stack under a named, reproducible protocol",
                       description="Fits every (feature block x learner) base model, and with --stack their "
                                   "blend, on each split of a protocol and scores the held-out part: "
                                   "medians and spread over rounds, side by side. Hyper-parameters are "
                                   "chosen inside training parts only; the split indices are saved. Same "
                                   "engine and files as `fit`, without the final model.",
                       epilog=protocol_epilog("videval, 100 splits"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_learning_inputs(p)
    add_track(p)
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output directory")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", help="score a manifest with a fitted model; writes a submission CSV",
                       description="Extracts whatever features the model needs and the bank lacks, "
                                   "then writes one row per item: video_id and one column per target.")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="the model directory written by `fit`")
    p.add_argument("--out", required=True, type=Path, help="submission CSV to write")
    add_bank(p)
    add_weights(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_predict)


def _add_learning_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, type=Path, help="manifest with label columns")
    p.add_argument("--features", required=True, type=csv_list,
                   help="feature blocks, comma-separated: extractor or imported names, exact bank keys, "
                        "or A+B to join groups into one matrix")
    p.add_argument("--targets", type=csv_list, default=None,
                   help="label columns (default: the track's labels, else every label column)")
    add_bank(p)
    add_fit_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace, default_protocol: str, refit: bool) -> int:
    from featbank.learning.workflow import evaluate_manifest

    _, track = checked_manifest(args.manifest, getattr(args, "track", None))
    targets = args.targets or (list(track.labels) if track else None)
    outcome = evaluate_manifest(args.manifest, args.bank, args.features, targets, args.learners,
                                protocol=protocol_spec(args, default_protocol), stack=args.stack,
                                out_dir=args.out, seed=args.seed, n_jobs=args.jobs,
                                progress=not args.no_progress, refit=refit)
    print(outcome.text)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    return _run(args, "kfold:5", refit=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _run(args, "videval", refit=False)


def _cmd_predict(args: argparse.Namespace) -> int:
    from featbank.learning.workflow import predict_manifest

    preds = predict_manifest(args.manifest, args.bank, args.model, args.out, device=args.device,
                             weights=weights_policy(args), progress=not args.no_progress)
    print(f"wrote {len(preds)} predictions to {args.out}")
    return EXIT_ITEMS_FAILED if preds.drop(columns="video_id").isna().any(axis=None) else 0
