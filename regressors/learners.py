"""Named regressors, each a Pipeline ``impute -> scale -> model`` ready to clone per fold.

The factories below are listed, with what their fitted models contain, in
:data:`regressors.LEARNER_TABLE`; this module is imported only when a learner is made.

Imputation and scaling live inside the pipeline so that, under cross-validation, their statistics
come from the training part of each fold only. Banked features may hold NaN (a decoder failed on
some steps, an extractor produced nothing); the median imputer keeps all-NaN columns (as zeros)
so every block keeps its declared width. Defaults target the small-data regime of VQA datasets
(hundreds to a few thousand videos, tens to thousands of features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lightgbm import LGBMRegressor
from sklearn.base import RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featbank.errors import UsageError
from regressors import LEARNER_TABLE, learner_entry, resolve
from regressors.elasticnet import SelfTunedElasticNet
from regressors.kernel_svr import KernelSVR
from regressors.mlp import MLPHeadRegressor, TargetColumn
from regressors.preprocess import MedianImputer, make_reducer
from regressors.spec import parse_learner
from regressors.svr_grid import SVRGridRegressor


def _standardised_target(model: RegressorMixin) -> TransformedTargetRegressor:
    """Fit ``model`` on standardised MOS and map predictions back.

    SVR's epsilon-tube and kernel ridge's penalty (and its missing intercept) are in units of y;
    standardising makes one default work for 1-5 and 0-100 MOS scales alike.
    """
    return TransformedTargetRegressor(regressor=model, transformer=StandardScaler())


def svr(random_state: int) -> RegressorMixin:
    # gamma="scale" is 1 / n_features on standardised inputs; C=3 sits inside VIDEVAL's grid-search
    # optimum range once y is standardised (KernelSVR standardises y itself).
    return KernelSVR(C=3.0, epsilon=0.1, gamma="scale")


def svr_grid(random_state: int) -> RegressorMixin:
    # VIDEVAL's protocol model: (C, gamma) searched inside fit on an inner split seeded by
    # random_state, min-max scaling, raw MOS (no target standardisation, as in the paper). The
    # StandardScaler in front changes nothing: min-max scaling undoes any per-column affine map.
    return SVRGridRegressor(random_state=random_state)


def elasticnet(random_state: int) -> RegressorMixin:
    # Internal 5-fold CV picks alpha and the L1 mix on the training part it is given; a 50-point
    # alpha path is as good as the default 100 on VIDEVAL features at half the cost. The path
    # stops at 1% of the largest alpha (eps=1e-2): below that, with a few hundred samples, the
    # coordinate descent stops converging and the fit is an unregularised least squares anyway.
    # tol=1e-3 (sklearn's default is 1e-4): on a block with no linear signal for the target (the
    # demo's 274-d audio block fitted to colour) the 1e-4 path runs to max_iter and costs 3.5-4.5x
    # more, for out-of-fold SRCCs equal to three decimals (measured on the demo's seven targets).
    return SelfTunedElasticNet(l1_ratio=[0.1, 0.5, 0.9, 1.0], alphas=50, eps=1e-2, cv=5, max_iter=10_000,
                               tol=1e-3, n_jobs=1)


def lightgbm(random_state: int) -> RegressorMixin:
    # Shallow trees, small leaves and row/column subsampling: hundreds of samples, not millions.
    # 63 histogram bins per feature, not LightGBM's 255: with a few thousand rows a bin holds a
    # few rows anyway, and the histograms are the cost on wide deep features (2.3x faster on
    # KoNViD's VIDEVAL features, 2.3x at 2000 x 1024, for 5-fold SRCC +0.005 / -0.003).
    return LGBMRegressor(
        max_bin=63,
        n_estimators=300,
        learning_rate=0.03,
        num_leaves=15,
        min_child_samples=5,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        random_state=random_state,
        n_jobs=1,
        verbose=-1,
    )


def mlp(random_state: int) -> RegressorMixin:
    return MLPHeadRegressor(random_state=random_state)


def krr(random_state: int) -> RegressorMixin:
    # gamma=None is 1 / n_features, the same kernel width as the SVR on standardised inputs.
    return _standardised_target(KernelRidge(kernel="rbf", alpha=0.3))


def ridge(random_state: int) -> RegressorMixin:
    # Efficient leave-one-out CV over a wide alpha grid.
    return RidgeCV(alphas=np.logspace(-3, 4, 15))


def temporal(random_state: int) -> RegressorMixin:
    # The seeds' per-second heads (SimpleVQA, RQ-VQA, AutoHome): a 2-layer MLP per step, mean over time.
    from regressors.temporal import TemporalHead

    return TemporalHead(random_state=random_state)


def make_learner(spec: str, random_state: int = 0, reduce: str | None = None) -> Pipeline:
    """A fresh, unfitted ``MedianImputer -> StandardScaler -> model`` pipeline for a learner spec.

    ``spec`` is a name or ``name(key=value, ...)`` (see :mod:`regressors.spec`): the parameters are
    set on the model step. ``random_state`` seeds the stochastic models (LightGBM, MLP, temporal
    head), svr_grid's inner selection split and the reduction; the others ignore it. ``reduce``
    (``"pca:N"``, :mod:`regressors.preprocess`) puts a PCA fitted on the training rows between the
    scaler and the model. A learner reading per-step features (``inputs="steps"``) gets
    pass-through steps instead, and no reduction: imputing, scaling or projecting a
    ``(items, steps, features)`` array column-wise would destroy its mask, so such a model
    normalises over the valid steps itself.
    """
    parsed = parse_learner(spec)
    entry = LEARNER_TABLE[parsed.name]
    model = resolve(entry.factory)(random_state)
    if parsed.params:
        valid = model.get_params()
        unknown = [k for k, _ in parsed.params if k not in valid]
        if unknown:
            raise UsageError(f"learner {parsed.name!r} has no parameter {', '.join(unknown)}; its parameters: "
                             f"{', '.join(k for k in valid if '__' not in k)}")
        model.set_params(**dict(parsed.params))
        check = getattr(model, "check_params", None)
        if check is not None:  # a bad loss or pooling is refused now, not after a whole extraction
            try:
                check()
            except ValueError as exc:
                raise UsageError(f"learner {spec!r}: {exc}") from None
    if entry.inputs == "steps":
        return Pipeline([("impute", "passthrough"), ("scale", "passthrough"), ("model", model)])
    steps: list[tuple[str, Any]] = [
        ("impute", MedianImputer()),
        ("scale", StandardScaler()),
    ]
    reducer = make_reducer(reduce, random_state)
    if reducer is not None:
        steps.append(("reduce", reducer))
    return Pipeline([*steps, ("model", model)])


@dataclass(frozen=True)
class Prepared:
    """A training part's fitted preprocessing steps and what they made of it.

    Imputation, scaling and the reduction depend only on the features, so every learner (of the
    same input kind) and every target fitted on one training part can share them: at deep-feature
    widths the PCA costs as much as a fast learner's fit.
    """

    steps: list[tuple[str, Any]]
    Z: np.ndarray


def prepare(name: str, X: np.ndarray, random_state: int = 0, reduce: str | None = None) -> Prepared:
    """The preprocessing of learner ``name``'s pipeline fitted on ``X``, with ``X`` transformed."""
    preprocess = Pipeline(make_learner(name, random_state, reduce).steps[:-1])
    Z = preprocess.fit_transform(X)
    return Prepared(preprocess.steps, Z)


