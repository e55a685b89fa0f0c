"""The ``score`` command: any submission, scored against labels as the track's leaderboard scores it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """\
examples:
  featbank score --track thqa --labels thqa_ntire_val.csv --predictions baseline_example.zip
  featbank score --track kvq --labels truth.csv --predictions submission.zip --pairs rank-pair-val.xlsx
  featbank score --track finevd --labels val.csv --predictions preds.csv --json

exit codes: 0 scored · 2 bad input (unknown track; a submission missing items, with duplicates or
            NaN; a pair file naming unknown items; labels out of the track's range)
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser(
        "score", help="score a submission (CSV or the organiser's zip) with the track's official score",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Print the number the track's leaderboard would print, first, then the per-target "
                    "table behind it. The track names its score (see `featbank tracks`): "
                    "main_score_poly3, main_score_logistic4, xgc_ugc or kvq_final.")
    p.add_argument("--track", required=True, help="challenge track (see `featbank tracks`)")
    p.add_argument("--labels", type=Path, required=True,
                   help="ground truth: a manifest-style CSV (video_id + label columns) or the organiser's "
                        "label file (first column the name, e.g. Video,Score); a 'group' column feeds "
                        "KVQ's homologous pairs")
    p.add_argument("--predictions", type=Path, required=True,
                   help="the submission: the organiser's zip, or its text / a CSV with one value column "
                        "per track label")
    p.add_argument("--pairs", type=Path,
                   help="KVQ ranking pairs: the organisers' workbook (sheets source/nonsource) or a CSV "
                        "video1,video2,rank,kind; without it every labelled pair is used")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(handler=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    from featbank.io.submission import read_labels, read_pairs, read_submission
    from featbank.io.tracks import load_track
    from featbank.learning.official import official_scores

    track = load_track(args.track)
    labels = read_labels(track, args.labels)
    predictions = read_submission(track, args.predictions)
    pairs = read_pairs(args.pairs) if args.pairs else None
    table, value = official_scores(track, labels, predictions, pairs=pairs)
    if args.json:
        print(json.dumps({"track": track.name, "score": track.score, "value": value,
                          "targets": table.to_dict(orient="index")}, indent=2))
        return 0
    print(f"{track.score} = {value:.4f}   (track {track.name}, {int(table['n'].iloc[0])} items)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0
