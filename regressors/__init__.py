"""Regressors mapping banked features to MOS: named sklearn pipelines, a torch MLP head, safe persistence.

:data:`LEARNERS` is a static table, so listing learner names (the CLI's help, argument checks)
imports neither scikit-learn, LightGBM nor torch. Each entry also names the classes a fitted model
of that learner contains: :mod:`regressors.persist` derives its load allowlist from this table, so
a learner cannot be added without saying what its saved files hold, and tests/test_registry.py
round-trips every entry through save and load.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LearnerEntry:
    """Where a learner is built and what a fitted one is made of."""

    factory: str
    """``module:function`` taking ``random_state`` and returning the unfitted model."""
    types: tuple[str, ...]
    """Dotted import paths of every class a fitted model holds, besides the pipeline around it."""
    min_train: int = 2
    """Fewest training rows it can fit on (an inner CV needs one row per inner fold at least)."""
    shared_fit: str | None = None
    """``module:function(model, X, Y)`` fitting one copy of the model step per column of ``Y`` with
    the work the targets share done once (see :func:`regressors.learners.fit_targets`)."""
    legacy_types: tuple[str, ...] = ()
    """Classes that models saved by earlier featbank versions hold: still loadable."""
    inputs: str = "pooled"
    """What it reads of a feature block: ``"pooled"`` (one vector per item) or ``"steps"``
    (``(items, steps, features)``, NaN on absent steps; the workflow loads them from the bank)."""


PIPELINE_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "regressors.preprocess.MedianImputer",
    "sklearn.impute.SimpleImputer",  # the imputer of models saved by featbank before MedianImputer
    "sklearn.preprocessing.StandardScaler",
    "regressors.preprocess.FoldPCA",
    "sklearn.decomposition.PCA",
)
"""The ``impute -> scale [-> reduce] -> model`` pipeline :func:`make_learner` wraps every model in."""

_STANDARDISED_TARGET = ("sklearn.compose.TransformedTargetRegressor", "sklearn.preprocessing.StandardScaler")

LEARNER_TABLE: dict[str, LearnerEntry] = {
    "svr": LearnerEntry("regressors.learners:svr", ("regressors.kernel_svr.KernelSVR",),
                        shared_fit="regressors.kernel_svr:fit_shared_kernel",
                        legacy_types=(*_STANDARDISED_TARGET, "sklearn.svm.SVR")),
    "svr_grid": LearnerEntry("regressors.learners:svr_grid", (
        "regressors.svr_grid.SVRGridRegressor", "sklearn.preprocessing.MinMaxScaler", "sklearn.svm.SVR")),
    "elasticnet": LearnerEntry("regressors.learners:elasticnet", ("regressors.elasticnet.SelfTunedElasticNet",),
                               min_train=5, legacy_types=("sklearn.linear_model.ElasticNetCV",)),
    "lightgbm": LearnerEntry("regressors.learners:lightgbm", ("lightgbm.LGBMRegressor", "lightgbm.Booster")),
    "mlp": LearnerEntry("regressors.learners:mlp", ("regressors.mlp.MLPHeadRegressor", "regressors.mlp.TargetColumn"),
                        shared_fit="regressors.mlp:fit_multi_output"),
    "krr": LearnerEntry("regressors.learners:krr", (*_STANDARDISED_TARGET, "sklearn.kernel_ridge.KernelRidge")),
    "ridge": LearnerEntry("regressors.learners:ridge", ("sklearn.linear_model.RidgeCV",), min_train=3),
    "temporal": LearnerEntry("regressors.learners:temporal", ("regressors.temporal.TemporalHead",
                                                             "regressors.mlp.TargetColumn"),
                             shared_fit="regressors.mlp:fit_multi_output", inputs="steps"),
}
"""Learner name -> its entry. Add a new learner here (and its factory in regressors.learners)."""

LEARNERS: tuple[str, ...] = tuple(LEARNER_TABLE)
"""Valid names for :func:`make_learner`."""

# Imported on first use: each pulls in scikit-learn, and the MLP torch.
_LAZY = {
    "make_learner": "regressors.learners",
    "fit_targets": "regressors.learners",
    "prepare": "regressors.learners",
    "predict_targets": "regressors.learners",
    "load_learner": "regressors.persist",
    "save_learner": "regressors.persist",
    "MLPHeadRegressor": "regressors.mlp",
    "SVRGridRegressor": "regressors.svr_grid",
    "TemporalHead": "regressors.temporal",
    "parse_learner": "regressors.spec",
    "split_learners": "regressors.spec",
}

__all__ = ["LEARNERS", "LEARNER_TABLE", "LearnerEntry", "PIPELINE_TYPES", "learner_entry", *_LAZY]


def learner_entry(spec: str) -> LearnerEntry:
    """The table entry of a learner spec (``"mlp"``, ``"mlp(hidden=(128,))"``)."""
    from regressors.spec import parse_learner

    return LEARNER_TABLE[parse_learner(spec).name]


def resolve(path: str) -> Any:
    """The object a ``module.attr`` or ``module:attr`` path names, importing its module."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'regressors' has no attribute {name!r}")
