"""Data in and out: import foreign feature sets, export banked ones, check manifests, list tracks."""

from __future__ import annotations

import argparse
from pathlib import Path

from featbank.cli.options import (
    EXIT_ITEMS_FAILED,
    add_bank,
    add_track,
    checked_manifest,
    csv_list,
    spec_list,
)
from featbank.io.subsets import available_subsets, describe_subsets


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser(
        "import", help="bring a feature set computed elsewhere (.mat, .h5, .npy/.npz, .csv, .parquet) into the bank",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import a feature matrix (one row per video) and its label file. The items become\n"
                    "imported items without media (path featbank-import://DATASET/ID in the manifest\n"
                    "written to --manifest-out); the matrix becomes the feature group NAME, so\n"
                    "`featbank fit --manifest M --features NAME` works as for extracted features.\n"
                    "Rows are matched by id when both files have one, else by order (counts must\n"
                    "agree). ±inf becomes NaN (imputed inside each fold); a row that is NaN\n"
                    "throughout is recorded as failed (exit 6). Re-importing the same file is a no-op.\n"
                    "Without --labels (or with an id list that has no numeric column) the items are\n"
                    "unlabelled: the manifest serves predict and export; fit refuses it.",
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
  # VIDEVAL's YouTube-UGC numbers are on its colour videos: the published subset drops 57 of 1380
  featbank import --features YOUTUBE_UGC_VIDEVAL_feats.mat --labels YOUTUBE_UGC_metadata.csv \\
      --id-column vid --label-columns MOSFull --subset youtube_ugc_color \\
      --name videval --dataset youtube_ugc --manifest-out ugc_color.csv
  # THQA ids are PORTRAIT_SPEECH_GENERATOR (1_voice_en_35042678_ahead): group by portrait (20
  # groups of 40) so CV never has a face on both sides; import 5 of the 24 columns
  featbank import --features vvmf_results_a01.csv --labels vvmf_results_a01.csv --id-column Image \\
      --label-columns Score --group-from-id '^(\\d+)_' --feature-columns 'musiq-*,clipiqa*' \\
      --name thqa_iqa --manifest-out thqa_grouped.csv
  # an unlabelled test list for predict: no --labels, the ids kept are the challenge's list
  featbank import --features all_features.csv --id-column Video --exclude-columns 'meta_*' \\
      --keep-ids thqa_ntire_testlist.csv --name mine --dataset ntire --manifest-out test.csv

published subsets (--subset NAME; manifests/subsets/NAME.toml says where each list comes from):
""" + describe_subsets() + "\n")
    p.add_argument("--features", required=True, type=Path, metavar="FILE",
                   help="feature file: .mat (v5 or v7.3), .h5/.hdf5, .npy, .npz, .csv or .parquet")
    p.add_argument("--key", default=None, metavar="VAR",
                   help="variable (.mat), dataset path (.h5) or array (.npz) holding the matrix; "
                        "needed when the file holds several (the error lists them)")
    p.add_argument("--labels", default=None, type=Path, metavar="FILE",
                   help="label file (.csv or .parquet), one row per item; may be the feature file itself. "
                        "Optional: without it the feature file's rows (named by --id-column, else by "
                        "row number) are unlabelled items, for predict")
    p.add_argument("--id-column", default=None, metavar="C",
                   help="column of item ids: in a tabular feature file, and in the label file unless "
                        "--label-id-column says otherwise; without ids items are named by row number")
    p.add_argument("--label-id-column", default=None, metavar="C",
                   help="id column of the label file when it differs from --id-column")
    p.add_argument("--label-columns", type=csv_list, default=None, metavar="A,B",
                   help="label columns, comma-separated (default: the label file's only numeric "
                        "column); other label-file columns are kept as meta_* in the manifest")
    p.add_argument("--group-column", default=None, metavar="C",
                   help="label-file column of source content ids, so CV folds never split a source")
    p.add_argument("--group-from-id", default=None, metavar="REGEX",
                   help="derive the group from each item's id instead: the first capture group of REGEX "
                        "searched in it (anchor with ^), e.g. '^(\\d+)_' gives THQA's portrait; an id it "
                        "does not match is an error")
    p.add_argument("--feature-columns", type=csv_list, default=None, metavar="A,B",
                   help="feature columns to import, names or globs ('musiq-*'), comma-separated "
                        "(default: every column but the id, labels and group; .mat/.npy columns are f0, f1, ...)")
    p.add_argument("--exclude-columns", type=csv_list, default=None, metavar="A,B",
                   help="columns that are not features, names or globs ('meta_*'), e.g. a CSV's text "
                        "columns; they are kept in the manifest as meta_*")
    p.add_argument("--subset", default=None, choices=available_subsets(), metavar="NAME",
                   help="import only a published subset's items (listed below), matched by id, or by the "
                        "published row numbers when the items have no ids")
    p.add_argument("--keep-ids", default=None, type=Path, metavar="FILE",
                   help="import only these items: one id per line, or the first column of a CSV/Parquet "
                        "table (e.g. a challenge's test list); every listed id must be an item")
    p.add_argument("--drop-ids", default=None, type=Path, metavar="FILE",
                   help="leave these items out (same format as --keep-ids)")
    p.add_argument("--name", required=True, help="feature group name to use with --features in fit/export")
    p.add_argument("--dataset", default=None,
                   help="dataset the ids belong to (default: the label file's name, else the feature "
                        "file's); imports of the same dataset share items, so their feature sets can be "
                        "fitted together")
    p.add_argument("--manifest-out", required=True, type=Path, metavar="M.csv",
                   help="manifest to write (CSV, or Parquet by suffix) for fit / predict / export")
    add_bank(p)
    p.set_defaults(handler=_cmd_import)

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
    p.add_argument("--features", required=True, type=spec_list,
                   help="feature groups, comma-separated extractor / imported names or exact bank keys")
    p.add_argument("--out", required=True, type=Path, help="output file: .h5/.hdf5 or .parquet")
    add_bank(p)
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("check", help="validate a manifest (and its fit to a track) without doing any work",
                       description="Reads the manifest, checks every row (files, ids, labels, paths) and, "
                                   "with --track, the track's requirements; prints a summary. Exit 2 "
                                   "when anything is wrong, listing every offending line.")
    p.add_argument("--manifest", required=True, type=Path)
    add_track(p)
    p.set_defaults(handler=_cmd_check)

    p = sub.add_parser("tracks", help="list the challenge tracks manifests can be checked against")
    p.set_defaults(handler=_cmd_tracks)


def _cmd_import(args: argparse.Namespace) -> int:
    from featbank.io.importing import import_features

    report = import_features(args.bank, args.manifest_out, args.features, args.labels, args.name,
                             dataset=args.dataset, key=args.key, id_column=args.id_column,
                             label_columns=args.label_columns, label_id_column=args.label_id_column,
                             group_column=args.group_column, feature_columns=args.feature_columns,
                             exclude_columns=args.exclude_columns, group_from_id=args.group_from_id,
                             subset=args.subset, keep_ids=args.keep_ids, drop_ids=args.drop_ids)
    print(report.text)
    return EXIT_ITEMS_FAILED if report.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from featbank.io.exporting import export_features

    out = export_features(args.bank, args.manifest, args.features, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    manifest, track = checked_manifest(args.manifest, args.track)
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
              + f"\n            official score {track.score}; submission layout {track.layout}"
              + f"\n            template: {example_manifest(name)}")
    return 0
