"""The one evaluation engine: every base learner (and the honest stack) under any protocol.

Base learners are every (feature block, learner) pair, named ``"block/learner"``, fitted per
target. A protocol (:mod:`featbank.learning.protocols`) expands into rounds; in each round a base
model is fitted without each scored fold and predicts it.

The stack is a non-negative linear meta-learner over the bases' predictions. By default
(``stack_mode="nested"``) it is scored honestly: for test fold f its training data are level-1
predictions of every other fold g from models fitted without {f, g}, so no label of fold f
reaches its weights. In a pooled round
(k-fold) the model fitted without {f, g} also serves fold g predicting f, so fits are cached by
the *set* of excluded folds: k single-fold fits plus k(k-1)/2 pair fits per base, target and
round instead of k². In a held-out round (VIDEVAL, holdout, random splits) the pairs are the
test part plus one inner fold of the training part; learners that choose hyper-parameters on
their training data and can hand the choice over (``selected()``: svr_grid, elasticnet) reuse the
choice of the round's outer fit in its inner fits (it saw only the training part).

``stack_mode="oof"`` is the cheaper stack most scripts use: in a pooled round its meta-learner
for fold f is trained on the *outer* out-of-fold predictions of the other folds, so no pair
fits are needed (k fits per base instead of k + k(k-1)/2: 3x fewer at k = 5). It is not strictly
honest: the base model that predicted a row of fold g was trained on fold f, so fold f's labels
reach the meta-learner's inputs (not its targets). With a few non-negative weights the optimism
is small, and the report names the mode. Held-out rounds have no outer predictions of their
training part, so they always use their inner fits.

``stack_mode="ring"`` is the cheaper *honest* stack: the meta-learner of test fold f is trained
on the level-1 predictions of two other folds only, its neighbours f-1 and f+1 in a ring of the
folds, from models fitted without {f, f-1} and {f, f+1}. Each pair fit serves both of its folds,
so a pooled round needs k pair fits instead of k(k-1)/2 (5 instead of 10 at k = 5: 10 fit sets per
base instead of 15), and no label of fold f reaches its weights. The price is a meta-learner
trained on 2/k of the rows instead of (k-1)/k: plenty for a few non-negative weights on thousands
of videos, noisier on a hundred. In a held-out round the two inner folds are the training part's
first two. With three folds (or inner folds) it is ``nested``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import RegressorMixin, clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from featbank.errors import FeatbankError, ManifestError, UsageError
from featbank.learning.metrics import MIN_SAMPLES, score
from featbank.learning.protocols import Protocol, Round, split_numbers
from featbank.learning.results import STACK, Evaluation
from regressors import (
    fit_targets,
    learner_entry,
    make_learner,
    predict_targets,
    prepare,
)
from regressors.preprocess import parse_reduce

Progress = Callable[[int, int], None]


def base_names(blocks: dict[str, np.ndarray], learners: Sequence[str]) -> list[str]:
    """Base-model names, ``"block/learner"`` for every feature block and learner."""
    return [f"{block}/{learner}" for block in blocks for learner in learners]


def split_base(name: str) -> tuple[str, str]:
    """``(block, learner)`` of a base-model name."""
    block, learner = name.rsplit("/", 1)
    return block, learner


def reads_steps(learner: str) -> bool:
    """Whether a learner reads a block's per-step features (the temporal head) instead of its pooled vector."""
    return learner_entry(learner).inputs == "steps"


def block_input(blocks: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None, base: str) -> np.ndarray:
    """The array base model ``block/learner`` reads: the pooled ``(n, d)`` block, or for a learner
    that reads steps its ``(n, steps, features)`` form."""
    block, learner = split_base(base)
    if not reads_steps(learner):
        return blocks[block]
    if steps is None or block not in steps:
        raise FeatbankError(f"learner {learner!r} reads per-step features, and none were given for block {block!r}")
    return steps[block]


