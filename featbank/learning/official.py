"""Official track scores: the number each organiser's leaderboard prints, computed the same way.

A track TOML names its score (``score = "kvq_final"``); :data:`SCORES` maps that name to the code.
:func:`official_scores` is the one entry point: labels and predictions in, a per-target table and
the track's aggregate out. It refuses input a leaderboard would refuse (missing, duplicate or NaN
predictions, labels outside the track's range, pairs naming unknown items) with
:class:`~featbank.errors.SubmissionError` (exit 2), never with a silent NaN.

Scores (see the README section "Official scores and submissions" for sources and choices):

* ``main_score_poly3``: (|SRCC| + |PLCC|)/2, PLCC after a cubic p -> MOS. XGC 2025, AIGC 2024.
* ``main_score_logistic4``: the same with the VQEG 4-parameter logistic (VIDEVAL-style benchmarks).
* ``xgc_ugc``: ``main_score_poly3`` of each FineVD dimension, averaged over all six.
* ``kvq_final``: 0.45·SROCC + 0.45·PLCC + 0.05·Rank1 + 0.05·Rank2 with raw SROCC/PLCC, as the
  organisers' ``metric_score.py`` computes them; Rank1/Rank2 from the organisers' pair file when
  given, else from every labelled pair (homologous = same ``group``), ties in the labels excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from featbank.errors import SubmissionError
from featbank.io.submission import by_item_id, item_list
from featbank.learning import metrics

if TYPE_CHECKING:
    from featbank.io.tracks import Track
    from featbank.learning.results import Evaluation

MAX_PAIRS = 1_000_000
"""Above this many candidate pairs of one kind, a seeded uniform sample of this size is scored.

The standard error of an accuracy measured on m pairs is at most 0.5/sqrt(m) = 0.0005 here; with
weight 0.05 in ``kvq_final`` that is under 0.00003, below the four decimals leaderboards print.
KVQ itself never samples: its test set (854 items) has 364,231 pairs, its validation set 87,990."""

PAIR_SEED = 0
"""Seed of that sample, so a score is reproducible run to run."""

ScoreFunction = Callable[
    [pd.DataFrame, pd.DataFrame, "pd.Series | None", "pd.DataFrame | None"], tuple[pd.DataFrame, float]
]


@dataclass(frozen=True)
class OfficialScore:
    """One leaderboard's formula: ``compute(labels, predictions, groups, pairs) -> (table, value)``."""

    name: str
    description: str
    compute: ScoreFunction


def _per_target(plcc: Callable[[np.ndarray, np.ndarray], float]) -> ScoreFunction:
    """(|SRCC| + |PLCC|)/2 for every target column, averaged: the NTIRE MainScore family."""

    def compute(labels, predictions, groups, pairs):
        rows = {}
        for target in labels.columns:
            y, p = labels[target].to_numpy(), predictions[target].to_numpy()
            s, c = metrics.srcc(y, p), plcc(y, p)
            rows[target] = {"srcc": s, "plcc": c, "score": (abs(s) + abs(c)) / 2.0, "n": len(y)}
        table = pd.DataFrame.from_dict(rows, orient="index")
        return table, float(table["score"].mean())

    return compute


def _xgc_ugc(labels, predictions, groups, pairs):
    missing = [d for d in metrics.XGC_UGC_DIMENSIONS if d not in labels.columns]
    if missing:
        raise SubmissionError(f"xgc_ugc averages all six FineVD dimensions; missing {', '.join(missing)}")
    columns = list(metrics.XGC_UGC_DIMENSIONS)
    table, _ = _per_target(metrics.plcc_poly3)(labels[columns], predictions[columns], groups, pairs)
    return table, metrics.xgc_ugc(table["score"].to_dict())


def _kvq_final(labels, predictions, groups, pairs):
    (target,) = labels.columns  # the track has one MOS column; load_track keeps it that way
    y, p = labels[target], predictions[target]
    if pairs is None:
        if groups is None:
            raise SubmissionError("kvq_final needs Rank1 (homologous pairs): give the organisers' pair file "
                                  "(--pairs) or a 'group' column naming each item's source content")
        pairs = labelled_pairs(y, groups)
    row: dict[str, float] = {"srocc": metrics.srcc(y.to_numpy(), p.to_numpy()),
                             "plcc": metrics.plcc(y.to_numpy(), p.to_numpy())}
    for column, homologous in (("rank1", True), ("rank2", False)):
        kind = pairs[pairs["homologous"] == homologous]
        if kind.empty:
            raise SubmissionError(f"no {'homologous' if homologous else 'non-homologous'} pairs to compute "
                                  f"{column} (are all groups single items or all labels tied?)")
        first, second = p.index.get_indexer(kind["first"]), p.index.get_indexer(kind["second"])
        row[column] = metrics.ranking_accuracy(p.to_numpy()[first], p.to_numpy()[second],
                                               kind["first_better"].to_numpy())
        row[f"pairs_{column}"] = len(kind)
    row["score"] = metrics.kvq_final(row["srocc"], row["plcc"], row["rank1"], row["rank2"])
    row["n"] = len(y)
    table = pd.DataFrame.from_dict({target: row}, orient="index")
    return table, float(row["score"])


