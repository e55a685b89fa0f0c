"""Learning commands: cross-validated fits, protocol evaluation, and prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from featbank.cli.options import (
    add_bank,
    add_fit_options,
    add_track,
    add_weights,
    checked_manifest,
    csv_list,
    protocol_epilog,
    protocol_spec,
    spec_list,
    weights_policy,
)
from featbank.errors import UsageError


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
    p.add_argument("--ensemble", choices=["refit", "mean"], default="refit",
                   help="final model: refit every base on all rows (default), or keep the model of every "
                        "split and predict their mean (e.g. --protocol random:10 --ensemble mean, the podium "
                        "systems' ten-split average; predict then also writes each item's spread)")
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
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output directory")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", help="score a manifest with a fitted model; writes a submission file",
                       description="Extracts whatever features the model needs and the bank lacks, then "
                                   "writes one row per item: a CSV video_id,<targets>, or with --track the "
                                   "file that track's server accepts. A submission never goes out with "
                                   "holes: items without features stop it (exit 6, listed) unless "
                                   "--fill-missing says how to fill them.",
                       epilog="examples:\n"
                              "  featbank predict --manifest test.csv --model runs/fit/model --out sub.csv\n"
                              "  featbank predict --manifest thqa_test.csv --model runs/fit/model "
                              "--track thqa --out submission.zip",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, type=Path, help="items to score (labels not needed)")
    p.add_argument("--model", required=True, type=Path, help="the model directory written by `fit`")
    p.add_argument("--out", required=True, type=Path, help="submission file to write (.zip for zipped layouts)")
    p.add_argument("--track", default=None, help="write the track's submission layout (see `featbank tracks`)")
    p.add_argument("--fill-missing", choices=["median"], default=None,
                   help="fill items without features with the median prediction of the others (they are "
                        "listed and the exit code is still 6); default: refuse to write")
    add_bank(p)
    add_weights(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_predict)


def _add_learning_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, type=Path, help="manifest with label columns")
    p.add_argument("--features", required=True, type=spec_list,
                   help="feature blocks, comma-separated: extractor or imported names, exact bank keys, "
                        "or A+B to join groups into one matrix")
    p.add_argument("--targets", type=csv_list, default=None,
                   help="label columns (default: the track's labels, else every label column)")
    add_bank(p)
    add_track(p)
    p.add_argument("--pairs", type=Path, default=None, metavar="FILE",
                   help="with --track kvq: the organisers' pair file for Rank1/Rank2 (default: every "
                        "labelled pair, homologous = same `group`)")
    add_fit_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace, default_protocol: str, refit: bool) -> int:
    from featbank.io.submission import read_pairs
    from featbank.learning.workflow import evaluate_manifest

    manifest, track = checked_manifest(args.manifest, args.track)
    targets = args.targets or (list(track.labels) if track else None)
    if args.pairs is not None and track is None:
        raise UsageError("--pairs scores a track's ranking accuracy: give --track too")
    outcome = evaluate_manifest(manifest, args.bank, args.features, targets, args.learners,
                                protocol=protocol_spec(args, default_protocol), stack=args.stack,
                                out_dir=args.out, seed=args.seed, n_jobs=args.jobs,
                                progress=not args.no_progress, refit=refit, track=track,
                                pairs=None if args.pairs is None else read_pairs(args.pairs),
                                ensemble=getattr(args, "ensemble", "refit"), stack_mode=args.stack_mode,
                                device=args.device, reduce=args.reduce)
    print(outcome.text)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    return _run(args, "kfold:5", refit=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _run(args, "videval", refit=False)


def _cmd_predict(args: argparse.Namespace) -> int:
    from featbank.io.tracks import load_track
    from featbank.learning.workflow import predict_manifest

    track = load_track(args.track) if args.track else None
    preds = predict_manifest(args.manifest, args.bank, args.model, args.out, device=args.device,
                             weights=weights_policy(args), progress=not args.no_progress, track=track,
                             fill_missing=args.fill_missing)
    print(f"wrote {len(preds)} predictions to {args.out}" + (f" ({track.layout} layout)" if track else ""))
    return 0
