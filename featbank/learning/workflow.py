"""The fit, evaluate and predict workflows: manifest + bank → feature blocks → engine → files.

``fit`` and ``evaluate`` are one workflow: both run :func:`featbank.learning.engine.evaluate`
under a protocol and save the same files (``predictions.csv`` with video ids, ``scores.csv`` per
round, ``summary.csv``, ``splits.npz``, ``stack_weights.csv``, ``run.json``, ``report.md`` with
plots); ``fit`` then refits the final model on every row and saves it in ``model/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import extractors
from featbank.bank.matrix import FeatureBlocks
from featbank.bank.store import FeatureBank
from featbank.errors import BankError, FeatbankError, ItemsFailedError, ManifestError
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.weights import WeightsPolicy
from featbank.io.manifest import Manifest, load_manifest
from featbank.io.submission import write_submission
from featbank.learning import engine
from featbank.learning.blocks import bank_keys, load_feature_blocks, load_step_blocks
from featbank.io.tracks import Track
from featbank.learning.ensemble import MeanEnsemble, fit_final, load_model
from featbank.learning.official import evaluation_scores, official_summary
from featbank.learning.protocols import Protocol, ProtocolContext, parse_protocol
from featbank.learning.report import summary_text, write_report
from featbank.learning.results import Evaluation, Official
from regressors.preprocess import parse_reduce
from regressors.spec import on_device


def _progress_bar(enabled: bool, desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="fit", disable=not enabled)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _as_bank(bank: FeatureBank | str | Path) -> FeatureBank:
    """``bank`` itself when already open, else the bank at that path or URL opened for reading."""
    return bank if isinstance(bank, FeatureBank) else FeatureBank(bank, mode="r")


@dataclass
class TrainingData:
    """A manifest's usable rows as regressors see them: blocks, labels (n, targets), groups."""

    manifest: Manifest
    targets: list[str]
    features: FeatureBlocks
    blocks: dict[str, np.ndarray]
    Y: np.ndarray
    groups: np.ndarray | None
    steps: dict[str, np.ndarray] | None = None

    @property
    def video_ids(self) -> np.ndarray:
        return np.asarray(self.manifest.video_ids)[self.features.usable]

    def column(self, name: str) -> np.ndarray:
        """A manifest column over the usable rows (what a holdout protocol splits on)."""
        if name not in self.manifest.table.columns:
            raise ManifestError(f"column {name!r} is not in {self.manifest.source}")
        return self.manifest.table[name].to_numpy()[self.features.usable]

    def protocol(self, spec: str, seed: int = 0) -> Protocol:
        """The protocol ``spec`` names, over these rows."""
        return parse_protocol(spec, ProtocolContext(seed=seed, column=self.column))


def training_data(manifest: Manifest | Path, bank: FeatureBank | str | Path, features: list[str],
                  targets: list[str] | None, learners: list[str] = ()) -> TrainingData:
    """Labels and banked features of every manifest row whose extraction did not fail.

    Per-step blocks are read too when one of ``learners`` reads steps (the temporal head).
    """
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    targets = targets or manifest.label_columns
    if not targets:
        raise ManifestError(f"{manifest.source} has no label columns to fit")
    labels = manifest.labels(targets)
    bank = _as_bank(bank)
    fb = load_feature_blocks(bank, manifest, features)
    groups = manifest.groups.to_numpy()[fb.usable] if manifest.groups is not None else None
    read_steps = any(engine.reads_steps(learner) for learner in learners)
    steps = _usable_steps(bank, manifest, fb, list(fb.blocks) if read_steps else [])
    return TrainingData(manifest, list(targets), fb, fb.subset(), labels.to_numpy()[fb.usable], groups, steps)


def _usable_steps(bank: FeatureBank, manifest: Manifest, fb: FeatureBlocks,
                  names: list[str]) -> dict[str, np.ndarray] | None:
    """The per-step form of the named blocks over ``fb``'s usable rows; None when none is named."""
    if not names:
        return None
    return {name: X[fb.usable] for name, X in load_step_blocks(bank, manifest, names).items()}


