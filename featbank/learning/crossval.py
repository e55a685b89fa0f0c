"""Repeated k-fold cross-validation, out-of-fold predictions and honest stacking.

Base learners are every (feature block, learner) pair, named ``"block/learner"``, fitted per
target. Their out-of-fold (OOF) predictions are what single models are scored on; a non-negative
linear meta-learner (the "stack") combines them.

Why the nesting: a meta-learner trained on the same OOF predictions it is then scored on has seen
the test fold's labels through its weights, and an overfitting base learner makes that leak
large. So for outer fold f the meta-learner is trained on level-1 predictions of the training
folds only, produced by an inner CV over the other outer folds: for every g != f, base models
fitted without folds {f, g} predict fold g. The model fitted without {f, g} also serves outer
fold g predicting fold f, so fits are cached by the *set* of excluded folds: k single-fold fits
(the outer OOF) plus k(k-1)/2 pair fits per base learner, target and repeat, instead of k^2.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import RegressorMixin
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GroupKFold, KFold

import featbank
from featbank.errors import FeatbankError
from featbank.learning.metrics import METRICS, score
from regressors import load_learner, make_learner, save_learner

STACK = "stack"
"""Model name of the stacked ensemble in results."""

Progress = Callable[[int, int], None]


def fold_ids(
    n: int, n_splits: int, repeats: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Test-fold index of every sample, shape ``(repeats, n)``; repeat r is shuffled with ``seed + r``.

    With ``groups`` (e.g. the source content a distorted video came from), folds are grouped so
    no group sits in both a training and a test part; otherwise samples are shuffled freely.
    """
    if n_splits < 2:
        raise FeatbankError(f"n_splits must be at least 2, got {n_splits}")
    if repeats < 1:
        raise FeatbankError(f"repeats must be at least 1, got {repeats}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise FeatbankError(f"groups must have one entry per sample ({n}), got shape {groups.shape}")
        n_groups = len(np.unique(groups))
        if n_splits > n_groups:
            raise FeatbankError(f"cannot make {n_splits} grouped folds from {n_groups} groups")
    elif n_splits > n:
        raise FeatbankError(f"cannot make {n_splits} folds from {n} samples")
    ids = np.empty((repeats, n), dtype=np.int64)
    for r in range(repeats):
        if groups is None:
            splits = KFold(n_splits, shuffle=True, random_state=seed + r).split(np.empty(n))
        else:
            splitter = GroupKFold(n_splits, shuffle=True, random_state=seed + r)
            splits = splitter.split(np.empty(n), groups=groups)
        for fold, (_, test) in enumerate(splits):
            ids[r, test] = fold
    return ids


@dataclass
class CVResult:
    """Outcome of :func:`cross_validate`.

    ``oof``: long form, one row per (repeat, target, model, sample) with columns repeat, target,
    model, sample, fold, y_true, y_pred. ``scores``: one row per (repeat, target, model) with every
    metric of :func:`featbank.learning.metrics.score`, computed over all samples of the repeat.
    ``stack_weights`` / ``stack_intercepts``: the meta-learner fitted on repeat 0's full outer OOF
    matrix, per target (empty without stacking); for reading which bases matter, not for scoring.
    """

    oof: pd.DataFrame
    scores: pd.DataFrame
    stack_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    stack_intercepts: dict[str, float] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Median and std across repeats of every metric per (target, model), best first per target."""
        stats = self.scores.groupby(["target", "model"], sort=False)[list(METRICS)].agg(["median", "std"])
        stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
        stats = stats.reset_index()
        target_order = {t: i for i, t in enumerate(self.scores["target"].unique())}
        stats = stats.sort_values(
            ["target", "main_score_median"],
            ascending=[True, False],
            key=lambda col: col.map(target_order) if col.name == "target" else col,
            kind="stable",
        )
        return stats.reset_index(drop=True)


def base_names(blocks: dict[str, np.ndarray], learners: Sequence[str]) -> list[str]:
    """Base-model names, ``"block/learner"`` for every feature block and learner."""
    return [f"{block}/{learner}" for block in blocks for learner in learners]


def split_base(name: str) -> tuple[str, str]:
    """``(block, learner)`` of a base-model name."""
    block, learner = name.rsplit("/", 1)
    return block, learner


def check_inputs(
    blocks: dict[str, np.ndarray], Y: np.ndarray, targets: Sequence[str], learners: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validated float copies of ``blocks`` and ``Y`` (2-d, one column per target)."""
    if not blocks:
        raise FeatbankError("no feature blocks given")
    if not learners:
        raise FeatbankError("no learners given")
    for learner in learners:
        make_learner(learner)  # raises FeatbankError listing valid names
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[1] != len(targets):
        raise FeatbankError(f"Y must have shape (n, {len(targets)}) for targets {list(targets)}, got {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise FeatbankError(f"Y has {int((~np.isfinite(Y)).sum())} missing or non-finite target values")
    checked = {}
    for name, X in blocks.items():
        if "/" in name:
            raise FeatbankError(f"block name {name!r} must not contain '/'")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise FeatbankError(f"block {name!r} must have shape ({Y.shape[0]}, d), got {X.shape}")
        checked[name] = X
    return checked, Y


def _check_folds(folds: np.ndarray, n: int, stack: bool) -> np.ndarray:
    folds = np.asarray(folds)
    if folds.ndim != 2 or folds.shape[1] != n:
        raise FeatbankError(f"folds must have shape (repeats, {n}), got {folds.shape}")
    for r, row in enumerate(folds):
        k = int(row.max()) + 1
        if set(np.unique(row).tolist()) != set(range(k)) or k < 2:
            raise FeatbankError(f"repeat {r}: fold ids must be 0..k-1 with every fold non-empty, k >= 2")
        if stack and k < 3:
            raise FeatbankError("stacking needs at least 3 folds (its inner CV leaves out two)")
    return folds.astype(np.int64)


def _exclusions(k: int, stack: bool) -> list[tuple[int, ...]]:
    """Fold sets to leave out: each single fold, plus each unordered pair when stacking."""
    singles = [(f,) for f in range(k)]
    return singles + (list(itertools.combinations(range(k), 2)) if stack else [])


def _fit_predict(
    X: np.ndarray, y: np.ndarray, fold_of: np.ndarray, excluded: tuple[int, ...], learner: str, seed: int
) -> np.ndarray:
    """Fit on the samples outside ``excluded`` folds; predict the samples inside them."""
    held_out = np.isin(fold_of, excluded)
    model = make_learner(learner, random_state=seed).fit(X[~held_out], y[~held_out])
    return model.predict(X[held_out])


def fit_meta(level1: np.ndarray, y: np.ndarray) -> LinearRegression:
    """Non-negative least squares with intercept: a blend that cannot bet against a base model."""
    return LinearRegression(positive=True).fit(level1, y)


Cache = dict[tuple[int, ...], np.ndarray]
"""Excluded folds -> (n, n_bases) predictions of the base models fitted without those folds, filled
in for the samples of those folds (NaN elsewhere); one per (repeat, target)."""


def _outer_oof(cache: Cache, fold_of: np.ndarray) -> np.ndarray:
    """Plain OOF matrix (n, n_bases): each sample predicted by the models that left its fold out."""
    outer = np.empty_like(cache[(0,)])
    for f in range(int(fold_of.max()) + 1):
        outer[fold_of == f] = cache[(f,)][fold_of == f]
    return outer


def _stack_oof(cache: Cache, fold_of: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Honest stacked OOF predictions for one (repeat, target).

    For outer fold f the meta-learner trains on the other folds' level-1 predictions from models
    that never saw fold f (nor the fold being predicted), then predicts fold f from the outer OOF.
    """
    outer = _outer_oof(cache, fold_of)
    stacked = np.empty(len(y))
    for f in range(int(fold_of.max()) + 1):
        test = fold_of == f
        level1 = np.empty_like(outer)
        for g in set(fold_of[~test].tolist()):
            inner = fold_of == g
            level1[inner] = cache[tuple(sorted((f, g)))][inner]
        stacked[test] = fit_meta(level1[~test], y[~test]).predict(outer[test])
    return stacked


def _level1_matrix(oof: pd.DataFrame, repeat: int, target: str, bases: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Full outer OOF matrix (n, n_bases) of one repeat and target, and the matching y."""
    part = oof[(oof["repeat"] == repeat) & (oof["target"] == target)]
    wide = part.pivot(index="sample", columns="model", values="y_pred").sort_index()
    y = part[part["model"] == bases[0]].sort_values("sample")["y_true"].to_numpy()
    return wide[list(bases)].to_numpy(), y


def _full_meta(oof: pd.DataFrame, target: str, bases: Sequence[str], repeats: Sequence[int]) -> tuple[dict[str, float], float]:
    """Meta-learner on the full outer OOF matrix, coefficients averaged over ``repeats``."""
    coefs, intercepts = [], []
    for repeat in repeats:
        meta = fit_meta(*_level1_matrix(oof, repeat, target, bases))
        coefs.append(meta.coef_)
        intercepts.append(meta.intercept_)
    mean_coef = np.mean(coefs, axis=0)
    return {b: float(w) for b, w in zip(bases, mean_coef, strict=True)}, float(np.mean(intercepts))


def cross_validate(
    blocks: dict[str, np.ndarray],
    Y: np.ndarray,
    targets: list[str],
    learners: list[str],
    folds: np.ndarray,
    stack: bool = True,
    n_jobs: int = -1,
    progress: Progress | None = None,
) -> CVResult:
    """Out-of-fold predictions and scores for every base learner (and the stack) per target.

    ``blocks`` maps a feature-group name to its (n, d) matrix (NaN allowed; each pipeline imputes
    within its training part). ``folds`` comes from :func:`fold_ids`. Fits run in parallel with
    joblib over independent (repeat, target, base learner, excluded folds) tasks; ``progress`` is
    called as ``progress(done, total)`` after each.
    """
    blocks, Y = check_inputs(blocks, Y, targets, learners)
    folds = _check_folds(folds, Y.shape[0], stack)
    n = Y.shape[0]
    bases = base_names(blocks, learners)
    tasks = [
        (r, t, b, excluded)
        for r in range(folds.shape[0])
        for t in range(len(targets))
        for b in range(len(bases))
        for excluded in _exclusions(int(folds[r].max()) + 1, stack)
    ]
    parts = [split_base(base) for base in bases]
    jobs = (
        delayed(_fit_predict)(blocks[parts[b][0]], Y[:, t], folds[r], excluded, parts[b][1], r)
        for r, t, b, excluded in tasks
    )
    caches: dict[tuple[int, int], Cache] = {}
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    for done, ((r, t, b, excluded), pred) in enumerate(zip(tasks, results, strict=True), start=1):
        matrix = caches.setdefault((r, t), {}).setdefault(excluded, np.full((n, len(bases)), np.nan))
        matrix[np.isin(folds[r], excluded), b] = pred
        if progress is not None:
            progress(done, len(tasks))

    frames, score_rows = [], []
    for (r, t), cache in caches.items():
        y = Y[:, t]
        predictions = dict(zip(bases, _outer_oof(cache, folds[r]).T, strict=True))
        if stack:
            predictions[STACK] = _stack_oof(cache, folds[r], y)
        for model, pred in predictions.items():
            frames.append(
                pd.DataFrame(
                    {"repeat": r, "target": targets[t], "model": model, "sample": np.arange(n),
                     "fold": folds[r], "y_true": y, "y_pred": pred}
                )  # fmt: skip
            )
            score_rows.append({"repeat": r, "target": targets[t], "model": model, **score(y, pred)})
    oof = pd.concat(frames, ignore_index=True)
    result = CVResult(oof=oof, scores=pd.DataFrame(score_rows))
    if stack:
        for target in targets:
            weights, intercept = _full_meta(oof, target, bases, repeats=[0])
            result.stack_weights[target] = weights
            result.stack_intercepts[target] = intercept
    return result


_DESCRIPTION = "ensemble.json"


@dataclass
class FittedEnsemble:
    """Base learners refitted on all data plus, per target, how to combine them.

    ``models[target]`` maps base-learner names to fitted pipelines. When ``stacked``, the
    prediction is ``intercepts[target] + sum(weights[target][b] * models[target][b](X_b))``; only
    bases with a positive weight are refitted (the others contribute nothing). Otherwise
    ``chosen[target]`` names the single best base learner by cross-validated main score.
    """

    targets: list[str]
    learners: list[str]
    block_dims: dict[str, int]
    stacked: bool
    chosen: dict[str, str]
    models: dict[str, dict[str, RegressorMixin]]
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    intercepts: dict[str, float] = field(default_factory=dict)

    def predict(self, blocks: dict[str, np.ndarray]) -> pd.DataFrame:
        """Predictions, one column per target, for the samples in ``blocks``.

        Every block recorded at fit time must be present with its recorded width, so a bank
        re-extracted with a different extractor version fails loudly instead of mispredicting.
        """
        arrays = {}
        for name, dim in self.block_dims.items():
            if name not in blocks:
                raise FeatbankError(f"predict needs feature block {name!r} (d={dim})")
            X = np.asarray(blocks[name], dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != dim:
                raise FeatbankError(f"block {name!r} must have shape (n, {dim}), got {X.shape}")
            arrays[name] = X
        sizes = {X.shape[0] for X in arrays.values()}
        if len(sizes) != 1:
            raise FeatbankError(f"feature blocks disagree on the number of samples: {sorted(sizes)}")
        n = sizes.pop()
        out = {}
        for target in self.targets:
            if self.stacked:
                blend = np.full(n, self.intercepts[target])
                for base, model in self.models[target].items():
                    blend += self.weights[target][base] * model.predict(arrays[split_base(base)[0]])
                out[target] = blend
            else:
                base = self.chosen[target]
                out[target] = self.models[target][base].predict(arrays[split_base(base)[0]])
        return pd.DataFrame(out)

    def save(self, directory: str | Path) -> None:
        """Write ``ensemble.json`` plus one skops file per fitted base learner into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, str]] = {}
        for t, target in enumerate(self.targets):
            files[target] = {}
            for b, (base, model) in enumerate(self.models[target].items()):
                # The index keeps names unique: sanitising alone maps e.g. "x@1" and "x_1" together.
                filename = f"target{t}-{b}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', base)}.skops"
                save_learner(model, directory / filename)
                files[target][base] = filename
        description = {
            "featbank_version": featbank.__version__,
            "targets": self.targets,
            "learners": self.learners,
            "blocks": self.block_dims,
            "stacked": self.stacked,
            "chosen": self.chosen,
            "stack": {
                t: {"weights": self.weights[t], "intercept": self.intercepts[t]} for t in self.weights
            },
            "models": files,
        }
        (directory / _DESCRIPTION).write_text(json.dumps(description, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FittedEnsemble:
        """Read an ensemble written by :meth:`save`; learner files go through the skops allowlist."""
        directory = Path(directory)
        path = directory / _DESCRIPTION
        if not path.is_file():
            raise FeatbankError(f"{directory} holds no fitted ensemble ({_DESCRIPTION} missing)")
        description = json.loads(path.read_text())
        return cls(
            targets=description["targets"],
            learners=description["learners"],
            block_dims=description["blocks"],
            stacked=description["stacked"],
            chosen=description["chosen"],
            models={
                target: {base: load_learner(directory / name) for base, name in per_target.items()}
                for target, per_target in description["models"].items()
            },
            weights={t: s["weights"] for t, s in description["stack"].items()},
            intercepts={t: s["intercept"] for t, s in description["stack"].items()},
        )


def _fit_full(X: np.ndarray, y: np.ndarray, learner: str) -> RegressorMixin:
    return make_learner(learner, random_state=0).fit(X, y)


def fit_final(
    blocks: dict[str, np.ndarray],
    Y: np.ndarray,
    targets: list[str],
    learners: list[str],
    result: CVResult,
    stack: bool = True,
    n_jobs: int = -1,
) -> FittedEnsemble:
    """Refit base learners on all data and combine them as cross-validation recommends.

    Stacked: meta weights come from the meta-learner fitted on each repeat's full outer OOF
    matrix, averaged over repeats (a linear meta-learner, so averaging coefficients averages the
    blends). Otherwise each target uses its best base learner by median CV main score.
    """
    blocks, Y = check_inputs(blocks, Y, targets, learners)
    bases = base_names(blocks, learners)
    missing = set(bases) - set(result.oof["model"])
    if missing:
        raise FeatbankError(f"the CV result has no predictions for {sorted(missing)}")
    weights: dict[str, dict[str, float]] = {}
    intercepts: dict[str, float] = {}
    chosen: dict[str, str] = {}
    keep: dict[str, list[str]] = {}
    table = result.summary()
    repeats = sorted(result.oof["repeat"].unique())
    for target in targets:
        if stack:
            weights[target], intercepts[target] = _full_meta(result.oof, target, bases, repeats)
            chosen[target] = STACK
            keep[target] = [b for b in bases if weights[target][b] > 0]
        else:
            ranked = table[(table["target"] == target) & table["model"].isin(bases)]
            chosen[target] = str(ranked["model"].iloc[0])
            keep[target] = [chosen[target]]
    jobs = [(target, base) for target in targets for base in keep[target]]
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_full)(blocks[split_base(base)[0]], Y[:, targets.index(target)], split_base(base)[1])
        for target, base in jobs
    )
    models: dict[str, dict[str, RegressorMixin]] = {target: {} for target in targets}
    for (target, base), model in zip(jobs, fitted, strict=True):
        models[target][base] = model
    return FittedEnsemble(
        targets=list(targets),
        learners=list(learners),
        block_dims={name: X.shape[1] for name, X in blocks.items()},
        stacked=stack,
        chosen=chosen,
        models=models,
        weights=weights,
        intercepts=intercepts,
    )
