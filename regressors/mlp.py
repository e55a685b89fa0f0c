"""A small torch MLP regression head behind the scikit-learn estimator interface.

Deep VQA models are usually evaluated by training a light head on frozen features; this is that
head, made to behave like any sklearn regressor so it can sit in a Pipeline, be cloned per fold,
run inside joblib workers and be persisted with skops (its torch weights are exposed to pickling
protocols as plain numpy arrays, see :meth:`MLPHeadRegressor.__getstate__`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from regressors.losses import LOSSES, Loss


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous setting afterwards.

    Cross-validation already parallelises over fits with joblib; letting each fit also spawn one
    torch thread per core oversubscribes the machine and is slower, not faster, for a tiny MLP.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _per_column(loss: Loss) -> Loss:
    """The mean of ``loss`` over output columns: each target keeps its own correlation or ranking."""
    def total(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(pred[:, j], target[:, j]) for j in range(pred.shape[1])]).mean()
    return total


class MLPHeadRegressor(RegressorMixin, BaseEstimator):
    """Fully connected regression head trained with AdamW on standardised targets.

    Parameters
    ----------
    hidden : hidden layer widths; each layer is Linear -> GELU -> Dropout.
    dropout : dropout probability after each hidden layer.
    loss : one of ``"mse"``, ``"plcc"``, ``"rank"``, ``"fidelity"``, ``"plcc+rank"``
        (see :mod:`regressors.losses`). The correlation/rank losses are scale-free, so
        predictions are then only meaningful up to a monotone (or affine) map.
    epochs, lr, weight_decay, batch_size : optimisation settings (AdamW, shuffled mini-batches).
    random_state : seeds weight initialisation, dropout and shuffling; a fixed seed gives
        bit-identical results on the same machine.

    Inputs are expected standardised (``make_learner`` puts a scaler in front). ``y`` is
    standardised internally so the learning rate and the rank margin mean the same thing for
    1-5 and 0-100 MOS scales.
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
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _build(self, n_features: int, n_outputs: int = 1) -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        width = n_features
        for size in self.hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.GELU(), torch.nn.Dropout(self.dropout)]
            width = size
        layers.append(torch.nn.Linear(width, n_outputs))
        return torch.nn.Sequential(*layers)

    def fit(self, X: Any, y: Any) -> MLPHeadRegressor:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        Y = y.reshape(len(y), -1)
        self.n_outputs_ = Y.shape[1]
        mean, scale = Y.mean(axis=0), Y.std(axis=0)
        scale[scale == 0] = 1.0
        # One output keeps scalar statistics (and the saved format of single-target heads).
        self.y_mean_ = float(mean[0]) if y.ndim == 1 else mean
        self.y_scale_ = float(scale[0]) if y.ndim == 1 else scale
        features = torch.tensor(X, dtype=torch.float32)
        targets = torch.tensor((Y - mean) / scale, dtype=torch.float32)
        loss_fn = _per_column(LOSSES[self.loss])
        # fork_rng keeps the caller's global torch RNG untouched while seeding init and dropout.
        with _single_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            shuffler = torch.Generator().manual_seed(self.random_state)
            module = self._build(X.shape[1], self.n_outputs_)
            optimiser = torch.optim.AdamW(
                module.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
            module.train()
            for _ in range(self.epochs):
                for batch in torch.randperm(len(targets), generator=shuffler).split(self.batch_size):
                    if len(batch) < 2:  # correlation and pairwise losses need two samples
                        continue
                    optimiser.zero_grad()
                    loss_fn(module(features[batch]), targets[batch]).backward()
                    optimiser.step()
        module.eval()
        self.module_ = module
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with _single_thread(), torch.no_grad():
            out = self.module_(torch.tensor(X, dtype=torch.float32)).numpy().astype(np.float64)
        out = out * self.y_scale_ + self.y_mean_
        return out[:, 0] if np.ndim(self.y_mean_) == 0 else out

    def __getstate__(self) -> dict[str, Any]:
        """Replace the torch module by its weights as numpy arrays.

        skops (and any pickler) then sees only numpy arrays and builtins, never a torch object,
        so a saved head can be loaded without trusting torch's own pickle machinery.
        """
        state = dict(super().__getstate__())  # object.__getstate__ returns the live __dict__
        module = state.pop("module_", None)
        if module is not None:
            state["module_weights_"] = {
                name: tensor.detach().cpu().numpy().copy()
                for name, tensor in module.state_dict().items()
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("module_weights_", None)
        super().__setstate__(state)
        if weights is not None:
            # Building initialises weights from the global torch RNG; fork it so that loading a
            # head leaves the caller's random stream untouched, as fitting does.
            with torch.random.fork_rng(devices=[]):
                module = self._build(self.n_features_in_, getattr(self, "n_outputs_", 1))
            module.load_state_dict({name: torch.from_numpy(np.array(w)) for name, w in weights.items()})
            module.eval()
            self.module_ = module


class TargetColumn(RegressorMixin, BaseEstimator):
    """One target of a fitted multi-output head: ``estimator.predict(X)[:, column]``.

    Lets a head trained on all targets at once stand wherever one model per target is expected
    (a pipeline per target, a stack, a saved final model).
    """

    def __init__(self, estimator: MLPHeadRegressor | None = None, column: int = 0) -> None:
        self.estimator = estimator
        self.column = column

    def fit(self, X: Any, y: Any) -> TargetColumn:
        raise NotImplementedError("TargetColumn wraps a fitted multi-output head; fit the head on every target")

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None and hasattr(self.estimator, "module_")

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator.predict(X)[:, self.column]


def fit_multi_output(model: MLPHeadRegressor, X: np.ndarray, Y: np.ndarray) -> list[TargetColumn]:
    """One head with a shared trunk and one output per target (MiVQA's six FineVD heads), fitted once."""
    head = clone(model).fit(X, Y)
    return [TargetColumn(head, j) for j in range(Y.shape[1])]
