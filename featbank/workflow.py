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
from featbank.bank import FeatureBank
from featbank.crossval import CVResult, FittedEnsemble, cross_validate, fit_final, fold_ids
from featbank.errors import BankError, ManifestError
from featbank.features import load_blocks
from featbank.manifest import load_manifest
from featbank.orchestrate import extract_manifest
from featbank.report import summary_table, write_report


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
        parts = []
        for target in self.summary["target"].unique():
            parts += [f"\n== {target} ==", summary_table(self.summary, target).to_string(index=False)]
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


def fit_manifest(manifest_path: Path, bank_path: str | Path, features: list[str], targets: list[str] | None,
                 learners: list[str], n_splits: int, repeats: int, seed: int, stack: bool,
                 out_dir: Path, n_jobs: int = -1, progress: bool = True) -> FitOutcome:
    manifest = load_manifest(manifest_path)
    targets = targets or manifest.label_columns
    if not targets:
        raise ManifestError(f"{manifest.source} has no label columns to fit")
    labels = manifest.labels(targets)
    bank = FeatureBank(bank_path, mode="r")
    fb = load_blocks(bank, manifest, features)
    blocks = fb.subset()
    Y = labels.to_numpy()[fb.usable]
    groups = manifest.groups.to_numpy()[fb.usable] if manifest.groups is not None else None
    folds = fold_ids(len(Y), n_splits=n_splits, repeats=repeats, seed=seed, groups=groups)
    update, close = _progress_bar(progress, "cross-validate")
    try:
        result = cross_validate(blocks, Y, targets, learners, folds, stack=stack, n_jobs=n_jobs,
                                progress=update)
    finally:
        close()
    ensemble = fit_final(blocks, Y, targets, learners, result, stack=stack, n_jobs=n_jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    ensemble.save(out_dir / "model")
    ids = np.asarray(manifest.video_ids)[fb.usable]
    oof = result.oof.assign(video_id=ids[result.oof["sample"].to_numpy()])
    oof.to_csv(out_dir / "oof.csv", index=False)
    result.scores.to_csv(out_dir / "scores.csv", index=False)
    summary = result.summary()
    summary.to_csv(out_dir / "summary.csv", index=False)
    report = write_report(result.oof, summary, out_dir)
    return FitOutcome(result=result, summary=summary, out_dir=out_dir, report=report, dropped=fb.dropped)


def _extractor_specs(bank_path: str | Path, keys: list[str]) -> list[str]:
    """The extractor spec that produced each extracted bank key, checked against the current code.

    Imported groups are skipped: there is nothing to extract for them. Items of the manifest that
    such a group lacks stop the prediction in :func:`load_blocks`, which says to import them.
    """
    bank = FeatureBank(bank_path, mode="r")
    specs = []
    for key in keys:
        if bank.is_imported(key):
            continue
        spec = bank.group(key).attrs["spec"]
        if extractors.create(spec).key != key:
            raise BankError(f"the model was fitted on {key}, but extractor {spec!r} now produces "
                            f"{extractors.create(spec).key}; refit or use the matching featbank version")
        specs.append(spec)
    return specs


def predict_manifest(manifest_path: Path, bank_path: str | Path, model_dir: Path, out_csv: Path,
                     device: str = "cpu", weights_dir: Path | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """Extract what the model needs and is missing, predict, write ``video_id,<targets>``.

    Items whose extraction failed get empty predictions rather than disappearing, so a submission
    keeps one row per manifest row.
    """
    ensemble = FittedEnsemble.load(model_dir)
    FeatureBank(bank_path, mode="r")  # the model's features are looked up there: it must exist
    keys = list(ensemble.block_dims)
    extract_manifest(manifest_path, bank_path, _extractor_specs(bank_path, keys), device=device,
                     weights_dir=weights_dir, progress=progress)
    manifest = load_manifest(manifest_path)
    fb = load_blocks(FeatureBank(bank_path, mode="r"), manifest, keys)
    preds = pd.DataFrame(np.nan, index=range(len(manifest.video_ids)), columns=ensemble.targets)
    if fb.usable.any():
        preds.loc[fb.usable] = ensemble.predict(fb.subset()).to_numpy()
    preds.insert(0, "video_id", manifest.video_ids)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out_csv, index=False)
    return preds
