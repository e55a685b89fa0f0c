"""The ``featbank`` command line: extract → fit → predict, plus bank inspection and the demo.

Exit codes: 0 success · 1 error · 2 invalid manifest or usage · 3 bank problem ·
4 missing/mismatching weights · 6 run completed but some items failed (recorded in the bank) ·
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from featbank import __version__
from featbank.errors import FeatbankError

EXIT_ITEMS_FAILED = 6
DEFAULT_BANK = os.environ.get("FEATBANK_BANK", "featbank.zarr")

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


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_bank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bank", default=DEFAULT_BANK,
                   help="Zarr feature bank: a directory or an fsspec URL such as s3://bucket/bank.zarr "
                        "(default: $FEATBANK_BANK or ./featbank.zarr)")


def _add_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=None,
                   help="check the manifest against a challenge track first (see `featbank tracks`)")


def _add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device for deep extractors (cpu, cuda, cuda:1)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="directory of pretrained checkpoints (default: $FEATBANK_WEIGHTS; the torch-hub "
                        "and Hugging Face caches are searched too); see `featbank weights list`")
    p.add_argument("--random-weights", action="store_true",
                   help="build deep extractors with seeded RANDOM weights instead of checkpoints: for "
                        "dry runs and tests only; recorded in the bank, in groups of their own")
    p.add_argument("--accept-non-commercial", action="store_true",
                   help="confirm this is non-commercial research, as some checkpoints' licences require")


def _weights_policy(args: argparse.Namespace):
    from featbank.extraction.weights import WeightsPolicy, weights_dir

    return WeightsPolicy(directory=weights_dir(args.weights_dir), random=args.random_weights,
                         accept_non_commercial=args.accept_non_commercial)


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    from regressors import LEARNERS

    p.add_argument("--learners", type=_csv, default=["svr", "elasticnet", "lightgbm", "mlp"],
                   help=f"base learners, comma-separated, from: {', '.join(LEARNERS)} "
                        "(default: svr,elasticnet,lightgbm,mlp)")
    p.add_argument("--folds", type=int, default=5, help="k of k-fold CV (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="repeat k-fold with new seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and learners")
    p.add_argument("--stack", action="store_true",
                   help="fit a non-negative linear meta-learner on out-of-fold predictions "
                        "(scored with nested folds, so the reported stack score does not leak)")
    p.add_argument("--jobs", type=int, default=-1, help="parallel fits (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    import extractors

    parser = argparse.ArgumentParser(
        prog="featbank", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Decode each video once, bank frozen features in Zarr, and fit regressor "
                    "stacks scored the way quality-assessment challenges score them.")
    parser.add_argument("--version", action="version", version=f"featbank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("extract", help="extract features of a manifest's items into the bank",
                       description="Decode each item once and run every requested extractor on it. "
                                   "Only missing rows are computed, so re-running resumes a killed run.")
    p.add_argument("--manifest", required=True, type=Path, help="CSV/Parquet manifest")
    p.add_argument("--extractor", required=True, type=_csv,
                   help=f"comma-separated extractors: {', '.join(extractors.available())}")
    _add_bank(p)
    _add_track(p)
    _add_weights(p)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask.distributed scheduler to run on (tcp://host:8786); default: a local "
                        "cluster sized to this machine (one worker per GPU with --device cuda)")
    p.add_argument("--workers", type=int, default=None,
                   help="workers of the local cluster (default: CPU cores, or GPUs with --device "
                        "cuda); 0 runs in this process without dask")
    p.add_argument("--retry-failed", action="store_true", help="also redo items that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("fit", help="cross-validate and fit regressors on banked features",
                       description="k-fold CV (grouped by the manifest's `group` column when present), "
                                   "out-of-fold predictions per feature group and learner, optional "
                                   "stacking, per-target report, and final models fitted on all rows.")
    p.add_argument("--manifest", required=True, type=Path, help="manifest with label columns")
    p.add_argument("--features", required=True, type=_csv,
                   help="feature groups, comma-separated extractor names or exact bank keys")
    p.add_argument("--targets", type=_csv, default=None,
                   help="label columns to fit (default: the track's labels, else every label column)")
    _add_bank(p)
    _add_track(p)
    _add_fit_options(p)
    p.add_argument("--out", type=Path, default=Path("runs/fit"), help="output directory (default runs/fit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="score learners and the stack under a named, reproducible protocol",
                       description="Fits every (feature group x learner) base model, and with --stack their "
                                   "blend, on each split of a protocol and scores the held-out part: "
                                   "medians and spread over splits, side by side. Hyper-parameters are "
                                   "chosen inside training parts only; the split indices are saved.",
                       epilog="protocols:\n"
                              "  videval[:N]       VIDEVAL's N (100) random 80/20 splits, seeds ceil(8.8 i)\n"
                              "  kfold[:K[xR]]     K-fold (5), repeated R times, grouped by `group` if present\n"
                              "  holdout:COL=VAL   train where column COL equals VAL, score the rest (NTIRE)\n"
                              "learner svr_grid is VIDEVAL's RBF-SVR with its inner 80/20 grid search.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, type=Path, help="manifest with label columns")
    p.add_argument("--features", required=True, type=_csv, help="feature groups, comma-separated")
    p.add_argument("--targets", type=_csv, default=None, help="label columns (default: all)")
    p.add_argument("--protocol", default="videval", help="see below (default videval, 100 splits)")
    _add_bank(p)
    _add_fit_options(p)
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", help="score a manifest with a fitted model; writes a submission CSV",
                       description="Extracts whatever features the model needs and the bank lacks, "
                                   "then writes one row per item: video_id and one column per target.")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="the model directory written by `fit`")
    p.add_argument("--out", required=True, type=Path, help="submission CSV to write")
    _add_bank(p)
    _add_weights(p)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "weights", help="list, verify and import the pretrained checkpoints deep extractors read",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="featbank never downloads weights. Each deep extractor names its checkpoint file, the\n"
                    "SHA-256 it must have (published upstream, or pinned here on import), its source and\n"
                    "licence. Files are looked up in --weights-dir ($FEATBANK_WEIGHTS), then in the\n"
                    "torch-hub and Hugging Face caches.",
        epilog="examples:\n"
               "  featbank weights list\n"
               "  featbank weights import ~/Downloads/SLOWFAST_8x8_R50.pyth --weights-dir ~/weights\n"
               "  featbank weights import ~/snapshots/one-align   # a snapshot folder (qalign): copied whole\n"
               "  featbank weights verify --extractor slowfast,timm:convnext_base --load")
    p.add_argument("action", choices=["list", "verify", "import"])
    p.add_argument("path", nargs="?", type=Path, help="with `import`: the checkpoint file (or snapshot folder) to import")
    p.add_argument("--extractor", type=_csv, default=None,
                   help="extractors to consider (default: every registered one with weights; "
                        "timm backbones must be named, e.g. timm:convnext_base)")
    p.add_argument("--weights-dir", type=Path, default=None, help="default: $FEATBANK_WEIGHTS")
    p.add_argument("--load", action="store_true",
                   help="with `verify`: also check each checkpoint's parameter names and shapes against "
                        "the architecture (a strict load on the CPU; qalign checks its shard headers)")

    p = sub.add_parser(
        "import", help="bring a feature set computed elsewhere (.mat, .h5, .npy/.npz, .csv, .parquet) into the bank",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import a feature matrix (one row per video) and its label file. The items become\n"
                    "imported items without media (path featbank-import://DATASET/ID in the manifest\n"
                    "written to --manifest-out); the matrix becomes the feature group NAME, so\n"
                    "`featbank fit --manifest M --features NAME` works as for extracted features.\n"
                    "Rows are matched by id when both files have one, else by order (counts must\n"
                    "agree). ±inf becomes NaN (imputed inside each fold); a row that is NaN\n"
                    "throughout is recorded as failed (exit 6). Re-importing the same file is a no-op.",
        epilog="""examples:
  # VIDEVAL features of KoNViD-1k (MATLAB, 1200x60) with their MOS; rows in the label file's order
  featbank import --features KONVID_1K_VIDEVAL_feats.mat --key feats_mat \\
      --labels KONVID_1K_metadata.csv --label-columns mos --id-column flickr_id \\
      --name videval --dataset konvid1k --manifest-out konvid_videval.csv
  # a second feature set of the same dataset lands on the same items: fit both together
  featbank import --features KONVID_1K_BRISQUE_feats.mat --labels KONVID_1K_metadata.csv \\
      --label-columns mos --id-column flickr_id --name brisque --dataset konvid1k --manifest-out konvid.csv
  featbank fit --manifest konvid.csv --features videval,brisque --targets mos
  # features and labels in one CSV (THQA): the label columns are never features
  featbank import --features vvmf_results_a01.csv --labels vvmf_results_a01.csv --id-column Image \\
      --label-columns Score --name thqa_vvmf --manifest-out thqa.csv
