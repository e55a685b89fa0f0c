"""Named, reproducible evaluation protocols: explicit train/test index splits, scored per split.

A published number is only comparable if the splits, the model selection and the metric are the
same, so a protocol here is data, not a loop: a list of (train, test, seed) index arrays that is
saved next to the scores (``splits.npz``) and can be reloaded to re-run or audit a result.

* :func:`videval`: VIDEVAL / UGC-VQA (Tu et al., TIP 2021): 100 random 80/20 splits,
  ``train_test_split(test_size=0.2, random_state=ceil(8.8 i))`` for i = 1..100, learners seeded
  with ``ceil(6.6 i)`` (svr_grid's inner selection split), medians over splits reported.
* :func:`grouped_kfold`: repeated (grouped) k-fold, every fold a split.
* :func:`holdout`: one fixed train/validation split, as NTIRE-style challenges score.

:func:`evaluate` fits every base learner (feature block x learner) on each split's training part
and scores it on the test part with :func:`featbank.learning.metrics.score` (PLCC after a logistic fitted
on the test part, as VIDEVAL). With ``stack=True`` a meta-learner blends the bases: its training
data are level-1 predictions of the *training* part from an inner k-fold (grouped when the
protocol is), so no label of the test part reaches the blend's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import RegressorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from featbank.learning.crossval import STACK, base_names, check_inputs, fit_meta, split_base, fold_ids
from featbank.errors import FeatbankError
from featbank.learning.metrics import METRICS, score
from regressors import make_learner

Progress = Callable[[int, int], None]

SUMMARY_METRICS: tuple[str, ...] = ("srcc", "krcc", "plcc_logistic", "rmse", "main_score")
"""Metrics in :meth:`EvalResult.summary` (VIDEVAL's four plus the challenge score)."""


@dataclass(frozen=True)
class Split:
    """One train/test partition. ``seed`` seeds the learners fitted on it."""

    train: np.ndarray
    test: np.ndarray
    seed: int


@dataclass
class Protocol:
    """A named list of splits over ``n`` samples; ``groups`` (if any) also groups a stack's inner folds."""

    name: str
    n: int
    splits: list[Split]
    groups: np.ndarray | None = None

    def save(self, path: str | Path) -> None:
        """Write every split's index arrays (and the groups) to one ``.npz`` file."""
        arrays: dict[str, np.ndarray] = {
            "name": np.array(self.name),
            "n": np.array(self.n),
            "seeds": np.array([s.seed for s in self.splits], dtype=np.int64),
        }
        for i, split in enumerate(self.splits):
            arrays[f"train_{i}"] = split.train
            arrays[f"test_{i}"] = split.test
        if self.groups is not None:
            arrays["groups"] = np.asarray(self.groups).astype(str)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Protocol:
        with np.load(path, allow_pickle=False) as data:
            seeds = data["seeds"]
            splits = [Split(data[f"train_{i}"], data[f"test_{i}"], int(seed)) for i, seed in enumerate(seeds)]
            groups = data["groups"] if "groups" in data else None
            return cls(str(data["name"]), int(data["n"]), splits, groups)


def videval(n: int, n_splits: int = 100) -> Protocol:
    """VIDEVAL's repeated 80/20 splits of ``n`` samples, with its seeds.

    ``math.ceil(8.8 * i)`` is evaluated in floating point exactly as the original script does
    (``8.8 * 25 = 220.00000000000003`` gives 221, not 220; 8 of the 100 seeds differ from exact
    decimal arithmetic this way), so the index sets are the published ones.
    Splitting ``arange(n)`` yields the same rows as splitting the feature matrix itself. Training
    indices keep ``train_test_split``'s shuffled order, on which svr_grid's inner split depends.
    """
    if n_splits < 1:
        raise FeatbankError(f"n_splits must be at least 1, got {n_splits}")
    splits = []
    for i in range(1, n_splits + 1):
        train, test = train_test_split(np.arange(n), test_size=0.2, random_state=math.ceil(8.8 * i))
        splits.append(Split(train, test, math.ceil(6.6 * i)))
    return Protocol("videval", n, splits)


def grouped_kfold(
    n: int, k: int = 5, repeats: int = 1, seed: int = 0, groups: np.ndarray | None = None
) -> Protocol:
    """Every fold of :func:`featbank.learning.crossval.fold_ids` as a split; repeat r's learners use ``seed + r``."""
    ids = fold_ids(n, k, repeats, seed, groups)
    splits = [
        Split(np.flatnonzero(row != f), np.flatnonzero(row == f), seed + r)
        for r, row in enumerate(ids)
        for f in range(k)
    ]
    return Protocol("grouped_kfold" if groups is not None else "kfold", n, splits, groups)


def holdout(train_mask: np.ndarray, seed: int = 0) -> Protocol:
    """One split: train where ``train_mask`` is true, score the rest (NTIRE train/validation)."""
    mask = np.asarray(train_mask, dtype=bool)
    if mask.ndim != 1 or mask.all() or not mask.any():
        raise FeatbankError("train_mask must be 1-d with both training and held-out samples")
    return Protocol("holdout", mask.size, [Split(np.flatnonzero(mask), np.flatnonzero(~mask), seed)])


# ---------------------------------------------------------------- fitting


def _inner_template(fitted: Pipeline) -> Pipeline:
    """Unfitted copy of a fitted pipeline for a stack's inner folds.

    Steps that chose hyper-parameters from their training data and can hand the choice over
    (``selected()``, e.g. svr_grid) are replaced by that choice: it came from the split's training
    part only, so inner folds reusing it see nothing of the test part.
    """
    template = clone(fitted)
    for name, step in fitted.steps:
        if hasattr(step, "selected"):
            template.set_params(**{name: step.selected()})
    return template


def _fit_base(
    X: np.ndarray, y: np.ndarray, split: Split, learner: str, inner: np.ndarray | None, reuse_selected: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Test-part predictions of one base learner, plus its inner-fold OOF predictions of the training part."""
    X_train, y_train = X[split.train], y[split.train]
    model = make_learner(learner, random_state=split.seed).fit(X_train, y_train)
    test_pred = model.predict(X[split.test])
    if inner is None:
        return test_pred, None
    template: RegressorMixin = _inner_template(model) if reuse_selected else model
    level1 = np.empty(len(y_train))
    for fold in range(int(inner.max()) + 1):
        held = inner == fold
        level1[held] = clone(template).fit(X_train[~held], y_train[~held]).predict(X_train[held])
    return test_pred, level1


# ---------------------------------------------------------------- results


@dataclass
class EvalResult:
    """Per-split scores of every base learner (and the stack) under one protocol.

    ``scores``: one row per (split, model) with every metric of :func:`featbank.learning.metrics.score`.
    ``predictions``: one row per (split, model, test sample): split, model, sample, y_true, y_pred.
    ``stack_weights``: one row per split, the meta-learner's intercept and weight per base.
    """

    protocol: Protocol
    scores: pd.DataFrame
    predictions: pd.DataFrame
    stack_weights: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> pd.DataFrame:
        """Median and std over splits per model, bases in input order then the stack.

        std is the population std (``ddof=0``), VIDEVAL's ``np.std``, so spreads compare with the
        published ones.
        """
        grouped = self.scores.groupby("model", sort=False)[list(SUMMARY_METRICS)]
        table = pd.concat(
            {"median": grouped.median(), "std": grouped.std(ddof=0)}, axis=1
        ).swaplevel(axis=1)
        table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
        ordered = [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("median", "std")]
        table = table[ordered]
        table.insert(0, "splits", self.scores.groupby("model", sort=False).size())
        return table.reset_index()

    def save(self, directory: str | Path) -> None:
        """Write ``scores.csv``, ``summary.csv``, ``splits.npz``, ``predictions.csv`` (and ``stack_weights.csv``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.scores.to_csv(directory / "scores.csv", index=False)
        self.predictions.to_csv(directory / "predictions.csv", index=False)
        self.summary().to_csv(directory / "summary.csv", index=False)
        self.protocol.save(directory / "splits.npz")
        if not self.stack_weights.empty:
            self.stack_weights.to_csv(directory / "stack_weights.csv", index=False)


def _inner_folds(protocol: Protocol, split: Split, k: int) -> np.ndarray:
    """Inner fold id of each training sample, seeded by the split (grouped if the protocol is).

    A grouped training part may hold fewer groups than ``k`` (k-fold over 5 sources leaves 4 in
    each training part); it then gets one inner fold per group, as many as are possible.
    """
    groups = None if protocol.groups is None else np.asarray(protocol.groups)[split.train]
    if groups is not None:
        k = min(k, len(np.unique(groups)))
    return fold_ids(len(split.train), k, 1, split.seed, groups)[0]


def _check_protocol(protocol: Protocol, n: int) -> None:
    if protocol.n != n:
        raise FeatbankError(f"protocol {protocol.name!r} is for {protocol.n} samples, the data have {n}")
    for i, split in enumerate(protocol.splits):
        if np.intersect1d(split.train, split.test).size:
            raise FeatbankError(f"split {i}: training and test indices overlap")


def evaluate(
    blocks: dict[str, np.ndarray],
    y: np.ndarray,
    protocol: Protocol,
    learners: Sequence[str],
    stack: bool = True,
    n_jobs: int = 1,
    inner_folds: int = 5,
    reuse_selected: bool = True,
    progress: Progress | None = None,
) -> EvalResult:
    """Score every ``block/learner`` base (and the stack) on every split of ``protocol``.

    Fits run in parallel with joblib over (split, base) tasks. The stack's meta-learner is
    :func:`featbank.learning.crossval.fit_meta` (non-negative least squares with intercept) trained on the
    inner-fold level-1 predictions of the split's training part, then applied to the test-part
    predictions of the bases refitted on the whole training part. ``reuse_selected`` lets
    svr_grid's inner-fold fits reuse the (C, gamma) its outer fit chose on the training part
    (False re-runs the 100-fit search in every inner fold: same protocol, 5x the SVR cost).
    """
    blocks, Y = check_inputs(blocks, y, ["y"], list(learners))
    y = Y[:, 0]
    _check_protocol(protocol, len(y))
    bases = base_names(blocks, learners)
    inner = {s: _inner_folds(protocol, split, inner_folds) for s, split in enumerate(protocol.splits)} if stack else {}
    tasks = [(s, b) for s in range(len(protocol.splits)) for b in range(len(bases))]
    parts = [split_base(base) for base in bases]
    jobs = (
        delayed(_fit_base)(blocks[parts[b][0]], y, protocol.splits[s], parts[b][1], inner.get(s), reuse_selected)
        for s, b in tasks
    )
    test_preds: dict[int, np.ndarray] = {}
    level1: dict[int, np.ndarray] = {}
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    for done, ((s, b), (pred, oof)) in enumerate(zip(tasks, results, strict=True), start=1):
        split = protocol.splits[s]
        test_preds.setdefault(s, np.empty((len(split.test), len(bases))))[:, b] = pred
        if oof is not None:
            level1.setdefault(s, np.empty((len(split.train), len(bases))))[:, b] = oof
        if progress is not None:
            progress(done, len(tasks))

    rows, frames, weights = [], [], []
    for s, split in enumerate(protocol.splits):
        y_test = y[split.test]
        predictions = dict(zip(bases, test_preds[s].T, strict=True))
        if stack:
            meta = fit_meta(level1[s], y[split.train])
            predictions[STACK] = meta.predict(test_preds[s])
            weights.append({"split": s, "intercept": float(meta.intercept_), **dict(zip(bases, meta.coef_.tolist()))})
        for model, pred in predictions.items():
            rows.append({"split": s, "model": model, **score(y_test, pred)})
            frames.append(
                pd.DataFrame({"split": s, "model": model, "sample": split.test, "y_true": y_test, "y_pred": pred})
            )
    scores = pd.DataFrame(rows, columns=["split", "model", *METRICS])
    return EvalResult(protocol, scores, pd.concat(frames, ignore_index=True), pd.DataFrame(weights))
