"""featbank from Python: the objects the CLI uses, shaped for notebooks.

::

    import featbank
    with featbank.open_bank("bank.zarr") as bank:
        print([(g.name, g.pooled_dim, g.counts["ok"]) for g in bank.groups()])
        frame = featbank.feature_frame(bank, "manifest.csv", ["handcrafted"])   # pandas
        steps = featbank.step_array(bank, "manifest.csv", "handcrafted")        # xarray

Everything here reads through :func:`featbank.bank.matrix.load_blocks` /
:func:`~featbank.bank.matrix.load_steps`, the loading ``featbank fit`` and ``featbank export`` use,
so a notebook sees exactly the numbers a fitted model saw. The README's "Python API" section
runs end to end (tests/test_api.py executes it).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from featbank.bank.matrix import labelled_frame, load_blocks, load_steps
from featbank.bank.schema import readable_names
from featbank.bank.store import FeatureBank, GroupInfo, StoreLike
from featbank.io.manifest import Manifest, load_manifest

if TYPE_CHECKING:
    import xarray

    from featbank.learning.workflow import Outcome

__all__ = ["FeatureBank", "GroupInfo", "evaluate", "feature_frame", "fit", "open_bank", "readable_names",
           "step_array"]

ManifestLike = Manifest | str | os.PathLike


def open_bank(location: StoreLike, mode: str = "r") -> FeatureBank:
    """Open the bank at a path, an fsspec URL (``s3://...``) or a zarr Store; read-only by default.

    Use it in a ``with`` block to release the store afterwards. ``mode="a"`` opens for writing
    and creates the bank when nothing is there.
    """
    return FeatureBank(location, mode=mode)


def _manifest(manifest: ManifestLike) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def _names(features: str | Sequence[str]) -> list[str]:
    return [features] if isinstance(features, str) else list(features)


def feature_frame(bank: FeatureBank, manifest: ManifestLike, features: str | Sequence[str]) -> pd.DataFrame:
    """Pooled features and labels of a manifest's items, one row per item, indexed by ``video_id``.

    Columns: ``group`` (when the manifest has one), the label columns, then one float32 column
    ``<feature group>:<feature name>`` per feature, the group named as you named it (an extractor,
    an import name, or an exact bank key). Rows whose extraction failed are kept with NaN features.
    """
    manifest = _manifest(manifest)
    frame = labelled_frame(manifest, load_blocks(bank, manifest, _names(features)))
    return frame.set_index("video_id")


def step_array(bank: FeatureBank, manifest: ManifestLike, feature: str) -> xarray.DataArray:
    """Per-step features of one group as an ``xarray.DataArray`` with dims (item, time, feature).

    Coordinates: ``video_id`` (item), ``time`` (step index), ``feature`` (step feature names),
    ``timestamp`` (item, time: start of each step in seconds) and ``mask`` (item, time: which
    steps hold data). Values are NaN wherever ``mask`` is False, e.g. past a short video's end.
    """
    import xarray

    manifest = _manifest(manifest)
    block = load_steps(bank, manifest, feature)
    steps = np.where(block.mask[..., None], block.steps, np.nan).astype(np.float32)
    return xarray.DataArray(
        steps, dims=("item", "time", "feature"), name=block.key,
        coords={"video_id": ("item", list(manifest.video_ids)), "time": np.arange(steps.shape[1]),
                "feature": block.schema.step_names(), "timestamp": (("item", "time"), block.timestamps),
                "mask": (("item", "time"), block.mask), "status": ("item", block.status)},
        attrs={"key": block.key, "extractor": block.schema.extractor, "spec": block.schema.spec})


def _run_workflow(name: str, manifest: ManifestLike, bank: FeatureBank, features: str | Sequence[str],
                  learners: Sequence[str], targets: Sequence[str] | None, options: dict[str, Any]) -> Outcome:
    """Call ``featbank.learning.workflow.<name>`` as the CLI does (imported here: it loads sklearn)."""
    from featbank.learning import workflow

    if "out_dir" in options:
        options["out_dir"] = Path(options["out_dir"])
    return getattr(workflow, name)(_manifest(manifest), bank, _names(features),
                                   list(targets) if targets else None, list(learners), **options)


def evaluate(manifest: ManifestLike, bank: FeatureBank, features: str | Sequence[str], learners: Sequence[str],
             targets: Sequence[str] | None = None, **options: Any) -> Outcome:
    """``featbank evaluate`` from Python: score ``learners`` (and the stack) under a protocol.

    ``options`` are those of :func:`featbank.learning.workflow.evaluate_manifest` (``protocol``,
    ``stack``, ``stack_mode``, ``reduce``, ``out_dir``, ``seed``, ``n_jobs``, ``progress``). Targets default to every label.
    """
    return _run_workflow("evaluate_manifest", manifest, bank, features, learners, targets, options)


def fit(manifest: ManifestLike, bank: FeatureBank, features: str | Sequence[str], learners: Sequence[str],
        targets: Sequence[str] | None = None, **options: Any) -> Outcome:
    """``featbank fit`` from Python: cross-validate, then fit and save the final model.

    ``options`` are those of :func:`featbank.learning.workflow.fit_manifest` (``protocol``,
    ``stack``, ``stack_mode``, ``reduce``, ``out_dir``, ``seed``, ``n_jobs``, ``progress``). Targets default to every label.
    """
    return _run_workflow("fit_manifest", manifest, bank, features, learners, targets, options)