@dataclass
class Outcome:
    """What ``fit`` or ``evaluate`` produced, and where it was written."""

    evaluation: Evaluation
    out_dir: Path
    report: Path
    dropped: list[tuple[str, str]]
    model_dir: Path | None = None
    official: Official | None = None

    @property
    def summary(self) -> pd.DataFrame:
        return self.evaluation.summary()

    @property
    def text(self) -> str:
        """Console summary: what was run, one table per target, then where everything was written."""
        parts = [summary_text(self.evaluation, self.official)]
        if self.dropped:
            parts.append(f"\n{len(self.dropped)} item(s) left out because extraction failed "
                         f"(e.g. {self.dropped[0][0]} [{self.dropped[0][1]}])")
        parts.append(f"\nreport: {self.report}")
        if self.model_dir is not None:
            parts.append(f"model:  {self.model_dir}")
        return "\n".join(parts)


def evaluate_manifest(manifest: Manifest | Path, bank: FeatureBank | str | Path, features: list[str],
                      targets: list[str] | None, learners: list[str], protocol: str = "videval",
                      stack: bool = True, out_dir: Path = Path("runs/evaluate"), seed: int = 0,
                      n_jobs: int = -1, progress: bool = True, refit: bool = False,
                      track: Track | None = None, pairs: pd.DataFrame | None = None,
                      ensemble: str = "refit", stack_mode: str = "nested", device: str = "cpu",
                      reduce: str | None = None) -> Outcome:
    """Score base learners (and the stack) under a protocol for every target; write the results.

    ``device`` (e.g. ``"cuda"``) is where the torch heads train (:func:`regressors.spec.on_device`);
    ``reduce`` (``"pca:N"``) ends every pooled base's preprocessing with a PCA fitted in the fold.

    With ``track``, the track's official score of every model comes first (``official.csv``,
    console, report); ``pairs`` is the organisers' pair file for KVQ's Rank1/Rank2. With ``refit``
    (what ``featbank fit`` does) the final model is then saved in ``out_dir/model``: refitted on
    every usable row (``ensemble="refit"``) or the mean of the split models (``"mean"``).
    """
    learners = [on_device(learner, device) for learner in learners]
    parse_reduce(reduce)  # a bad spec is refused before the features are read
    data = training_data(manifest, bank, features, targets, learners)
    splits = data.protocol(protocol, seed)
    update, close = _progress_bar(progress, "fit" if refit else "evaluate")
    try:
        evaluation = engine.evaluate(data.blocks, data.Y, data.targets, learners, splits, groups=data.groups,
                                     steps=data.steps, stack=stack, n_jobs=n_jobs, keep_models=refit and ensemble == "mean",
                                     progress=update, stack_mode=stack_mode, reduce=reduce)
    finally:
        close()
    evaluation.save(out_dir, sample_ids=data.video_ids)
    official = None
    if track is not None:
        scores = evaluation_scores(track, evaluation, data.video_ids, data.groups, pairs)
        summary = evaluation.summary()
        order = list(summary.groupby("model", sort=False)["selection_median"].mean()
                     .sort_values(ascending=False, kind="stable").index)
        official = Official(track.name, track.score, scores, official_summary(track, scores, order))
        official.save(out_dir)
    report = write_report(evaluation, out_dir, "fit" if refit else "evaluate", official)
    model_dir = None
    if refit:
        final = fit_final(data.blocks, data.Y, data.targets, learners, evaluation, stack=stack, n_jobs=n_jobs,
                          mode=ensemble, steps=data.steps)
        model_dir = out_dir / "model"
        final.save(model_dir)
    return Outcome(evaluation=evaluation, out_dir=out_dir, report=report, dropped=data.features.dropped,
                   model_dir=model_dir, official=official)


def fit_manifest(manifest: Manifest | Path, bank: FeatureBank | str | Path, features: list[str],
                 targets: list[str] | None, learners: list[str], protocol: str = "kfold:5",
                 stack: bool = True, out_dir: Path = Path("runs/fit"), seed: int = 0, n_jobs: int = -1,
                 progress: bool = True, track: Track | None = None, pairs: pd.DataFrame | None = None,
                 ensemble: str = "refit", stack_mode: str = "nested", device: str = "cpu",
                 reduce: str | None = None) -> Outcome:
    """Evaluate under ``protocol`` (grouped 5-fold by default), then fit and save the final model."""
    return evaluate_manifest(manifest, bank, features, targets, learners, protocol=protocol, stack=stack,
                             out_dir=out_dir, seed=seed, n_jobs=n_jobs, progress=progress, refit=True,
                             track=track, pairs=pairs, ensemble=ensemble, stack_mode=stack_mode, device=device,
                             reduce=reduce)


