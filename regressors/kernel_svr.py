"""RBF support-vector regression on a precomputed kernel, shared by every target of one fit.

libsvm evaluates an RBF kernel entry by entry in a scalar loop and caches rows; on deep features
(thousands of dimensions, thousands of videos) that loop is the whole cost of an SVR fit. One
matrix product (BLAS) computes the same kernel many times faster, and the kernel depends only on
the features: every target of a multi-target fit (FineVD's six dimensions) reuses it, and so does
every C and gamma of a grid search (``exp(-gamma * D)`` of one distance matrix ``D``).

:class:`KernelSVR` is the ``svr`` learner: epsilon-SVR with ``gamma="scale"`` on a standardised
target, as ``TransformedTargetRegressor(SVR(kernel="rbf"), StandardScaler())`` (what ``svr`` was
before), fitted with libsvm on the precomputed kernel. A fitted model keeps only its support
vectors, dual coefficients and intercept, and predicts ``K(X, SV) @ dual + b`` (libsvm's decision
function), so it needs neither the training data nor libsvm at prediction time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted, validate_data


def scale_gamma(X: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"``: ``1 / (n_features * X.var())``, 1 when X is constant."""
    variance = float(X.var())
    return 1.0 / (X.shape[1] * variance) if variance > 0 else 1.0


class KernelSVR(RegressorMixin, BaseEstimator):
    """Epsilon-SVR with an RBF kernel computed by BLAS, on a standardised target.

    Parameters
    ----------
    C, epsilon : libsvm's penalty and tube half-width, in units of the standardised target (so
        one default suits 1-5 and 0-100 MOS scales).
    gamma : ``"scale"`` (``1 / (n_features * X.var())``, scikit-learn's default) or a number.

    Fitted attributes: ``gamma_``, ``support_vectors_``, ``dual_coef_`` (one per support
    vector), ``intercept_``, ``y_mean_``, ``y_scale_``.
    """

    def __init__(self, C: float = 3.0, epsilon: float = 0.1, gamma: float | str = "scale") -> None:
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma

    def _gamma(self, X: np.ndarray) -> float:
        return scale_gamma(X) if self.gamma == "scale" else float(self.gamma)

    def fit(self, X: Any, y: Any) -> KernelSVR:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        gamma = self._gamma(X)
        return self.fit_kernel(rbf_kernel(X, gamma=gamma), X, y, gamma)

    def fit_kernel(self, K: np.ndarray, X: np.ndarray, y: np.ndarray, gamma: float) -> KernelSVR:
        """Fit on the training kernel ``K`` of ``X`` (computed with ``gamma``): the shared-kernel path."""
        self.n_features_in_ = X.shape[1]
        self.gamma_ = gamma
        self.y_mean_ = float(np.mean(y))
        self.y_scale_ = float(np.std(y)) or 1.0
        svr = SVR(kernel="precomputed", C=self.C, epsilon=self.epsilon)
        svr.fit(K, (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_)
        self.support_vectors_ = X[svr.support_].copy()
        self.dual_coef_ = svr.dual_coef_.ravel().copy()
        self.intercept_ = float(svr.intercept_[0])
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        kernel = rbf_kernel(X, self.support_vectors_, gamma=self.gamma_)
        return (kernel @ self.dual_coef_ + self.intercept_) * self.y_scale_ + self.y_mean_


def fit_shared_kernel(model: KernelSVR, X: np.ndarray, Y: np.ndarray) -> list[KernelSVR]:
    """One fitted copy of ``model`` per column of ``Y``, all on one kernel of ``X``."""
    X = np.asarray(X, dtype=np.float64)
    gamma = model._gamma(X)
    K = rbf_kernel(X, gamma=gamma)
    return [clone(model).fit_kernel(K, X, Y[:, j], gamma) for j in range(Y.shape[1])]