def check_steps(steps: dict[str, np.ndarray] | None, blocks: dict[str, np.ndarray], n: int,
                learners: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Validated float32 per-step blocks, required for every block when a learner reads steps.

    float32, not float64 as the pooled blocks: per-step arrays are the large ones (T times the
    pooled width), and the heads that read them compute in float32.
    """
    if not any(reads_steps(learner) for learner in learners):
        return steps
    steps = steps or {}
    checked = {}
    for name in blocks:
        if name not in steps:
            raise FeatbankError(f"a learner reads per-step features, and none were given for block {name!r}")
        X = np.asarray(steps[name], dtype=np.float32)
        if X.ndim != 3 or X.shape[0] != n:
            raise FeatbankError(f"per-step block {name!r} must have shape ({n}, steps, features), got {X.shape}")
        checked[name] = X
    return checked


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
    constant = [f"{t} (all {Y[0, i]:g})" for i, t in enumerate(targets) if len(Y) and np.ptp(Y[:, i]) == 0]
    if constant:
        raise ManifestError(f"constant target(s), nothing to learn or rank: {', '.join(constant)}")
    checked = {}
    for name, X in blocks.items():
        if "/" in name:
            raise FeatbankError(f"block name {name!r} must not contain '/'")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise FeatbankError(f"block {name!r} must have shape ({Y.shape[0]}, d), got {X.shape}")
        checked[name] = X
    return checked, Y


def fit_meta(level1: np.ndarray, y: np.ndarray) -> LinearRegression:
    """Non-negative least squares with intercept: a blend that cannot bet against a base model."""
    return LinearRegression(positive=True).fit(level1, y)


def _inner_template(fitted: Pipeline) -> RegressorMixin:
    """Unfitted copy of a fitted pipeline's model step that keeps the choice a self-tuning model made."""
    model = fitted.steps[-1][1]
    return model.selected() if hasattr(model, "selected") else clone(model)


Exclusion = tuple[int, ...]


@dataclass(frozen=True)
class _Job:
    """Fits of some base learners of one block on one round, for every target, one per excluded fold set.

    The bases of a job read the same input of one block (its pooled matrix, or its per-step
    array), so each fit's preprocessing (imputer, scaler, ``reduce``'s PCA) is fitted once and
    shared by all of them, and every target is fitted in the same job so that what the targets
    share (the SVR's kernel, one multi-output MLP) is computed once per training part.
    ``chained``: the first fit's hyper-parameter choice (per learner and target) is reused by the
    following ones.
    """

    round: int
    bases: tuple[int, ...]
    exclusions: tuple[Exclusion, ...]
    chained: bool


def _sharing_groups(bases: Sequence[str]) -> list[tuple[int, ...]]:
    """Indices of the bases fitted together: the learners of one block that read the same input kind."""
    groups: dict[tuple[str, str], list[int]] = {}
    for b, base in enumerate(bases):
        block, learner = split_base(base)
        groups.setdefault((block, learner_entry(learner).inputs), []).append(b)
    return [tuple(group) for group in groups.values()]


def _run_job(X: np.ndarray, Y: np.ndarray, rnd: Round, learners: tuple[str, ...], exclusions: tuple[Exclusion, ...],
             chained: bool, keep: bool, reduce: str | None
             ) -> tuple[list[np.ndarray], list[list[RegressorMixin]] | None]:
    """``(n_inside, learners, targets)`` predictions of the samples inside each excluded fold set by
    models fitted on the rest, with one preprocessing per fit shared by the learners.

    With ``keep``, each learner's per-target models of a single-fold exclusion (an outer fit) are returned too.
    """
    out, kept = [], None
    templates: list[list[RegressorMixin] | None] = [None] * len(learners)
    for excluded in exclusions:
        train, test = rnd.rows(excluded, inside=False), rnd.rows(excluded, inside=True)
        X_train, X_test, Y_train = X[train], X[test], Y[train]  # row copies: once per fit, not per learner
        prepared = prepare(learners[0], X_train, random_state=rnd.seed, reduce=reduce)
        Z_test = Pipeline(prepared.steps).transform(X_test)
        predictions = np.empty((len(test), len(learners), Y.shape[1]))
        fitted = []
        for i, learner in enumerate(learners):
            models = fit_targets(learner, X_train, Y_train, random_state=rnd.seed, templates=templates[i],
                                 prepared=prepared)
            if chained and templates[i] is None and any(hasattr(m.steps[-1][1], "selected") for m in models):
                templates[i] = [_inner_template(model) for model in models]
            predictions[:, i] = predict_targets(models, X_test, Z=Z_test)
            fitted.append(models)
        if keep and len(excluded) == 1:
            kept = fitted
        out.append(predictions)
    return out, kept


STACK_MODES = ("nested", "ring", "oof")
"""How the stack's meta-learner is trained and scored (see the module docstring)."""


def _partners(rnd: Round, f: int, stack_mode: str) -> list[int]:
    """The folds whose level-1 predictions train test fold ``f``'s meta-learner (see the module docstring)."""
    others = [g for g in rnd.fold_ids if g != f]
    if stack_mode != "ring" or len(others) <= 2:
        return others
    if not rnd.pooled:
        return others[:2]
    i, k = rnd.fold_ids.index(f), len(rnd.fold_ids)
    return sorted({rnd.fold_ids[(i - 1) % k], rnd.fold_ids[(i + 1) % k]})


def _pair_exclusions(rnd: Round, stack_mode: str) -> list[Exclusion]:
    """The fold pairs a round's stack fits models without, each once, in a stable order."""
    pairs = {tuple(sorted((f, g))) for f in rnd.test_folds for g in _partners(rnd, f, stack_mode)}
    return sorted(pairs)


def _fits_pairs(rnd: Round, stack: bool, stack_mode: str) -> bool:
    """Whether the stack of ``rnd`` needs models fitted without two folds (see the module docstring)."""
    return stack and (stack_mode != "oof" or not rnd.pooled)


def _jobs(rounds: list[Round], groups: list[tuple[int, ...]], stack: bool, stack_mode: str,
          reuse_selected: bool) -> list[_Job]:
    jobs = []
    for r, rnd in enumerate(rounds):
        folds = rnd.fold_ids
        pairs = _fits_pairs(rnd, stack, stack_mode)
        inner = _pair_exclusions(rnd, stack_mode) if pairs else []
        for group in groups:
            if rnd.pooled:
                jobs += [_Job(r, group, (e,), False) for e in [(f,) for f in folds] + inner]
            else:
                jobs.append(_Job(r, group, ((0,), *inner), reuse_selected))
    return jobs


def _check_sizes(rounds: list[Round], stack: bool, stack_mode: str, learners: Sequence[str]) -> None:
    """Refuse, before any fit, a protocol whose smallest fit or scored part is too small to mean anything.

    Each learner declares the fewest training rows it can fit on (``LearnerEntry.min_train``:
    ElasticNet's inner CV has five folds); a scored part needs the logistic's four samples.
    """
    need = max(learner_entry(name).min_train for name in learners)
    for r, rnd in enumerate(rounds):
        sizes = {f: int((rnd.folds == f).sum()) for f in rnd.fold_ids}
        total = sum(sizes.values())
        scored = total if rnd.pooled else sizes[0]
        if scored < MIN_SAMPLES:
            raise UsageError(f"round {r} scores {scored} sample(s); correlations after the logistic need at "
                             f"least {MIN_SAMPLES}: use fewer folds or a larger test part")
        excluded = [sizes[f] for f in rnd.test_folds]
        pairs = _fits_pairs(rnd, stack, stack_mode)
        if pairs:
            excluded += [sizes[f] + sizes[g] for f, g in _pair_exclusions(rnd, stack_mode)]
        smallest = total - max(excluded)
        if smallest < need:
            raise UsageError(f"round {r}: a fit would train on only {smallest} sample(s), and "
                             f"{', '.join(learners)} need at least {need}"
                             f"{' (the stack leaves out two folds)' if pairs else ''}; use more data, fewer "
                             f"folds or other learners")


def _check_stackable(rounds: list[Round]) -> None:
    for r, rnd in enumerate(rounds):
        if len(rnd.fold_ids) >= 3:
            continue
        if rnd.pooled:
            raise UsageError("stacking needs at least 3 folds (its inner CV leaves out two)")
        raise UsageError(f"round {r}: the training part cannot be cut into the 2+ inner folds a "
                         f"stack needs (too few samples or groups)")


Cache = dict[Exclusion, np.ndarray]
"""Excluded folds -> (n, n_bases) predictions of the models fitted without them (NaN elsewhere)."""


def _blend(cache: Cache, rnd: Round, y: np.ndarray, outer: np.ndarray,
           stack_mode: str) -> tuple[np.ndarray, LinearRegression, dict[int, LinearRegression]]:
    """Honest stacked predictions of one round and target, the round's meta-learner, each test fold's.

    For test fold f the meta-learner is trained on its partner folds' (every other fold's, or
    with ``stack_mode="ring"`` two of them) level-1 predictions from models that never saw f (nor
    the fold being predicted), then applied to f's outer predictions; with ``stack_mode="oof"``
    in a pooled round, on the other folds' outer predictions.
    The round's meta-learner (what the final model averages) is fitted on the full outer OOF
    matrix of a pooled round, and is fold 0's meta-learner in a held-out round.
    """
    stacked = np.full(len(y), np.nan)
    metas: dict[int, LinearRegression] = {}
    for f in rnd.test_folds:
        test = rnd.rows((f,), inside=True)
        if not _fits_pairs(rnd, True, stack_mode):
            level1, train = outer, rnd.rows((f,), inside=False)
        else:
            level1 = np.full_like(outer, np.nan)
            partners = _partners(rnd, f, stack_mode)
            for g in partners:
                rows = rnd.rows((g,), inside=True)
                level1[rows] = cache[tuple(sorted((f, g)))][rows]
            train = rnd.rows(tuple(partners), inside=True)
        metas[f] = fit_meta(level1[train], y[train])
        stacked[test] = metas[f].predict(outer[test])
    scored = rnd.scored
    meta = fit_meta(outer[scored], y[scored]) if rnd.pooled else metas[0]
    return stacked, meta, metas


def evaluate(
    blocks: dict[str, np.ndarray],
    Y: np.ndarray,
    targets: Sequence[str],
    learners: Sequence[str],
    protocol: Protocol,
    groups: np.ndarray | None = None,
    steps: dict[str, np.ndarray] | None = None,
    stack: bool = True,
    n_jobs: int = -1,
    reuse_selected: bool = True,
    stack_mode: str = "nested",
    keep_models: bool = False,
    progress: Progress | None = None,
    reduce: str | None = None,
) -> Evaluation:
    """Score every ``block/learner`` base (and the stack) per target on every round of ``protocol``.

    ``blocks`` maps a feature-block name to its (n, d) matrix (NaN allowed: each pipeline imputes
    within its training part); ``Y`` is (n, targets); ``steps`` maps the same block names to
    ``(n, steps, features)`` arrays (NaN on absent steps), needed when a learner reads steps
    (:func:`reads_steps`). Fits run in parallel with joblib over independent (round, block,
    excluded folds) jobs, each fitting every learner of the block that reads the same input, and
    every target, with the work they share done once; ``progress(done, total)`` counts
    per-target fits. ``reduce`` (``"pca:N"``, :mod:`regressors.preprocess`) adds a PCA to each fit's
    preprocessing, fitted on its training part (the per-step heads read their input unreduced).
    ``reuse_selected=False`` re-runs svr_grid's and elasticnet's searches in every inner fit of held-out rounds
    (same protocol, 5x the SVR cost). ``keep_models`` keeps every split's fitted bases in
    ``Evaluation.split_models`` (what an ensemble of the split models is made of).
    """
    blocks, Y = check_inputs(blocks, Y, targets, learners)
    steps = check_steps(steps, blocks, Y.shape[0], learners)
    parse_reduce(reduce)
    if stack_mode not in STACK_MODES:
        raise UsageError(f"unknown stack mode {stack_mode!r}; use one of {', '.join(STACK_MODES)}")
    n = Y.shape[0]
    rounds = protocol.rounds(n, groups)
    if stack:
        _check_stackable(rounds)
    _check_sizes(rounds, stack, stack_mode, learners)
    bases = base_names(blocks, learners)
    learner_of = [split_base(base)[1] for base in bases]
    jobs = _jobs(rounds, _sharing_groups(bases), stack, stack_mode, reuse_selected)
    total = sum(len(job.exclusions) * len(job.bases) for job in jobs) * len(targets)
    calls = (
        delayed(_run_job)(block_input(blocks, steps, bases[j.bases[0]]), Y, rounds[j.round],
                          tuple(learner_of[b] for b in j.bases), j.exclusions, j.chained, keep_models, reduce)
        for j in jobs
    )
    caches: dict[tuple[int, int], Cache] = {}
    kept: dict[tuple[int, int, int, int], RegressorMixin] = {}
    done = 0
    for job, (predictions, models) in zip(jobs, Parallel(n_jobs=n_jobs, return_as="generator")(calls), strict=True):
        rnd = rounds[job.round]
        for b, per_target in zip(job.bases, models or [], strict=False):
            for t, model in enumerate(per_target):
                kept[(job.round, job.exclusions[0][0], t, b)] = model
        for excluded, pred in zip(job.exclusions, predictions, strict=True):
            inside = rnd.rows(excluded, inside=True)
            for t in range(len(targets)):
                matrix = caches.setdefault((job.round, t), {}).setdefault(excluded, np.full((n, len(bases)), np.nan))
                matrix[np.ix_(inside, job.bases)] = pred[:, :, t]
        done += len(job.exclusions) * len(job.bases) * len(targets)
        if progress is not None:
            progress(done, total)
    evaluation = _collect(caches, rounds, Y, list(targets), bases, stack, protocol, groups is not None, stack_mode)
    evaluation.reduce = reduce
    split_of = split_numbers(rounds)
    evaluation.split_models = {(split_of[(r, f)], targets[t], bases[b]): m for (r, f, t, b), m in kept.items()}
    return evaluation


def _collect(caches: dict[tuple[int, int], Cache], rounds: list[Round], Y: np.ndarray, targets: list[str],
             bases: list[str], stack: bool, protocol: Protocol, grouped: bool,
             stack_mode: str = "nested") -> Evaluation:
    """Tables of predictions, scores and stack weights from the filled caches."""
    split_of = split_numbers(rounds)
    frames, score_rows, weight_rows, split_weight_rows = [], [], [], []
    for (r, t), cache in sorted(caches.items()):
        rnd, y = rounds[r], Y[:, t]
        outer = np.full((len(y), len(bases)), np.nan)
        fold_of = np.full(len(y), -1)
        split = np.full(len(y), -1)
        for f in rnd.test_folds:
            rows = rnd.rows((f,), inside=True)
            outer[rows] = cache[(f,)][rows]
            fold_of[rows], split[rows] = f, split_of[(r, f)]
        scored = rnd.scored
        predictions = {base: outer[scored, b] for b, base in enumerate(bases)}
        if stack:
            stacked, meta, metas = _blend(cache, rnd, y, outer, stack_mode)
            predictions[STACK] = stacked[scored]
            weight_rows.append({"round": r, "target": targets[t], "intercept": float(meta.intercept_),
                                **dict(zip(bases, meta.coef_.tolist(), strict=True))})
            split_weight_rows += [{"split": split_of[(r, f)], "target": targets[t], "intercept": float(m.intercept_),
                                   **dict(zip(bases, m.coef_.tolist(), strict=True))} for f, m in metas.items()]
        for model, pred in predictions.items():
            frames.append(pd.DataFrame({
                "round": r, "split": split[scored], "fold": fold_of[scored], "target": targets[t],
                "model": model, "sample": scored, "y_true": y[scored], "y_pred": pred}))
            score_rows.append({"round": r, "target": targets[t], "model": model, **score(y[scored], pred)})
    return Evaluation(
        protocol=protocol, rounds=rounds, n=Y.shape[0], targets=targets, bases=bases, stacked=stack,
        stack_mode=stack_mode,
        grouped=grouped, predictions=pd.concat(frames, ignore_index=True),
        scores=pd.DataFrame(score_rows), stack_weights=pd.DataFrame(weight_rows),
        split_stack_weights=pd.DataFrame(split_weight_rows),
    )
