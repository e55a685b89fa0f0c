"""The final model, in one of two modes.

* ``refit`` (default): base learners refitted on all data. Stacked, the meta weights are the
  rounds' meta-learners averaged (a linear blend, so averaging coefficients averages the blends);
  otherwise each target uses its best base learner by the median signed selection score. Only
  bases with a positive weight are refitted.
* ``mean``: the models the protocol already fitted, one member per split (each split's bases with
  that split's meta-learner), predicting their mean: the podium systems' "ten random splits,
  average the ten models". The spread of the members is a per-item uncertainty.
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
from featbank.learning.engine import (
    base_names,
    block_input,
    check_inputs,
    check_steps,
    reads_steps,
    split_base,
)
from featbank.learning.results import STACK, Evaluation
from regressors import fit_targets, load_learner, save_learner

_DESCRIPTION = "ensemble.json"


@dataclass
class FittedEnsemble:
    """Base learners refitted on all data plus, per target, how to combine them.

    ``models[target]`` maps base-learner names to fitted pipelines. When ``stacked``, the
    prediction is ``intercepts[target] + sum(weights[target][b] * models[target][b](X_b))``; only
    bases with a positive weight are refitted (the others contribute nothing). Otherwise
    ``chosen[target]`` names the single best base learner by cross-validated main score.
    ``step_dims`` holds the per-step width of each block a step-reading learner (the temporal
    head) was fitted on; the number of steps may differ between items and manifests.
    """

    targets: list[str]
    learners: list[str]
    block_dims: dict[str, int]
    stacked: bool
    chosen: dict[str, str]
    models: dict[str, dict[str, RegressorMixin]]
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    intercepts: dict[str, float] = field(default_factory=dict)
    step_dims: dict[str, int] = field(default_factory=dict)

    def predict(self, blocks: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """Predictions, one column per target, for the samples in ``blocks`` (and ``steps``).

        Every block recorded at fit time must be present with its recorded width, so a bank
        re-extracted with a different extractor version fails loudly instead of mispredicting.
        """
        arrays = {name: _checked(blocks, name, dim, 2, np.float64) for name, dim in self.block_dims.items()}
        step_arrays = {name: _checked(steps or {}, name, dim, 3, np.float32) for name, dim in self.step_dims.items()}
        sizes = {X.shape[0] for X in (*arrays.values(), *step_arrays.values())}
        if len(sizes) != 1:
            raise FeatbankError(f"feature blocks disagree on the number of samples: {sorted(sizes)}")
        n = sizes.pop()
        out = {}
        for target in self.targets:
            if self.stacked:
                blend = np.full(n, self.intercepts[target])
                for base, model in self.models[target].items():
                    blend += self.weights[target][base] * model.predict(block_input(arrays, step_arrays, base))
                out[target] = blend
            else:
                base = self.chosen[target]
                out[target] = self.models[target][base].predict(block_input(arrays, step_arrays, base))
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
            "kind": "refit",
            "featbank_version": featbank.__version__,
            "targets": self.targets,
            "learners": self.learners,
            "blocks": self.block_dims,
            "step_blocks": self.step_dims,
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
        description = _description(directory)
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
            step_dims=description.get("step_blocks", {}),
        )


def _checked(blocks: dict[str, np.ndarray], name: str, dim: int, ndim: int, dtype: type) -> np.ndarray:
    """Block ``name`` of ``blocks`` as ``dtype``, refused unless it has ``ndim`` axes and width ``dim``."""
    what = "per-step feature block" if ndim == 3 else "feature block"
    if name not in blocks:
        raise FeatbankError(f"predict needs {what} {name!r} (d={dim})")
    X = np.asarray(blocks[name], dtype=dtype)
    if X.ndim != ndim or X.shape[-1] != dim:
        shape = f"(n, steps, {dim})" if ndim == 3 else f"(n, {dim})"
        raise FeatbankError(f"{what} {name!r} must have shape {shape}, got {X.shape}")
    return X


def _description(directory: Path) -> dict:
    path = directory / _DESCRIPTION
    if not path.is_file():
        raise FeatbankError(f"{directory} holds no fitted ensemble ({_DESCRIPTION} missing)")
    return json.loads(path.read_text())


@dataclass
class MeanEnsemble:
    """Several fitted ensembles (one per split) whose predictions are averaged."""

    members: list[FittedEnsemble]

    @property
    def targets(self) -> list[str]:
        return self.members[0].targets

    @property
    def block_dims(self) -> dict[str, int]:
        return self.members[0].block_dims

    @property
    def step_dims(self) -> dict[str, int]:
        return self.members[0].step_dims

    def member_predictions(self, blocks: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None = None
                           ) -> np.ndarray:
        """(members, n, targets) predictions."""
        return np.stack([m.predict(blocks, steps)[self.targets].to_numpy() for m in self.members])

    def predict(self, blocks: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.member_predictions(blocks, steps).mean(axis=0), columns=self.targets)

    def spread(self, blocks: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """Standard deviation of the members' predictions, per item and target."""
        return pd.DataFrame(self.member_predictions(blocks, steps).std(axis=0), columns=self.targets)

    def save(self, directory: str | Path) -> None:
        """``ensemble.json`` naming the members, each saved whole in ``split<i>/``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = [f"split{i}" for i in range(len(self.members))]
        for name, member in zip(names, self.members, strict=True):
            member.save(directory / name)
        description = {"kind": "mean", "featbank_version": featbank.__version__, "targets": self.targets,
                       "blocks": self.block_dims, "members": names}
        (directory / _DESCRIPTION).write_text(json.dumps(description, indent=2))


FinalModel = FittedEnsemble | MeanEnsemble


def load_model(directory: str | Path) -> FinalModel:
    """The final model saved in ``directory`` by ``fit``, whichever its kind."""
    directory = Path(directory)
    description = _description(directory)
    if description.get("kind", "refit") == "mean":
        return MeanEnsemble([FittedEnsemble.load(directory / name) for name in description["members"]])
    return FittedEnsemble.load(directory)


def _fit_full(X: np.ndarray, Y: np.ndarray, learner: str, reduce: str | None) -> list[RegressorMixin]:
    return fit_targets(learner, X, Y, random_state=0, reduce=reduce)


def fit_final(
    blocks: dict[str, np.ndarray],
    Y: np.ndarray,
    targets: list[str],
    learners: list[str],
    evaluation: Evaluation,
    stack: bool = True,
    n_jobs: int = -1,
    mode: str = "refit",
    steps: dict[str, np.ndarray] | None = None,
) -> FinalModel:
    """The final model: bases refitted on all data (``refit``) or the split models averaged (``mean``).

    ``steps`` are the per-step blocks, as :func:`featbank.learning.engine.evaluate` takes them; the
    refitted bases get the evaluation's ``reduce`` (each saved pipeline carries its PCA).
    """
    step_dims = {name: X.shape[-1] for name, X in (steps or {}).items()} if any(map(reads_steps, learners)) else {}
    if mode == "mean":
        return _split_mean(evaluation, targets, learners, {n: X.shape[1] for n, X in blocks.items()}, stack,
                           step_dims)
    if mode != "refit":
        raise FeatbankError(f"unknown ensemble mode {mode!r}; use refit or mean")
    blocks, Y = check_inputs(blocks, Y, targets, learners)
    steps = check_steps(steps, blocks, Y.shape[0], learners)
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
    # One job per base, fitting every target that keeps it (what the targets share is done once).
    needed = {base: [t for t in targets if base in keep[t]] for base in bases}
    jobs = [(base, needed[base]) for base in bases if needed[base]]
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_full)(block_input(blocks, steps, base), Y[:, [targets.index(t) for t in those]],
                           split_base(base)[1], evaluation.reduce)
        for base, those in jobs
    )
    models: dict[str, dict[str, RegressorMixin]] = {target: {} for target in targets}
    for (base, those), per_target in zip(jobs, fitted, strict=True):
        for target, model in zip(those, per_target, strict=True):
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
        step_dims=step_dims,
    )


def _split_mean(evaluation: Evaluation, targets: list[str], learners: list[str], block_dims: dict[str, int],
                stack: bool, step_dims: dict[str, int]) -> MeanEnsemble:
    """One member per split, from the models the evaluation kept (``keep_models=True``)."""
    if not evaluation.split_models:
        raise FeatbankError("an ensemble of the split models needs an evaluation run with keep_models=True")
    if stack and not evaluation.stacked:
        raise FeatbankError("a stacked ensemble needs an evaluation run with stacking")
    members = []
    weights_of = evaluation.split_stack_weights
    for split in range(evaluation.n_splits):
        chosen, models, weights, intercepts = {}, {}, {}, {}
        for target in targets:
            if stack:
                row = weights_of[(weights_of["split"] == split) & (weights_of["target"] == target)].iloc[0]
                weights[target] = {b: float(row[b]) for b in evaluation.bases}
                intercepts[target] = float(row["intercept"])
                chosen[target] = STACK
                keep = [b for b in evaluation.bases if weights[target][b] > 0]
            else:
                chosen[target] = evaluation.best_base(target)
                keep = [chosen[target]]
            models[target] = {b: evaluation.split_models[(split, target, b)] for b in keep}
        members.append(FittedEnsemble(targets=list(targets), learners=list(learners), block_dims=block_dims,
                                      stacked=stack, chosen=chosen, models=models, weights=weights,
                                      intercepts=intercepts, step_dims=step_dims))
    return MeanEnsemble(members)

