"""What the torch heads (:mod:`regressors.mlp`, :mod:`regressors.temporal`) share.

Each head is a scikit-learn estimator around a small torch module: trained with AdamW on
standardised targets over shuffled mini-batches, seeded without touching the caller's random
stream, one intra-op thread, and pickled as numpy weights so skops never sees a torch object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from regressors.losses import ELEMENTWISE, Loss


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous setting afterwards.

    Cross-validation already parallelises over fits with joblib; letting each fit also spawn one
    torch thread per core oversubscribes the machine and is slower, not faster, for a tiny head.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def per_column(loss: Loss) -> Loss:
    """The mean of ``loss`` over output columns: each target keeps its own correlation or ranking.

    An elementwise loss (MSE, L1) is applied to the whole matrix at once: the same value, without a
    loop over targets that cost a quarter of a six-target MLP's training step.
    """
    if loss in ELEMENTWISE:
        return loss

    def total(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(pred[:, j], target[:, j]) for j in range(pred.shape[1])]).mean()
    return total


def standardise_targets(head: Any, y: np.ndarray) -> np.ndarray:
    """``(n, outputs)`` standardised targets; sets ``head.n_outputs_``, ``y_mean_`` and ``y_scale_``.

    Standardising makes the learning rate and the rank margin mean the same thing for 1-5 and
    0-100 MOS scales. One output keeps scalar statistics (and the saved format of single-target heads).
    """
    Y = y.reshape(len(y), -1)
    head.n_outputs_ = Y.shape[1]
    mean, scale = Y.mean(axis=0), Y.std(axis=0)
    scale[scale == 0] = 1.0
    head.y_mean_ = float(mean[0]) if y.ndim == 1 else mean
    head.y_scale_ = float(scale[0]) if y.ndim == 1 else scale
    return (Y - mean) / scale


def unstandardise(head: Any, out: np.ndarray) -> np.ndarray:
    """Predictions on the MOS scale: ``(n,)`` for a single-target head, else ``(n, outputs)``."""
    out = out.astype(np.float64) * head.y_scale_ + head.y_mean_
    return out[:, 0] if np.ndim(head.y_mean_) == 0 else out


def train(build: Callable[[], torch.nn.Module], inputs: tuple[torch.Tensor, ...], targets: torch.Tensor,
          loss: Loss, epochs: int, lr: float, weight_decay: float, batch_size: int, seed: int,
          device: str = "cpu") -> torch.nn.Module:
    """A module built and trained with AdamW on shuffled mini-batches of ``inputs`` -> ``targets``.

    ``torch.random.fork_rng`` keeps the caller's global torch RNG untouched while seeding the
    initialisation and dropout, so a fixed seed gives bit-identical results on the same machine
    (on the CPU; CUDA kernels may differ in the last bits). Batches of one sample are skipped:
    correlation and pairwise losses need two.
    """
    loss_fn = per_column(loss)
    with single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shuffler = torch.Generator().manual_seed(seed)
        module = build().to(device)
        inputs = tuple(t.to(device) for t in inputs)
        targets = targets.to(device)
        optimiser = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
        module.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(targets), generator=shuffler).split(batch_size):
                if len(batch) < 2:
                    continue
                batch = batch.to(device)
                optimiser.zero_grad()
                loss_fn(module(*(t[batch] for t in inputs)), targets[batch]).backward()
                optimiser.step()
    module.eval()
    return module.cpu()


class TorchStateMixin:
    """Pickle a fitted head's torch module (``module_``) as numpy weights, rebuilt on load.

    skops (and any pickler) then sees only numpy arrays and builtins, never a torch object, so a
    saved head can be loaded without trusting torch's own pickle machinery. The class provides
    ``_build(n_features_in_, n_outputs_)``.
    """

    def __getstate__(self) -> dict[str, Any]:
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
