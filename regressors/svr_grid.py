"""RBF SVR with VIDEVAL's model selection done inside ``fit``.

The VIDEVAL / UGC-VQA benchmark (Tu et al., TIP 2021) picks an RBF SVR's ``(C, gamma)`` per
train/test split on the training part only: one inner 80/20 split of the training part, every
pair of a 10 x 10 grid fitted on the inner 80% and scored on the inner 20% by the RMSE after a
4-parameter logistic, then the winner refitted on the whole training part. Doing all of that in
``fit`` makes the search a property of the estimator: anything that clones it per fold (a
protocol, cross-validation, a stack's inner folds) cannot leak test labels into the choice.

Features are min-max scaled, fitted on the data being fitted (the inner 80% during the search,
the whole training part for the refit), exactly as VIDEVAL. Inside :func:`regressors.make_learner`
a ``StandardScaler`` sits in front; per column it is a positive affine map, which min-max scaling
undoes exactly, so the pipeline selects the same pair and predicts the same values (up to float
rounding; ``tests/test_protocols.py`` checks it). The target is used on its raw scale with the
default ``epsilon=0.1``, as VIDEVAL does, so the grid means what it meant in the paper: on a 0-100
MOS scale (LIVE-VQC) the tube is narrow and large C is favoured.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted, validate_data

from featbank.learning.metrics import MIN_SAMPLES, rmse

VIDEVAL_C: tuple[float, ...] = tuple(2.0**k for k in range(1, 11))
"""C = 2^1 .. 2^10, VIDEVAL's ``np.logspace(1, 10, 10, base=2)``."""

VIDEVAL_GAMMA: tuple[float, ...] = tuple(2.0**k for k in range(-8, 2))
"""gamma = 2^-8 .. 2^1, VIDEVAL's ``np.logspace(-8, 1, 10, base=2)``."""


def _validation_rmses(D_fit: np.ndarray, y_fit: np.ndarray, D_val: np.ndarray, y_val: np.ndarray,
                      C_grid: Sequence[float], gamma: float, epsilon: float) -> list[float]:
    """Validation RMSE after the logistic mapping fitted there (VIDEVAL's criterion), for each C.

    ``D_fit`` / ``D_val`` are the squared distances among the fitting rows and from the validation
    rows to them: one kernel ``exp(-gamma * D)`` serves every C (see :mod:`regressors.kernel_svr`).
    """
    K_fit, K_val = np.exp(-gamma * D_fit), np.exp(-gamma * D_val)
    errors = []
    with warnings.catch_warnings():
        # A grid corner (tiny C and gamma) can predict a near-constant; the logistic then falls
        # back to a line and says so. That pair simply scores badly; the warning is noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        for C in C_grid:
            prediction = SVR(kernel="precomputed", C=C, epsilon=epsilon).fit(K_fit, y_fit).predict(K_val)
            errors.append(rmse(y_val, prediction))
    return errors


class SVRGridRegressor(RegressorMixin, BaseEstimator):
    """Min-max scaling + RBF SVR whose ``(C, gamma)`` is chosen from its own training data.

    Parameters
    ----------
    C_grid, gamma_grid : candidate values; the grid is their product, searched C-major (VIDEVAL's
        loop order, which decides ties). With one value each no search runs: the estimator is a
        plain min-max + SVR with that pair (see :meth:`selected`).
    validation_size : fraction of the training data held out for the inner selection split.
    epsilon : SVR tube half-width, in units of y (raw MOS, as VIDEVAL).
    random_state : seed of the inner ``train_test_split``. VIDEVAL's split i uses ``ceil(6.6 * i)``.
    n_jobs : grid fits run in parallel with joblib only when ``n_jobs > 1`` (protocols already
        parallelise over splits; nesting pools would oversubscribe).

    Fitted attributes: ``C_``, ``gamma_`` (the chosen pair), ``validation_rmse_`` (shape
    ``(len(C_grid), len(gamma_grid))``, NaN when no search ran), ``scaler_``, ``svr_``.
    """

    def __init__(
        self,
        C_grid: Sequence[float] = VIDEVAL_C,
        gamma_grid: Sequence[float] = VIDEVAL_GAMMA,
        validation_size: float = 0.2,
        epsilon: float = 0.1,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.validation_size = validation_size
        self.epsilon = epsilon
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _search(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Validation RMSE of every grid pair, from an inner split of (X, y) only."""
        if math.ceil(self.validation_size * len(y)) < MIN_SAMPLES:
            raise ValueError(
                f"svr_grid's inner validation part of {len(y)} samples would hold fewer than "
                f"{MIN_SAMPLES} (the logistic's parameter count); fit on more data or fix the pair"
            )
        X_fit, X_val, y_fit, y_val = train_test_split(
            X, y, test_size=self.validation_size, random_state=self.random_state
        )
        scaler = MinMaxScaler().fit(X_fit)
        X_fit, X_val = scaler.transform(X_fit), scaler.transform(X_val)
        D_fit = euclidean_distances(X_fit, squared=True)
        D_val = euclidean_distances(X_val, X_fit, squared=True)
        job = delayed(_validation_rmses)
        args = [(D_fit, y_fit, D_val, y_val, self.C_grid, gamma, self.epsilon) for gamma in self.gamma_grid]
        if self.n_jobs > 1:
            columns = Parallel(n_jobs=self.n_jobs)(job(*a) for a in args)
        else:
            columns = [_validation_rmses(*a) for a in args]
        return np.asarray(columns, dtype=np.float64).T  # (C, gamma): argmin ties break C-major

    def fit(self, X: Any, y: Any) -> SVRGridRegressor:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if len(self.C_grid) == 0 or len(self.gamma_grid) == 0:
            raise ValueError("C_grid and gamma_grid must each hold at least one value")
        if len(self.C_grid) * len(self.gamma_grid) == 1:
            self.validation_rmse_ = np.full((1, 1), np.nan)
            best = (0, 0)
        else:
            self.validation_rmse_ = self._search(X, y)
            best = np.unravel_index(int(np.argmin(self.validation_rmse_)), self.validation_rmse_.shape)
        self.C_ = float(self.C_grid[best[0]])
        self.gamma_ = float(self.gamma_grid[best[1]])
        self.scaler_ = MinMaxScaler().fit(X)
        self.svr_ = SVR(kernel="rbf", C=self.C_, gamma=self.gamma_, epsilon=self.epsilon)
        self.svr_.fit(self.scaler_.transform(X), y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "svr_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.svr_.predict(self.scaler_.transform(X))

    def selected(self) -> SVRGridRegressor:
        """An unfitted copy fixed to the chosen pair: no search, same scaling and epsilon.

        Used for a stack's inner folds: the pair was chosen from the split's training part only,
        so reusing it on subsets of that part leaks nothing, and saves 100 fits per inner fold.
        """
        check_is_fitted(self, "svr_")
        params = self.get_params()
        params.update(C_grid=(self.C_,), gamma_grid=(self.gamma_,))
        return type(self)(**params)