def _extractor_specs(bank_path: str | Path, keys: list[str], weights: WeightsPolicy) -> list[str]:
    """The extractor spec that produced each extracted bank key, checked against the current code.

    Imported groups are skipped: there is nothing to extract for them. Items of the manifest that
    such a group lacks stop the prediction in :func:`load_blocks`, which says to import them.
    """
    bank = FeatureBank(bank_path, mode="r")
    specs = []
    for key in bank_keys(keys):
        if bank.is_imported(key):
            continue
        schema = bank.schema(key)
        spec = schema.spec
        if schema.random_weights and not weights.random:
            raise BankError(f"the model was fitted on {key}, features of RANDOM weights; predicting "
                            f"with it needs --random-weights too (and is only good for dry runs)")
        ex = extractors.create(spec)
        ex.adopt(weights)
        if ex.key != key:
            raise BankError(f"the model was fitted on {key}, but extractor {spec!r} now produces "
                            f"{ex.key}; refit or use the matching featbank version")
        specs.append(spec)
    return specs


FILL_RULES = ("median",)
"""How ``predict --fill-missing`` may fill items that have no prediction (only on request)."""


def predict_manifest(manifest_path: Path, bank_path: str | Path, model_dir: Path, out: Path,
                     device: str = "cpu", weights: WeightsPolicy | None = None, progress: bool = True,
                     track: Track | None = None, fill_missing: str | None = None) -> pd.DataFrame:
    """Extract what the model needs and is missing, predict, write the submission.

    Without ``track`` the file is a CSV ``video_id,<targets>``; with it, the track's own layout
    (e.g. THQA-NTIRE's zip of ``output.txt``). A submission never goes out with holes: items
    whose extraction failed stop the command with their list (ItemsFailedError, exit 6) and
    nothing is written, unless ``fill_missing="median"`` fills each of them with the median
    prediction of the other items (and the error is raised after writing, so the exit code
    still says items failed). An ensemble of split models also writes ``<out>.spread.csv``,
    the members' standard deviation per item.
    """
    model = load_model(model_dir)
    if fill_missing is not None and fill_missing not in FILL_RULES:
        raise FeatbankError(f"unknown --fill-missing rule {fill_missing!r}; use {', '.join(FILL_RULES)}")
    keys = list(model.block_dims)
    weights = weights or WeightsPolicy()
    extract_manifest(manifest_path, bank_path, _extractor_specs(bank_path, keys, weights), device=device,
                     weights=weights, progress=progress)
    manifest = load_manifest(manifest_path)
    bank = FeatureBank(bank_path, mode="r")
    fb = load_feature_blocks(bank, manifest, keys)
    steps = _usable_steps(bank, manifest, fb, list(model.step_dims))
    ids = np.asarray(manifest.video_ids)
    missing = ids[~fb.usable]
    if not fb.usable.any() or (missing.size and fill_missing is None):
        raise ItemsFailedError(
            f"{missing.size} item(s) have no features, so no prediction: {', '.join(missing[:10])}"
            f"{' …' if missing.size > 10 else ''}; nothing was written. Fix or drop them (see `featbank info "
            f"--failures`), or pass --fill-missing median to fill them with the median prediction")
    preds = pd.DataFrame(np.nan, index=range(len(ids)), columns=model.targets)
    preds.loc[fb.usable] = model.predict(fb.subset(), steps).to_numpy()
    if missing.size:
        preds = preds.fillna(preds.median())
    preds.insert(0, "video_id", ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    if track is not None:
        write_submission(track, list(ids), preds, out)
    else:
        preds.to_csv(out, index=False)
    if isinstance(model, MeanEnsemble):
        spread = pd.DataFrame(np.nan, index=range(len(ids)), columns=model.targets)
        spread.loc[fb.usable] = model.spread(fb.subset(), steps).to_numpy()
        spread.insert(0, "video_id", ids)
        spread.to_csv(out.with_name(out.name + ".spread.csv"), index=False)
    if missing.size:
        raise ItemsFailedError(f"wrote {out}, with {missing.size} item(s) filled by the median prediction: "
                               f"{', '.join(missing[:10])}{' …' if missing.size > 10 else ''}")
    return preds
