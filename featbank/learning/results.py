"""What an evaluation produced: per-sample predictions, per-round scores, stack weights, one summary.

One result type serves ``fit`` and ``evaluate`` under every protocol, so both report, save and
choose models the same way. Spreads are population standard deviations (``ddof=0``, VIDEVAL's
``np.std``) over rounds, so they compare with published ones; a single round has no spread.

Choosing a model ("best", the scatter plot, ``fit`` without ``--stack``) uses the *signed*
selection score: MainScore takes |SRCC|, so a perfectly inverted predictor would otherwise look
as good as a perfect one. A model whose median SRCC is negative is flagged ``inverted``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from featbank.learning.metrics import METRICS
from featbank.learning.protocols import Protocol, Round, save_rounds, split_numbers

STACK = "stack"
"""Model name of the stacked ensemble in results."""

SELECTION = "selection"
"""Metric models are chosen by: MainScore (PLCC after the cubic) carrying the sign of SRCC."""


@dataclass
class Evaluation:
    """Outcome of :func:`featbank.learning.engine.evaluate`.

    ``predictions``: one row per (round, target, model, scored sample): round, split, fold, target,
    model, sample, y_true, y_pred. ``scores``: one row per (round, target, model) with every metric
    of :func:`featbank.learning.metrics.score`, over the round's scored samples (pooled over the
    folds of a k-fold repeat). ``stack_weights``: per (round, target) the meta-learner's intercept
    and weight per base (pooled rounds: fitted on the round's full out-of-fold matrix);
    ``split_stack_weights`` the same per split (the meta-learner each test fold was blended with).
    ``split_models``: (split, target, base) -> the base fitted on that split's training part, kept
    only when asked (``keep_models``), for an ensemble of the split models.
    """

    protocol: Protocol
    rounds: list[Round]
    n: int
    targets: list[str]
    bases: list[str]
    stacked: bool
    grouped: bool
    predictions: pd.DataFrame
    scores: pd.DataFrame
    stack_weights: pd.DataFrame
    split_stack_weights: pd.DataFrame = field(default_factory=pd.DataFrame)
    split_models: dict[tuple[int, str, str], Any] = field(default_factory=dict)
    stack_mode: str = "nested"
    reduce: str | None = None
    """The ``--reduce`` every pooled base's preprocessing ended with (``"pca:128"``), None for none."""

    @property
    def n_splits(self) -> int:
        return len(split_numbers(self.rounds))

    def describe(self) -> str:
        """What was run, in one sentence, for reports and consoles."""
        grouping = ", grouped by `group`" if self.grouped else ""
        stack = ""
        if self.stacked and self.stack_mode == "oof" and any(r.pooled for r in self.rounds):
            stack = ("; the stack's meta-learner is trained on the other folds' out-of-fold predictions "
                     "(stack mode `oof`: cheaper, slightly optimistic)")
        elif self.stacked and self.stack_mode == "ring":
            stack = ("; the stack's meta-learner is trained on two inner folds of each training part only "
                     "(stack mode `ring`)")
        elif self.stacked:
            stack = "; the stack's meta-learner is trained on inner folds of each training part only"
        reduce = (f"; every fit projects the pooled features on a PCA fitted on its training part (`{self.reduce}`)"
                  if self.reduce else "")
        return (f"protocol `{self.protocol.spec}`: {self.protocol.describe()}{grouping} — "
                f"{len(self.rounds)} round(s), {self.n_splits} split(s), {self.n} samples{stack}{reduce}")

    def summary(self) -> pd.DataFrame:
        """Median and std over rounds of every metric per (target, model), best first per target.

        Columns: target, model, rounds, ``<metric>_median``, ``_std`` and ``_mean`` for every metric
        (the signed ``selection`` score included), then ``inverted`` (median SRCC below zero).
        """
        table = self.scores
        metrics = list(METRICS)
        grouped = table.groupby(["target", "model"], sort=False)[metrics]
        stats = pd.concat({"median": grouped.median(), "std": grouped.std(ddof=0), "mean": grouped.mean()},
                          axis=1).swaplevel(axis=1)
        stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
        stats = stats[[f"{m}_{s}" for m in metrics for s in ("median", "std", "mean")]]
        stats.insert(0, "rounds", table.groupby(["target", "model"], sort=False).size())
        stats = stats.reset_index()
        stats["inverted"] = stats["srcc_median"] < 0
        order = {t: i for i, t in enumerate(self.targets)}
        stats = stats.sort_values(
            ["target", f"{SELECTION}_median"], ascending=[True, False], kind="stable",
            key=lambda col: col.map(order) if col.name == "target" else col,
        )
        return stats.reset_index(drop=True)

    def best_base(self, target: str) -> str:
        """The base model with the highest median signed selection score on ``target``."""
        summary = self.summary()
        rows = summary[(summary["target"] == target) & (summary["model"] != STACK)]
        return str(rows["model"].iloc[0])

    def mean_stack_weights(self, target: str) -> tuple[dict[str, float], float]:
        """The rounds' meta-learners averaged (a linear blend, so this averages the blends)."""
        rows = self.stack_weights[self.stack_weights["target"] == target]
        return {b: float(rows[b].mean()) for b in self.bases}, float(rows["intercept"].mean())

    def save(self, directory: str | Path, sample_ids: np.ndarray | None = None) -> None:
        """Write predictions.csv, scores.csv, summary.csv, splits.npz, run.json (and stack_weights.csv).

        ``sample_ids`` (e.g. the manifest's video ids of the samples) adds a ``video_id`` column
        to the predictions.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        predictions = self.predictions
        if sample_ids is not None:
            predictions = predictions.assign(video_id=np.asarray(sample_ids)[predictions["sample"].to_numpy()])
        predictions.to_csv(directory / "predictions.csv", index=False)
        self.scores.to_csv(directory / "scores.csv", index=False)
        self.summary().to_csv(directory / "summary.csv", index=False)
        if self.stacked:
            self.stack_weights.to_csv(directory / "stack_weights.csv", index=False)
        save_rounds(directory / "splits.npz", self.protocol, self.rounds, self.n)
        run = {"protocol": self.protocol.spec, "description": self.describe(), "targets": self.targets,
               "bases": self.bases, "stacked": self.stacked, "stack_mode": self.stack_mode,
               "reduce": self.reduce, "rounds": len(self.rounds),
               "splits": self.n_splits, "samples": self.n}
        (directory / "run.json").write_text(json.dumps(run, indent=2))


@dataclass
class Official:
    """A track's official score of an evaluation: per round, model and target, and summarised."""

    track: str
    score: str
    scores: pd.DataFrame
    summary: pd.DataFrame

    def save(self, directory: str | Path) -> None:
        """Write ``official.csv`` (every round) and ``official_summary.csv``."""
        self.scores.to_csv(Path(directory) / "official.csv", index=False)
        self.summary.to_csv(Path(directory) / "official_summary.csv", index=False)