SCORES: dict[str, OfficialScore] = {
    score.name: score
    for score in (
        OfficialScore("main_score_poly3", "(|SRCC| + |PLCC after a cubic p -> MOS|) / 2, mean over targets",
                      _per_target(metrics.plcc_poly3)),
        OfficialScore("main_score_logistic4", "(|SRCC| + |PLCC after the VQEG 4-parameter logistic|) / 2",
                      _per_target(metrics.plcc_logistic4)),
        OfficialScore("xgc_ugc", "mean of the six FineVD per-dimension main_score_poly3", _xgc_ugc),
        OfficialScore("kvq_final", "0.45 SROCC + 0.45 PLCC + 0.05 Rank1 + 0.05 Rank2 (raw SROCC, PLCC)",
                      _kvq_final),
    )
}
"""Official score name (as a track TOML writes it) -> formula."""


def labelled_pairs(labels: pd.Series, groups: pd.Series, max_pairs: int = MAX_PAIRS,
                   seed: int = PAIR_SEED) -> pd.DataFrame:
    """Every pair of items with different labels, split into homologous (same group) and not.

    Used when the organisers' pair file is not at hand. Pairs list items in ``labels`` order;
    tied labels carry no order and are left out; items without a group are in no homologous pair.
    A kind with more than ``max_pairs`` candidates is sampled uniformly (seeded, see
    :data:`MAX_PAIRS`). Returns the pair-table layout :func:`official_scores` takes.
    """
    ids = labels.index.to_numpy()
    y = labels.to_numpy(dtype=np.float64)
    group = groups.reindex(labels.index).to_numpy(dtype=object)
    rng = np.random.default_rng(seed)
    known = ~pd.isna(group)
    homologous = [members.to_numpy()[np.stack(np.triu_indices(len(members), 1))]
                  for _, members in pd.Series(np.flatnonzero(known)).groupby(group[known]) if len(members) > 1]
    same = np.concatenate(homologous, axis=1) if homologous else np.empty((2, 0), dtype=np.int64)
    n = len(ids)
    if n * (n - 1) // 2 <= max_pairs + same.shape[1]:
        every = np.stack(np.triu_indices(n, 1))
    else:  # i.i.d. draws (with replacement, so still an unbiased sample), written i < j
        draw = rng.integers(0, n, size=(2, int(max_pairs * 1.2)))
        every = np.sort(draw[:, draw[0] != draw[1]], axis=0)
    different = every[:, ~(known[every[0]] & known[every[1]] & (group[every[0]] == group[every[1]]))]
    kinds = []
    for pairs, is_homologous in ((same, True), (different, False)):
        if pairs.shape[1] > max_pairs:
            pairs = pairs[:, rng.choice(pairs.shape[1], max_pairs, replace=False)]
        pairs = pairs[:, y[pairs[0]] != y[pairs[1]]]
        kinds.append(pd.DataFrame({"first": ids[pairs[0]], "second": ids[pairs[1]],
                                   "first_better": y[pairs[0]] > y[pairs[1]], "homologous": is_homologous}))
    return pd.concat(kinds, ignore_index=True)


