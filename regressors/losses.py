"""Training losses for the MLP and temporal heads, all ``(pred, target) -> scalar`` over one mini-batch.

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


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (FIEE's L1 term, SJTU-MOE-AI's MAE term): robust to outlying MOS."""
    return torch.mean(torch.abs(pred - target))


def _pearson(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p = p - p.mean()
    t = t - t.mean()
    # Epsilon inside the root: sqrt has an infinite slope at 0, which made the gradient NaN for a
    # batch with tied targets (or constant predictions), e.g. a 2-sample last batch on MOS ties.
    return torch.sum(p * t) / torch.sqrt(torch.sum(p**2) * torch.sum(t**2) + _EPS)


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Pearson r`` within the batch; 0 for a perfect linear fit, 2 for a reversed one.

    Scale- and shift-free, so predictions land on an arbitrary affine scale; the metrics' logistic
    mapping and the stack's linear meta-learner absorb that. Used as the main term in FAST-VQA and
    DOVER training (Wu et al., ECCV 2022 / ICCV 2023, ``plcc_loss``) and analysed as the
    normalised-MSE family in Li et al., "Norm-in-Norm Loss", ACM MM 2020.
    """
    return 1.0 - _pearson(pred, target)


SOFT_RANK_TEMPERATURE = 0.1
"""Width of the sigmoid that replaces the step in soft ranks, in units of standardised MOS."""


def soft_rank(x: torch.Tensor, temperature: float = SOFT_RANK_TEMPERATURE) -> torch.Tensor:
    """Differentiable ranks: ``rank_i = sum_j sigmoid((x_i - x_j) / temperature)``, the 1-based rank - 0.5.

    The pairwise-sigmoid relaxation of the rank (as in Blondel et al., ICML 2020, compared there
    with their faster projection; a batch of tens of items makes the O(n^2) form cheap). As the
    temperature goes to 0 it tends to the average rank, ties included.
    """
    return torch.sigmoid((x[:, None] - x[None, :]) / temperature).sum(dim=1)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Exact ranks with ties averaged (what SRCC uses), without gradient."""
    greater = (x[:, None] > x[None, :]).sum(dim=1)
    ties = (x[:, None] == x[None, :]).sum(dim=1)
    return (greater + 0.5 * (ties + 1)).to(x.dtype)


def srcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Spearman`` with soft ranks of the predictions against the exact ranks of the MOS.

    The differentiable SRCC term of FIEE (L1 + PLCC + SRCC) and SharpMind's teacher (SRCC + PLCC).
    """
    return 1.0 - _pearson(soft_rank(pred), _average_ranks(target))


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
    "l1": l1_loss,
    "mae": l1_loss,
    "plcc": plcc_loss,
    "srcc": srcc_loss,
    "rank": rank_hinge_loss,
    "fidelity": fidelity_loss,
    "plcc+rank": plcc_rank_loss,
}
"""Loss name -> function. Heads also take weighted sums of these names, see :func:`resolve_loss`."""

ELEMENTWISE: frozenset[Loss] = frozenset({mse_loss, l1_loss})
"""Losses that are a mean over elements: on a ``(batch, targets)`` matrix their mean over every
element equals the mean of their per-target values, so a multi-output head computes them in one call."""


def resolve_loss(expression: str) -> Loss:
    """The loss a head's ``loss`` parameter names: one of :data:`LOSSES` or a weighted sum of them.

    ``"l1+plcc+srcc"`` (FIEE) is the plain sum; ``"fidelity+plcc+0.1*mae"`` (SJTU-MOE-AI) weights a
    term. A name in :data:`LOSSES` wins over reading it as a sum: ``"plcc+rank"`` keeps FAST-VQA's
    0.3 weight on the rank term (write ``"plcc+1*rank"`` for the plain sum). ValueError, listing the
    names, for anything else.
    """
    if expression in LOSSES:
        return LOSSES[expression]
    terms: list[tuple[float, Loss]] = []
    for term in expression.split("+"):
        weight, _, name = term.strip().rpartition("*")
        try:
            factor = float(weight) if weight else 1.0
        except ValueError:
            factor = None
        if factor is None or name.strip() not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a sum of them such as 'l1+plcc+srcc' "
                             f"or 'fidelity+plcc+0.1*mae', got {expression!r}")
        terms.append((factor, LOSSES[name.strip()]))

    def weighted_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(pred, target) for w, loss in terms)

    return weighted_sum