""")
    p.add_argument("--features", required=True, type=Path, metavar="FILE",
                   help="feature file: .mat (v5 or v7.3), .h5/.hdf5, .npy, .npz, .csv or .parquet")
    p.add_argument("--key", default=None, metavar="VAR",
                   help="variable (.mat), dataset path (.h5) or array (.npz) holding the matrix; "
                        "needed when the file holds several (the error lists them)")
    p.add_argument("--labels", required=True, type=Path, metavar="FILE",
                   help="label file (.csv or .parquet), one row per item; may be the feature file itself")
    p.add_argument("--id-column", default=None, metavar="C",
                   help="column of item ids: in a tabular feature file, and in the label file unless "
                        "--label-id-column says otherwise; without ids items are named by row number")
    p.add_argument("--label-id-column", default=None, metavar="C",
                   help="id column of the label file when it differs from --id-column")
    p.add_argument("--label-columns", type=_csv, default=None, metavar="A,B",
                   help="label columns, comma-separated (default: the label file's only numeric "
                        "column); other label-file columns are kept as meta_* in the manifest")
    p.add_argument("--group-column", default=None, metavar="C",
                   help="label-file column of source content ids, so CV folds never split a source")
    p.add_argument("--name", required=True, help="feature group name to use with --features in fit/export")
    p.add_argument("--dataset", default=None,
                   help="dataset the ids belong to (default: the label file's name); imports of the "
                        "same dataset share items, so their feature sets can be fitted together")
    p.add_argument("--manifest-out", required=True, type=Path, metavar="M.csv",
                   help="manifest to write (CSV, or Parquet by suffix) for fit / predict / export")
    _add_bank(p)

    p = sub.add_parser("export", help="write a manifest's features and labels to HDF5 or Parquet",
                       description="One row per manifest item (in manifest order) with its labels and the\n"
                                   "pooled features of each named group, exactly as banked (float32).\n"
                                   "Parquet columns are GROUP:FEATURE; HDF5 holds features/GROUP matrices\n"
                                   "with their feature names and provenance as attributes. Items whose\n"
                                   "extraction failed are kept with NaN features.",
                       epilog="example:\n  featbank export --manifest train.csv --features handcrafted,audio "
                              "--out train_features.parquet",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, type=Path, help="manifest whose items to export")
    p.add_argument("--features", required=True, type=_csv,
                   help="feature groups, comma-separated extractor / imported names or exact bank keys")
    p.add_argument("--out", required=True, type=Path, help="output file: .h5/.hdf5 or .parquet")
    _add_bank(p)

    p = sub.add_parser("check", help="validate a manifest (and its fit to a track) without doing any work",
                       description="Reads the manifest, checks every row (files, ids, labels, paths) and, "
                                   "with --track, the track's requirements; prints a summary. Exit 2 "
                                   "when anything is wrong, listing every offending line.")
    p.add_argument("--manifest", required=True, type=Path)
    _add_track(p)

    sub.add_parser("tracks", help="list the challenge tracks manifests can be checked against")

    p = sub.add_parser("info", help="what the bank holds")
    _add_bank(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--failures", action="store_true", help="list failed items and their errors")

    p = sub.add_parser("status", help="done / failed / pending per extractor, for a manifest or the bank",
                       description="Progress of extraction: for each feature group, how many items are "
                                   "done (ok), failed, absent (no such stream) or still pending. With "
                                   "--manifest, counts that manifest's items (unregistered ones are "
                                   "pending); safe to run while an extraction is writing.")
    _add_bank(p)
    p.add_argument("--manifest", type=Path, default=None, help="restrict the counts to this manifest")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("validate", help="check the bank's structure; exit 3 when broken")
    _add_bank(p)

    sub.add_parser("extractors", help="list the registered extractors")

    p = sub.add_parser("demo", help="synthesize a small distorted-video dataset and run the whole pipeline",
                       description="Needs no network, GPU or weights. Generates procedural clips with "
                                   "audio at graded distortion levels, extracts handcrafted+audio "
                                   "features, fits a stack for six targets, predicts a held-out set.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="working directory (default demo_out)")
    p.add_argument("--sources", type=int, default=12, help="distinct source clips (default 12)")
    p.add_argument("--variants", type=int, default=6, help="distorted variants per source (default 6)")
    p.add_argument("--learners", type=_csv, default=["svr", "elasticnet", "lightgbm", "mlp"])
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--no-progress", action="store_true")
    return parser


def _checked_manifest(path: Path, track_name: str | None):
    """Load and validate the manifest, and check it against ``track_name`` when given."""
    from featbank.io.manifest import load_manifest
    from featbank.io.tracks import load_track

    manifest = load_manifest(path)
    track = load_track(track_name) if track_name else None
    if track is not None:
        track.check(manifest)
    return manifest, track


def _cmd_extract(args: argparse.Namespace) -> int:
    from featbank.extraction.orchestrate import extract_manifest

    _checked_manifest(args.manifest, args.track)
    common = dict(device=args.device, weights=_weights_policy(args), retry_failed=args.retry_failed, progress=not args.no_progress)
    if args.workers == 0 and not args.scheduler:
        report = extract_manifest(args.manifest, args.bank, args.extractor, **common)
    else:
        from featbank.extraction.distributed import extract_distributed

        report = extract_distributed(args.manifest, args.bank, args.extractor, scheduler=args.scheduler,
                                     workers=args.workers, **common)
    print(f"{report.items} items, {report.already_done} already complete")
    for key, counts in report.counts.items():
        print(f"  {key}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for vid, key, err in report.failures:
        print(f"  FAILED {vid} [{key}]: {err.splitlines()[0]}", file=sys.stderr)
    return EXIT_ITEMS_FAILED if report.failures else 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from featbank.learning.workflow import fit_manifest

    _, track = _checked_manifest(args.manifest, args.track)
    targets = args.targets or (list(track.labels) if track else None)
    outcome = fit_manifest(args.manifest, args.bank, args.features, targets, args.learners,
                           n_splits=args.folds, repeats=args.repeats, seed=args.seed, stack=args.stack,
                           out_dir=args.out, n_jobs=args.jobs, progress=not args.no_progress)
    print(outcome.text)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from featbank.learning.workflow import evaluate_manifest

    outcome = evaluate_manifest(args.manifest, args.bank, args.features, args.targets, args.learners,
                                args.protocol, stack=args.stack, out_dir=args.out, seed=args.seed,
                                n_jobs=args.jobs, progress=not args.no_progress)
    print(outcome.text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from featbank.learning.workflow import predict_manifest

    preds = predict_manifest(args.manifest, args.bank, args.model, args.out, device=args.device,
                             weights=_weights_policy(args), progress=not args.no_progress)
    print(f"wrote {len(preds)} predictions to {args.out}")
    return EXIT_ITEMS_FAILED if preds.drop(columns="video_id").isna().any(axis=None) else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from featbank.io.importing import import_features

    report = import_features(args.bank, args.manifest_out, args.features, args.labels, args.name,
                             dataset=args.dataset, key=args.key, id_column=args.id_column,
                             label_columns=args.label_columns, label_id_column=args.label_id_column,
                             group_column=args.group_column)
    print(report.text)
    return EXIT_ITEMS_FAILED if report.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from featbank.io.exporting import export_features

    out = export_features(args.bank, args.manifest, args.features, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    manifest, track = _checked_manifest(args.manifest, args.track)
    table = manifest.table
    groups = manifest.groups
    print(f"{manifest.source}: {len(table)} items"
          + (f" in {groups.nunique()} groups" if groups is not None else " (no group column)")
          + (f", fits track {track.name}" if track else ""))
    labels = manifest.label_columns
    if labels:
        print(table[labels].astype("float64").describe().T[["mean", "std", "min", "max"]].to_string())
    return 0


def _cmd_tracks(args: argparse.Namespace) -> int:
    from featbank.io.tracks import available, example_manifest, load_track

    for name in available():
        track = load_track(name)
        needs = [what for what, flag in (("prompt", track.prompt), ("group", track.group)) if flag]
        print(f"{name:11s} {track.title}\n            {track.media}s; labels {', '.join(track.labels)}"
              + (f"; needs {', '.join(needs)}" if needs else "")
              + (f"; range {track.range[0]:g}-{track.range[1]:g}" if track.range else "")
              + f"\n            template: {example_manifest(name)}")
    return 0


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


def _cmd_status(args: argparse.Namespace) -> int:
    from featbank.bank.store import FeatureBank
    from featbank.bank.matrix import lookup_rows
    from featbank.io.manifest import load_manifest

    bank = FeatureBank(args.bank, mode="r")
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


def _cmd_validate(args: argparse.Namespace) -> int:
    from featbank.bank.store import FeatureBank

    problems = FeatureBank(args.bank, mode="r").validate()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"{args.bank}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 3 if problems else 0


def _cmd_extractors(args: argparse.Namespace) -> int:
    import extractors

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


def _cmd_weights(args: argparse.Namespace) -> int:
    from featbank.extraction.weights import weights_dir
    from featbank.extraction.weights_admin import import_checkpoint, list_weights, verify_weights

    directory = weights_dir(args.weights_dir)
    if args.action == "list":
        print(list_weights(args.extractor, directory))
        return 0
    if args.action == "import":
        if args.path is None:
            raise FeatbankError("`featbank weights import` needs the checkpoint PATH")
        print(import_checkpoint(args.path, args.extractor, directory))
        return 0
    text, ok = verify_weights(args.extractor, directory, load=args.load)
    print(text)
    return 0 if ok else 4


def _cmd_demo(args: argparse.Namespace) -> int:
    from featbank.demo.run import run_demo

    run_demo(args.out, n_sources=args.sources, variants=args.variants, learners=args.learners,
             n_jobs=args.jobs, progress=not args.no_progress)
    return 0


COMMANDS = {"extract": _cmd_extract, "fit": _cmd_fit, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
            "check": _cmd_check, "import": _cmd_import, "export": _cmd_export, "tracks": _cmd_tracks,
            "info": _cmd_info, "status": _cmd_status, "validate": _cmd_validate,
            "extractors": _cmd_extractors, "weights": _cmd_weights, "demo": _cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FeatbankError as exc:
        print(f"featbank {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("featbank: interrupted; committed rows are kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
