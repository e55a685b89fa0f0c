"""The fit and predict workflows: manifest + bank → feature blocks → CV/stack → files on disk.

Everything a fit produces lands in one directory: ``model/`` (safe-format models), ``oof.csv``
(out-of-fold predictions with fold ids, per repeat, target and model), ``scores.csv`` (per repeat),
``summary.csv`` (median/std over repeats) and ``report.md`` with its plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import extractors
from featbank.learning import protocols
from featbank.bank.store import FeatureBank
from featbank.learning.crossval import CVResult, FittedEnsemble, cross_validate, fit_final, fold_ids
from featbank.errors import BankError, FeatbankError, ManifestError
from featbank.bank.matrix import FeatureBlocks, load_blocks
from featbank.io.manifest import Manifest, load_manifest
from featbank.extraction.orchestrate import extract_manifest
from featbank.learning.protocols import Protocol
from featbank.learning.report import summary_text, write_report
from featbank.extraction.weights import WeightsPolicy


@dataclass
class FitOutcome:
    result: CVResult
    summary: pd.DataFrame
    out_dir: Path
    report: Path
    dropped: list[tuple[str, str]]

    @property
    def text(self) -> str:
        """Console summary: one table per target, then where everything was written."""
        parts = [summary_text(self.summary)]
        if self.dropped:
            parts.append(f"\n{len(self.dropped)} item(s) left out because extraction failed "
                         f"(e.g. {self.dropped[0][0]} [{self.dropped[0][1]}])")
        parts.append(f"\nreport: {self.report}\nmodel:  {self.out_dir / 'model'}")
        return "\n".join(parts)


def _progress_bar(enabled: bool, desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="fit", disable=not enabled)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


@dataclass
class TrainingData:
    """A manifest's usable rows as regressors see them: blocks, labels (n, targets), groups."""

    manifest: Manifest
    targets: list[str]
    features: FeatureBlocks
    blocks: dict[str, np.ndarray]
    Y: np.ndarray
    groups: np.ndarray | None

    @property
    def video_ids(self) -> np.ndarray:
        return np.asarray(self.manifest.video_ids)[self.features.usable]


def training_data(manifest_path: Path, bank_path: str | Path, features: list[str],
                  targets: list[str] | None) -> TrainingData:
    """Labels and banked features of every manifest row whose extraction did not fail."""
    manifest = load_manifest(manifest_path)
    targets = targets or manifest.label_columns
    if not targets:
        raise ManifestError(f"{manifest.source} has no label columns to fit")
    labels = manifest.labels(targets)
    fb = load_blocks(FeatureBank(bank_path, mode="r"), manifest, features)
    groups = manifest.groups.to_numpy()[fb.usable] if manifest.groups is not None else None
    return TrainingData(manifest, list(targets), fb, fb.subset(), labels.to_numpy()[fb.usable], groups)


