"""Training losses for the MLP head, all ``(pred, target) -> scalar`` over one mini-batch.

VQA is judged by correlations, not squared error, so besides MSE the head can optimise losses
that reward getting the *order* or the *linear trend* right. ``pred`` and ``target`` are 1-d
tensors of equal length; targets are standardised MOS (the head standardises ``y``), which is
what the scale-dependent losses below assume. Correlation and pairwise losses need at least two
samples per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_EPS = 1e-8


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the plain regression baseline."""
    return torch.mean((pred - target) ** 2)


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Pearson r`` within the batch; 0 for a perfect linear fit, 2 for a reversed one.

    Scale- and shift-free, so predictions land on an arbitrary affine scale; the metrics' logistic
    mapping and the stack's linear meta-learner absorb that. Used as the main term in FAST-VQA and
    DOVER training (Wu et al., ECCV 2022 / ICCV 2023, ``plcc_loss``) and analysed as the
    normalised-MSE family in Li et al., "Norm-in-Norm Loss", ACM MM 2020.
    """
    p = pred - pred.mean()
    t = target - target.mean()
    # Epsilon inside the root: sqrt has an infinite slope at 0, which made the gradient NaN for a
    # batch with tied targets (or constant predictions), e.g. a 2-sample last batch on MOS ties.
    r = torch.sum(p * t) / torch.sqrt(torch.sum(p**2) * torch.sum(t**2) + _EPS)
    return 1.0 - r


def _pair_differences(x: torch.Tensor) -> torch.Tensor:
    """Entries ``x_i - x_j`` for all ordered pairs i < j, as a flat vector."""
    i, j = torch.triu_indices(x.numel(), x.numel(), offset=1, device=x.device)
    return x[i] - x[j]


def rank_hinge_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise hinge on order: ``mean relu(margin * |dy| - sign(dy) * dp)`` over pairs.

    The zero-margin version is the ``rank_loss`` of FAST-VQA / DOVER (Wu et al.), which has the
    degenerate constant prediction as a minimiser. A fixed margin instead over-penalises near-ties
    that raters themselves cannot order. Scaling the margin by the MOS gap ``|dy|`` avoids both: a
    prediction equal to the (standardised) MOS has exactly zero loss, and a constant one does not.
    """
    dp = _pair_differences(pred)
    dy = _pair_differences(target)
    return torch.mean(torch.relu(margin * dy.abs() - torch.sign(dy) * dp))


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def fidelity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fidelity loss on pairwise preference probabilities (Tsai et al., "FRank", SIGIR 2007).

    As in UNIQUE (Zhang et al., IEEE TIP 2021) and LIQE (Zhang et al., CVPR 2023), the predicted
    probability that i beats j is the Thurstone Case V ``p_hat = Phi((s_i - s_j) / sqrt 2)``; the
    ground truth uses the same model on the standardised MOS, ``p = Phi((y_i - y_j) / sqrt 2)``
    (unit per-item variance, as no per-video MOS std is available). The loss
    ``1 - sqrt(p p_hat) - sqrt((1 - p)(1 - p_hat))`` is 0 iff the probabilities agree, is bounded
    by 1, and its gradient stays finite because the square roots are offset by a small epsilon.
    """
    p_hat = _normal_cdf(_pair_differences(pred) / math.sqrt(2.0))
    p = _normal_cdf(_pair_differences(target) / math.sqrt(2.0))
    fidelity = torch.sqrt(p * p_hat + _EPS) + torch.sqrt((1.0 - p) * (1.0 - p_hat) + _EPS)
    return torch.mean(1.0 - fidelity)


RANK_WEIGHT = 0.3
"""Weight of the rank term in ``plcc+rank``: FAST-VQA / DOVER train with ``plcc + 0.3 * rank``."""


def plcc_rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``plcc_loss + 0.3 * rank_hinge_loss``, the FAST-VQA / DOVER combination."""
    return plcc_loss(pred, target) + RANK_WEIGHT * rank_hinge_loss(pred, target)


LOSSES: dict[str, Loss] = {
    "mse": mse_loss,
    "plcc": plcc_loss,
    "rank": rank_hinge_loss,
    "fidelity": fidelity_loss,
    "plcc+rank": plcc_rank_loss,
}
"""Loss name (the MLP head's ``loss`` parameter) -> function."""