def fit_targets(name: str, X: np.ndarray, Y: np.ndarray, random_state: int = 0,
                templates: list[RegressorMixin] | None = None, reduce: str | None = None,
                prepared: Prepared | None = None) -> list[Pipeline]:
    """One fitted :func:`make_learner` pipeline per column of ``Y``, sharing the work they have in common.

    The imputer, scaler and reduction depend only on ``X``: they are fitted once and shared by
    every target's pipeline, and by other learners too when the caller passes the same
    ``prepared`` (:func:`prepare` on this ``X``). A learner whose entry names a ``shared_fit`` (the
    SVR's kernel) fits all targets in one call; the others are fitted target by target.
    ``templates`` (one unfitted model step per target, e.g. an svr_grid fixed to the pair its
    outer fit chose) replace the learner's default model. The pipelines equal
    ``make_learner(name, random_state, reduce).fit(X, Y[:, j])`` each.
    """
    if prepared is None:
        prepared = prepare(name, X, random_state, reduce)
    Z = prepared.Z
    template = make_learner(name, random_state).steps[-1][1]
    shared_fit = learner_entry(name).shared_fit
    if templates is not None:
        models = [clone(t).fit(Z, Y[:, j]) for j, t in enumerate(templates)]
    elif shared_fit is not None:
        models = resolve(shared_fit)(template, Z, Y)
    else:
        models = [clone(template).fit(Z, Y[:, j]) for j in range(Y.shape[1])]
    return [Pipeline([*prepared.steps, ("model", model)]) for model in models]


def predict_targets(models: list[Pipeline], X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
    """``(n, targets)`` predictions of the pipelines :func:`fit_targets` returned, doing once what they share.

    The pipelines share one fitted imputer, scaler (and reduction), applied here once, or not at
    all when the caller passes ``Z``, ``X`` through that shared preprocessing already; heads
    fitted for every target at once (the MLP's :class:`~regressors.mlp.TargetColumn` views) run once.
    """
    if Z is None:
        Z = Pipeline(models[0].steps[:-1]).transform(X)
    heads: dict[int, np.ndarray] = {}
    columns = []
    for model in models:
        step = model.steps[-1][1]
        if isinstance(step, TargetColumn):
            if id(step.estimator) not in heads:
                heads[id(step.estimator)] = step.estimator.predict(Z)
            columns.append(heads[id(step.estimator)][:, step.column])
        else:
            columns.append(step.predict(Z))
    return np.column_stack(columns)
