"""The final model: base learners refitted on all data, combined as the evaluation recommends.

Stacked, the meta weights are the rounds' meta-learners averaged (a linear blend, so averaging
coefficients averages the blends); otherwise each target uses its best base learner by the
median signed selection score. Only bases with a positive weight are refitted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import RegressorMixin

import featbank
from featbank.errors import FeatbankError
from featbank.learning.engine import base_names, check_inputs, split_base
from featbank.learning.results import STACK, Evaluation
from regressors import load_learner, make_learner, save_learner

_DESCRIPTION = "ensemble.json"


@dataclass
class FittedEnsemble:
    """Base learners refitted on all data plus, per target, how to combine them.

    ``models[target]`` maps base-learner names to fitted pipelines. When ``stacked``, the
    prediction is ``intercepts[target] + sum(weights[target][b] * models[target][b](X_b))``; only
    bases with a positive weight are refitted (the others contribute nothing). Otherwise
    ``chosen[target]`` names the single best base learner by cross-validated main score.
    """

    targets: list[str]
    learners: list[str]
    block_dims: dict[str, int]
    stacked: bool
    chosen: dict[str, str]
    models: dict[str, dict[str, RegressorMixin]]
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    intercepts: dict[str, float] = field(default_factory=dict)

    def predict(self, blocks: dict[str, np.ndarray]) -> pd.DataFrame:
        """Predictions, one column per target, for the samples in ``blocks``.

        Every block recorded at fit time must be present with its recorded width, so a bank
        re-extracted with a different extractor version fails loudly instead of mispredicting.
        """
        arrays = {}
        for name, dim in self.block_dims.items():
            if name not in blocks:
                raise FeatbankError(f"predict needs feature block {name!r} (d={dim})")
            X = np.asarray(blocks[name], dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != dim:
                raise FeatbankError(f"block {name!r} must have shape (n, {dim}), got {X.shape}")
            arrays[name] = X
        sizes = {X.shape[0] for X in arrays.values()}
        if len(sizes) != 1:
            raise FeatbankError(f"feature blocks disagree on the number of samples: {sorted(sizes)}")
        n = sizes.pop()
        out = {}
        for target in self.targets:
            if self.stacked:
                blend = np.full(n, self.intercepts[target])
                for base, model in self.models[target].items():
                    blend += self.weights[target][base] * model.predict(arrays[split_base(base)[0]])
                out[target] = blend
            else:
                base = self.chosen[target]
                out[target] = self.models[target][base].predict(arrays[split_base(base)[0]])
        return pd.DataFrame(out)

    def save(self, directory: str | Path) -> None:
        """Write ``ensemble.json`` plus one skops file per fitted base learner into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, str]] = {}
        for t, target in enumerate(self.targets):
            files[target] = {}
            for b, (base, model) in enumerate(self.models[target].items()):
                # The index keeps names unique: sanitising alone maps e.g. "x@1" and "x_1" together.
                filename = f"target{t}-{b}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', base)}.skops"
                save_learner(model, directory / filename)
                files[target][base] = filename
        description = {
            "featbank_version": featbank.__version__,
            "targets": self.targets,
            "learners": self.learners,
            "blocks": self.block_dims,
            "stacked": self.stacked,
            "chosen": self.chosen,
            "stack": {
                t: {"weights": self.weights[t], "intercept": self.intercepts[t]} for t in self.weights
            },
            "models": files,
        }
        (directory / _DESCRIPTION).write_text(json.dumps(description, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FittedEnsemble:
        """Read an ensemble written by :meth:`save`; learner files go through the skops allowlist."""
        directory = Path(directory)
        path = directory / _DESCRIPTION
        if not path.is_file():
            raise FeatbankError(f"{directory} holds no fitted ensemble ({_DESCRIPTION} missing)")
        description = json.loads(path.read_text())
        return cls(
            targets=description["targets"],
            learners=description["learners"],
            block_dims=description["blocks"],
            stacked=description["stacked"],
            chosen=description["chosen"],
            models={
                target: {base: load_learner(directory / name) for base, name in per_target.items()}
                for target, per_target in description["models"].items()
            },
            weights={t: s["weights"] for t, s in description["stack"].items()},
            intercepts={t: s["intercept"] for t, s in description["stack"].items()},
        )


def _fit_full(X: np.ndarray, y: np.ndarray, learner: str) -> RegressorMixin:
    return make_learner(learner, random_state=0).fit(X, y)


def fit_final(
    blocks: dict[str, np.ndarray],
    Y: np.ndarray,
    targets: list[str],
    learners: list[str],
    evaluation: Evaluation,
    stack: bool = True,
    n_jobs: int = -1,
) -> FittedEnsemble:
    """Refit base learners on all data and combine them as ``evaluation`` recommends."""
    blocks, Y = check_inputs(blocks, Y, targets, learners)
    bases = base_names(blocks, learners)
    missing = set(bases) - set(evaluation.bases)
    if missing:
        raise FeatbankError(f"the evaluation has no predictions for {sorted(missing)}")
    if stack and not evaluation.stacked:
        raise FeatbankError("a stacked final model needs an evaluation run with stacking")
    weights: dict[str, dict[str, float]] = {}
    intercepts: dict[str, float] = {}
    chosen: dict[str, str] = {}
    keep: dict[str, list[str]] = {}
    for target in targets:
        if stack:
            all_weights, intercepts[target] = evaluation.mean_stack_weights(target)
            weights[target] = {b: all_weights[b] for b in bases}
            chosen[target] = STACK
            keep[target] = [b for b in bases if weights[target][b] > 0]
        else:
            chosen[target] = evaluation.best_base(target)
            keep[target] = [chosen[target]]
    jobs = [(target, base) for target in targets for base in keep[target]]
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_full)(blocks[split_base(base)[0]], Y[:, targets.index(target)], split_base(base)[1])
        for target, base in jobs
    )
    models: dict[str, dict[str, RegressorMixin]] = {target: {} for target in targets}
    for (target, base), model in zip(jobs, fitted, strict=True):
        models[target][base] = model
    return FittedEnsemble(
        targets=list(targets),
        learners=list(learners),
        block_dims={name: X.shape[1] for name, X in blocks.items()},
        stacked=stack,
        chosen=chosen,
        models=models,
        weights=weights,
        intercepts=intercepts,
    )