def fit_manifest(manifest_path: Path, bank_path: str | Path, features: list[str], targets: list[str] | None,
                 learners: list[str], n_splits: int, repeats: int, seed: int, stack: bool,
                 out_dir: Path, n_jobs: int = -1, progress: bool = True) -> FitOutcome:
    data = training_data(manifest_path, bank_path, features, targets)
    blocks, Y, targets, fb = data.blocks, data.Y, data.targets, data.features
    folds = fold_ids(len(Y), n_splits=n_splits, repeats=repeats, seed=seed, groups=data.groups)
    update, close = _progress_bar(progress, "cross-validate")
    try:
        result = cross_validate(blocks, Y, targets, learners, folds, stack=stack, n_jobs=n_jobs,
                                progress=update)
    finally:
        close()
    ensemble = fit_final(blocks, Y, targets, learners, result, stack=stack, n_jobs=n_jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    ensemble.save(out_dir / "model")
    oof = result.oof.assign(video_id=data.video_ids[result.oof["sample"].to_numpy()])
    oof.to_csv(out_dir / "oof.csv", index=False)
    result.scores.to_csv(out_dir / "scores.csv", index=False)
    summary = result.summary()
    summary.to_csv(out_dir / "summary.csv", index=False)
    report = write_report(result.oof, summary, out_dir)
    return FitOutcome(result=result, summary=summary, out_dir=out_dir, report=report, dropped=fb.dropped)


def _extractor_specs(bank_path: str | Path, keys: list[str], weights: WeightsPolicy) -> list[str]:
    """The extractor spec that produced each extracted bank key, checked against the current code.

    Imported groups are skipped: there is nothing to extract for them. Items of the manifest that
    such a group lacks stop the prediction in :func:`load_blocks`, which says to import them.
    """
    bank = FeatureBank(bank_path, mode="r")
    specs = []
    for key in keys:
        if bank.is_imported(key):
            continue
        attrs = bank.group(key).attrs
        spec = attrs["spec"]
        if (attrs.get("weights") or {}).get("random") and not weights.random:
            raise BankError(f"the model was fitted on {key}, features of RANDOM weights; predicting "
                            f"with it needs --random-weights too (and is only good for dry runs)")
        ex = extractors.create(spec)
        ex.adopt(weights)
        if ex.key != key:
            raise BankError(f"the model was fitted on {key}, but extractor {spec!r} now produces "
                            f"{ex.key}; refit or use the matching featbank version")
        specs.append(spec)
    return specs


def predict_manifest(manifest_path: Path, bank_path: str | Path, model_dir: Path, out_csv: Path,
                     device: str = "cpu", weights: WeightsPolicy | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """Extract what the model needs and is missing, predict, write ``video_id,<targets>``.

    Items whose extraction failed get empty predictions rather than disappearing, so a submission
    keeps one row per manifest row.
    """
    ensemble = FittedEnsemble.load(model_dir)
    FeatureBank(bank_path, mode="r")  # the model's features are looked up there: it must exist
    keys = list(ensemble.block_dims)
    weights = weights or WeightsPolicy()
    extract_manifest(manifest_path, bank_path, _extractor_specs(bank_path, keys, weights), device=device,
                     weights=weights, progress=progress)
    manifest = load_manifest(manifest_path)
    fb = load_blocks(FeatureBank(bank_path, mode="r"), manifest, keys)
    preds = pd.DataFrame(np.nan, index=range(len(manifest.video_ids)), columns=ensemble.targets)
    if fb.usable.any():
        preds.loc[fb.usable] = ensemble.predict(fb.subset()).to_numpy()
    preds.insert(0, "video_id", manifest.video_ids)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out_csv, index=False)
    return preds


PROTOCOLS = "videval[:SPLITS] | kfold[:K[xREPEATS]] | holdout:COLUMN=VALUE"


def protocol_for(spec: str, data: TrainingData, seed: int = 0) -> Protocol:
    """The splits a protocol spec names, over ``data``'s usable rows.

    ``kfold`` is grouped whenever the manifest has a ``group`` column; ``holdout:meta_split=train``
    trains where that column equals ``train`` and scores every other row (NTIRE's train/val).
    """
    name, _, arg = spec.partition(":")
    n = len(data.Y)
    try:
        if name == "videval":
            return protocols.videval(n, int(arg) if arg else 100)
        if name == "kfold":
            k, _, repeats = (arg or "5").partition("x")
            return protocols.grouped_kfold(n, int(k), int(repeats or 1), seed, data.groups)
        if name == "holdout" and "=" in arg:
            column, value = arg.split("=", 1)
            if column not in data.manifest.table.columns:
                raise ManifestError(f"holdout column {column!r} is not in {data.manifest.source}")
            values = data.manifest.table[column].astype(str).to_numpy()[data.features.usable]
            return protocols.holdout(values == value, seed)
    except ValueError as error:
        raise FeatbankError(f"bad protocol {spec!r}: {error}") from error
    raise FeatbankError(f"unknown protocol {spec!r}; use {PROTOCOLS}")


@dataclass
class EvaluateOutcome:
    summary: pd.DataFrame
    out_dir: Path
    report: Path

    @property
    def text(self) -> str:
        return f"{summary_text(self.summary, ' (median ± std over splits)')}\n\nreport: {self.report}"


def evaluate_manifest(manifest_path: Path, bank_path: str | Path, features: list[str],
                      targets: list[str] | None, learners: list[str], protocol: str, stack: bool,
                      out_dir: Path, seed: int = 0, n_jobs: int = -1, progress: bool = True) -> EvaluateOutcome:
    """Score base learners (and the stack) under a named protocol, per target; write the results.

    ``out_dir`` gets ``splits.npz`` (the exact index sets), ``scores.csv`` (per split, model and
    target), ``summary.csv`` (median and std), ``predictions.csv``, ``stack_weights.csv`` and a
    report with plots.
    """
    data = training_data(manifest_path, bank_path, features, targets)
    splits = protocol_for(protocol, data, seed)
    scores, predictions, weights, summaries = [], [], [], []
    for t, target in enumerate(data.targets):
        update, close = _progress_bar(progress, f"evaluate {target}")
        try:
            result = protocols.evaluate(data.blocks, data.Y[:, t], splits, learners, stack=stack,
                                        n_jobs=n_jobs, progress=update)
        finally:
            close()
        scores.append(result.scores.assign(target=target))
        predictions.append(result.predictions.assign(
            target=target, video_id=data.video_ids[result.predictions["sample"].to_numpy()]))
        weights.append(result.stack_weights.assign(target=target))
        summaries.append(result.summary().assign(target=target))
    out_dir.mkdir(parents=True, exist_ok=True)
    splits.save(out_dir / "splits.npz")
    pd.concat(scores, ignore_index=True).to_csv(out_dir / "scores.csv", index=False)
    preds = pd.concat(predictions, ignore_index=True)
    preds.to_csv(out_dir / "predictions.csv", index=False)
    if stack:
        pd.concat(weights, ignore_index=True).to_csv(out_dir / "stack_weights.csv", index=False)
    summary = pd.concat(summaries, ignore_index=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    report = write_report(preds.rename(columns={"split": "repeat"}), summary, out_dir)
    return EvaluateOutcome(summary=summary, out_dir=out_dir, report=report)