def _aligned(track: Track, labels_df: pd.DataFrame, predictions_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels and predictions of the track's targets on the labelled items, or a SubmissionError."""
    labels, predictions = by_item_id(labels_df, "the labels"), by_item_id(predictions_df, "the predictions")
    targets = list(track.labels)
    for what, table in (("labels", labels), ("predictions", predictions)):
        absent = [t for t in targets if t not in table.columns]
        if absent:
            raise SubmissionError(f"the {what} lack column(s) {', '.join(absent)} (track {track.name} scores "
                                  f"{', '.join(targets)})")
    labels = labels[targets].apply(pd.to_numeric, errors="coerce")
    unlabelled = labels.index[labels.isna().any(axis=1)]
    if len(unlabelled):
        raise SubmissionError(f"{len(unlabelled)} item(s) have no numeric label: {item_list(unlabelled)}")
    if track.range is not None:
        low, high = track.range
        outside = labels.index[((labels < low) | (labels > high)).any(axis=1)]
        if len(outside):
            raise SubmissionError(f"{len(outside)} label(s) outside track {track.name}'s range [{low:g}, {high:g}]: "
                                  f"{item_list(outside)}")
    missing = labels.index.difference(predictions.index, sort=False)
    if len(missing):
        raise SubmissionError(f"the predictions miss {len(missing)} labelled item(s): {item_list(missing)}")
    predictions = predictions.loc[labels.index, targets].apply(pd.to_numeric, errors="coerce")
    holes = predictions.index[~np.isfinite(predictions.to_numpy(dtype=np.float64)).all(axis=1)]
    if len(holes):
        raise SubmissionError(f"{len(holes)} prediction(s) are NaN, infinite or not numbers: {item_list(holes)}")
    return labels, predictions


def _checked_pairs(pairs: pd.DataFrame, labelled: pd.Index) -> pd.DataFrame:
    pairs = pairs.astype({"first": str, "second": str})
    unknown = pd.Index(pd.concat([pairs["first"], pairs["second"]]).unique()).difference(labelled)
    if len(unknown):
        raise SubmissionError(f"the pair file names {len(unknown)} item(s) not in the labels: {item_list(unknown)}")
    return pairs


def official_scores(track: Track | str, labels_df: pd.DataFrame, predictions_df: pd.DataFrame,
                    groups: pd.Series | None = None, pairs: pd.DataFrame | None = None,
                    ) -> tuple[pd.DataFrame, float]:
    """Score predictions as the track's organisers do: ``(per-target table, aggregate value)``.

    ``labels_df`` and ``predictions_df`` are indexed by item id (or carry a ``video_id`` column)
    and hold one column per track label; extra predicted items are ignored, extra columns too.
    ``groups`` (item id -> source content / prompt) defaults to a ``group`` column of
    ``labels_df``; only ``kvq_final`` uses it. ``pairs`` has columns ``first``, ``second``,
    ``first_better`` (bool) and ``homologous`` (bool), as :func:`featbank.io.submission.read_pairs`
    returns the organisers' pair file; without it ``kvq_final`` uses :func:`labelled_pairs`.

    The table has one row per target and at least ``srcc``/``srocc``, ``plcc``, ``score`` and
    ``n``; ``kvq_final`` adds ``rank1``, ``rank2`` and their pair counts.
    """
    if isinstance(track, str):
        from featbank.io.tracks import load_track

        track = load_track(track)
    labels, predictions = _aligned(track, labels_df, predictions_df)
    if groups is None and "group" in labels_df.columns:
        groups = by_item_id(labels_df, "the labels")["group"]
    if groups is not None:
        groups = groups.copy()
        groups.index = groups.index.astype(str)
    if pairs is not None:
        pairs = _checked_pairs(pairs, labels.index)
    return SCORES[track.score].compute(labels, predictions, groups, pairs)


def evaluation_scores(track: Track, evaluation: Evaluation, sample_ids: np.ndarray,
                      groups: np.ndarray | None = None, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The track's official score of every model in every round of an evaluation.

    One row per (round, model, target) with the per-target parts (``srcc``/``srocc``, ``plcc``,
    ``rank1`` …) and one row per (round, model) whose ``target`` is the score's name, holding the
    track's aggregate. A round is scored on its held-out samples only; a pair file is restricted
    to the pairs whose two items are both in the round.
    """
    missing = [t for t in track.labels if t not in evaluation.targets]
    if missing:
        raise SubmissionError(f"track {track.name}'s {track.score} needs predictions of {', '.join(track.labels)}; "
                              f"this run fitted {', '.join(evaluation.targets)} (missing {', '.join(missing)})")
    ids = np.asarray(sample_ids).astype(str)
    group_of = None if groups is None else pd.Series(np.asarray(groups), index=ids)
    wide = evaluation.predictions.pivot_table(index=["round", "model", "sample"], columns="target",
                                              values=["y_true", "y_pred"]).reset_index()
    rows = []
    for (rnd, model), part in wide.groupby(["round", "model"], sort=False):
        index = pd.Index(ids[part["sample"].to_numpy()])
        labels = pd.DataFrame({t: part[("y_true", t)].to_numpy() for t in track.labels}, index=index)
        predictions = pd.DataFrame({t: part[("y_pred", t)].to_numpy() for t in track.labels}, index=index)
        in_round = None if pairs is None else pairs[pairs["first"].astype(str).isin(index)
                                                    & pairs["second"].astype(str).isin(index)]
        table, value = official_scores(track, labels, predictions,
                                       None if group_of is None else group_of.loc[index], in_round)
        for target, parts in table.iterrows():
            rows.append({"round": rnd, "model": model, "target": target, **parts.to_dict()})
        rows.append({"round": rnd, "model": model, "target": track.score, "score": value})
    return pd.DataFrame(rows)


def official_summary(track: Track, scores: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Median (and population std) over rounds of the aggregate and every per-target score, per model.

    Models come in ``order`` (the engine's signed ranking), not by the official value: official
    scores may take absolute correlations, and choosing by them would let an inverted model win.
    """
    wide = scores.pivot_table(index=["round", "model"], columns="target", values="score").reset_index()
    columns = [track.score, *[t for t in track.labels if t != track.score and len(track.labels) > 1]]
    grouped = wide.groupby("model")[columns]
    table = pd.concat({"median": grouped.median(), "std": grouped.std(ddof=0)}, axis=1).swaplevel(axis=1)
    table.columns = [f"{c}_{s}" for c, s in table.columns]
    table = table[[f"{c}_{s}" for c in columns for s in ("median", "std")]]
    if track.score == "kvq_final":
        parts = scores[scores["target"] != track.score].groupby("model")[["srocc", "plcc", "rank1", "rank2"]]
        table = table.join(parts.median())
    table.insert(0, "rounds", wide.groupby("model").size())
    return table.reindex([m for m in order if m in table.index]).reset_index()
