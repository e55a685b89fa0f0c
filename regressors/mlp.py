"""A small torch MLP regression head behind the scikit-learn estimator interface.

Deep VQA models are usually evaluated by training a light head on frozen features; this is that
head, made to behave like any sklearn regressor so it can sit in a Pipeline, be cloned per fold,
run inside joblib workers and be persisted with skops (its torch weights are exposed to pickling
protocols as plain numpy arrays, see :class:`~regressors.torch_head.TorchStateMixin`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from regressors.losses import resolve_loss
from regressors.torch_head import (
    TorchStateMixin,
    single_thread,
    standardise_targets,
    train,
    unstandardise,
)


class MLPHeadRegressor(TorchStateMixin, RegressorMixin, BaseEstimator):
    """Fully connected regression head trained with AdamW on standardised targets.

    Parameters
    ----------
    hidden : hidden layer widths; each layer is Linear -> GELU -> Dropout.
    dropout : dropout probability after each hidden layer.
    loss : a loss of :mod:`regressors.losses` (``"mse"``, ``"l1"``, ``"plcc"``, ``"srcc"``, ``"rank"``,
        ``"fidelity"``, ``"plcc+rank"``) or a weighted sum such as ``"l1+plcc+srcc"``. The
        correlation/rank losses are scale-free, so
        predictions are then only meaningful up to a monotone (or affine) map.
    epochs, lr, weight_decay, batch_size : optimisation settings (AdamW, shuffled mini-batches).
    device : torch device to train on (``"cuda"`` on a GPU machine); the fitted module is kept on the CPU.
    random_state : seeds weight initialisation, dropout and shuffling; a fixed seed gives
        bit-identical results on the same machine (on the CPU).

    Inputs are expected standardised (``make_learner`` puts a scaler in front); ``y`` is
    standardised internally (:func:`~regressors.torch_head.standardise_targets`).
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (256,),
        dropout: float = 0.1,
        loss: str = "mse",
        epochs: int = 150,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        device: str = "cpu",
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one shared trunk, one output per target
        return tags

    def _build(self, n_features: int, n_outputs: int = 1) -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        width = n_features
        for size in self.hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.GELU(), torch.nn.Dropout(self.dropout)]
            width = size
        layers.append(torch.nn.Linear(width, n_outputs))
        return torch.nn.Sequential(*layers)

    def check_params(self) -> None:
        """ValueError for a parameter that would only fail once training starts (the loss)."""
        resolve_loss(self.loss)

    def fit(self, X: Any, y: Any) -> MLPHeadRegressor:
        loss = resolve_loss(self.loss)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        targets = torch.tensor(standardise_targets(self, y), dtype=torch.float32)
        features = torch.tensor(X, dtype=torch.float32)
        self.module_ = train(lambda: self._build(X.shape[1], self.n_outputs_), (features,), targets, loss,
                             self.epochs, self.lr, self.weight_decay, self.batch_size, self.random_state,
                             getattr(self, "device", "cpu"))  # heads saved before 0.1 have no device
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with single_thread(), torch.no_grad():
            out = self.module_(torch.tensor(X, dtype=torch.float32)).numpy()
        return unstandardise(self, out)


class TargetColumn(RegressorMixin, BaseEstimator):
    """One target of a fitted multi-output head: ``estimator.predict(X)[:, column]``.

    Lets a head trained on all targets at once stand wherever one model per target is expected
    (a pipeline per target, a stack, a saved final model).
    """

    def __init__(self, estimator: RegressorMixin | None = None, column: int = 0) -> None:
        self.estimator = estimator
        self.column = column

    def fit(self, X: Any, y: Any) -> TargetColumn:
        raise NotImplementedError("TargetColumn wraps a fitted multi-output head; fit the head on every target")

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None and hasattr(self.estimator, "module_")

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator.predict(X)[:, self.column]


def fit_multi_output(model: RegressorMixin, X: np.ndarray, Y: np.ndarray) -> list[TargetColumn]:
    """One head with a shared trunk and one output per target (MiVQA's six FineVD heads), fitted once."""
    head = clone(model).fit(X, Y)
    return [TargetColumn(head, j) for j in range(Y.shape[1])]
