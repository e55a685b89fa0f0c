"""A torch head over per-step features: the seeds' per-second regression, pooled over time.

SimpleVQA and its descendants (RQ-VQA, the KVQ 2024 winner; MiVQA, 3rd on FineVD; AutoHome, 3rd
on THQA) and QA Team's audio-visual winner regress each second of a video from its features and
pool the per-second scores over time, instead of regressing one pooled vector. This head does
that on banked per-step features: a 2-layer MLP applied to every step (``Linear -> GELU ->
Dropout -> Linear``, one output per target on one shared trunk, as MiVQA's six FineVD heads),
then pooling over the valid steps of each item:

* ``pooling="mean"``: the masked mean of the per-step scores (SimpleVQA, RQ-VQA, AutoHome);
* ``pooling="attention"``: a softmax over the valid steps of a learned per-step, per-target logit,
  so a few bad seconds can weigh more than their share.

Input is ``(items, steps, features)`` with NaN on absent steps (the layout
:func:`featbank.bank.timeline.load_timeline` returns; a step is absent when all its features
are NaN); a 2-d ``(items, features)`` array is one step per item, so the head also fits the
pooled blocks and honours scikit-learn's estimator checks. Features are standardised over the
valid steps of the training items (a column-wise scaler in front would count padding), and a
NaN inside a valid step becomes the training mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from regressors.losses import resolve_loss
from regressors.torch_head import (
    TorchStateMixin,
    single_thread,
    standardise_targets,
    train,
    unstandardise,
)

POOLINGS = ("mean", "attention")


class _StepHead(torch.nn.Module):
    """Per-step 2-layer MLP with one output per target, pooled over the valid steps."""

    def __init__(self, n_features: int, hidden: int, n_outputs: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.GELU(),
                                         torch.nn.Dropout(dropout))
        self.score = torch.nn.Linear(hidden, n_outputs)
        self.attend = torch.nn.Linear(hidden, n_outputs) if attention else None

    def forward(self, steps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(steps)                       # (n, T, hidden)
        scores = self.score(hidden)                      # (n, T, outputs)
        valid = mask.unsqueeze(-1)
        if self.attend is None:
            weights = valid.to(scores.dtype) / valid.sum(dim=1, keepdim=True)
        else:
            weights = self.attend(hidden).masked_fill(~valid, float("-inf")).softmax(dim=1)
        return (weights * scores).sum(dim=1)             # (n, outputs)


def _as_steps(X: np.ndarray) -> np.ndarray:
    """``(items, steps, features)`` of a checked 2-d or 3-d input (2-d: one step per item)."""
    if X.ndim == 2:
        return X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"TemporalHead needs (items, steps, features) or (items, features), got shape {X.shape}")
    return X


_CHECKS = {"allow_nd": True, "ensure_all_finite": "allow-nan", "dtype": np.float32}
"""scikit-learn's input checks (sparse, complex, empty, infinite are refused); NaN marks absent steps."""


class TemporalHead(TorchStateMixin, RegressorMixin, BaseEstimator):
    """Per-step 2-layer MLP pooled over time, trained with AdamW on standardised targets.

    Parameters
    ----------
    hidden : width of the per-step hidden layer (RQ-VQA's and FIEE's cards: 128).
    pooling : ``"mean"`` or ``"attention"`` over the valid steps.
    loss : a loss of :mod:`regressors.losses` or a weighted sum (``"l1+plcc+srcc"``).
    dropout, epochs, lr, weight_decay, batch_size : optimisation settings.
    device : torch device to train on (``"cuda"`` on a GPU machine); the fitted module is kept on the CPU.
    random_state : seeds initialisation, dropout and shuffling (bit-identical on the CPU).
    """

    def __init__(self, hidden: int = 128, pooling: str = "mean", loss: str = "mse", dropout: float = 0.1,
                 epochs: int = 100, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 32,
                 device: str = "cpu", random_state: int = 0) -> None:
        self.hidden = hidden
        self.pooling = pooling
        self.loss = loss
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN marks absent steps
        tags.target_tags.multi_output = True  # one shared trunk, one output per target
        return tags

    def _build(self, n_features: int, n_outputs: int = 1) -> _StepHead:
        return _StepHead(n_features, self.hidden, n_outputs, self.dropout, self.pooling == "attention")

    def _inputs(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised steps (absent ones and NaN set to 0) and the mask of valid steps."""
        mask = ~np.isnan(X).all(axis=2)
        mask[~mask.any(axis=1), 0] = True  # an item without any valid step scores as the mean item
        Z = np.nan_to_num((X - self.feature_mean_) / self.feature_scale_, nan=0.0)
        Z[~mask] = 0.0
        return torch.from_numpy(Z), torch.from_numpy(mask)

    def check_params(self) -> None:
        """ValueError for a parameter that would only fail once training starts (pooling, loss)."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        resolve_loss(self.loss)

    def fit(self, X: Any, y: Any) -> TemporalHead:
        self.check_params()
        loss = resolve_loss(self.loss)
        X, y = check_X_y(X, y, multi_output=True, y_numeric=True, ensure_min_samples=2, **_CHECKS)
        X = _as_steps(X)
        self.n_features_in_ = X.shape[2]
        valid = X[~np.isnan(X).all(axis=2)].astype(np.float64)
        mean = np.nan_to_num(np.nanmean(valid, axis=0)) if len(valid) else np.zeros(X.shape[2])
        scale = np.nan_to_num(np.nanstd(valid, axis=0)) if len(valid) else np.ones(X.shape[2])
        scale[scale == 0] = 1.0
        self.feature_mean_, self.feature_scale_ = mean.astype(np.float32), scale.astype(np.float32)
        targets = torch.tensor(standardise_targets(self, y), dtype=torch.float32)
        self.module_ = train(lambda: self._build(X.shape[2], self.n_outputs_), self._inputs(X), targets, loss,
                             self.epochs, self.lr, self.weight_decay, self.batch_size, self.random_state,
                             self.device)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = _as_steps(check_array(X, **_CHECKS))
        if X.shape[2] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[2]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        with single_thread(), torch.no_grad():
            out = self.module_(*self._inputs(X)).numpy()
        return unstandardise(self, out)
