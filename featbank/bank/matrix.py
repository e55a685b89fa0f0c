"""From a manifest and a bank to the feature blocks the regressors consume.

Feature groups are named by extractor (``handcrafted``), by the name given to ``featbank import``
(``videval``), or by exact bank key (``handcrafted@1a2b3c4d5e``) when one name has several groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import extractors
from featbank.bank.hashing import digest_paths
from featbank.bank.schema import ABSENT, FAILED, OK, PENDING, GroupSchema
from featbank.errors import BankError, FeatbankError
from featbank.io.manifest import Manifest, VirtualItem

if TYPE_CHECKING:  # (not imported at run time: `featbank status` reads banks without zarr)
    from featbank.bank.localview import LocalBankView
    from featbank.bank.store import FeatureBank


@dataclass
class FeatureBlocks:
    """One matrix per feature group, aligned with the manifest rows that can be used.

    ``usable`` marks manifest rows whose every group is OK or ABSENT (absent modalities are NaN and
    imputed inside each fold); rows that failed extraction are excluded and listed in ``dropped``.
    """

    blocks: dict[str, np.ndarray]
    usable: np.ndarray
    dropped: list[tuple[str, str]]
    specs: dict[str, str] = field(default_factory=dict)  # bank key → the name it was asked by
    keys: dict[str, str] = field(default_factory=dict)  # each name asked → its bank key
    schemas: dict[str, GroupSchema] = field(default_factory=dict)  # bank key → its schema

    def subset(self) -> dict[str, np.ndarray]:
        return {k: v[self.usable] for k, v in self.blocks.items()}

    def frame(self) -> pd.DataFrame:
        """Every row (manifest order) as float32, one column ``<name asked>:<feature name>`` each."""
        return pd.concat([pd.DataFrame(X.astype(np.float32), columns=[
            f"{self.specs[key]}:{n}" for n in self.schemas[key].column_names()])
            for key, X in self.blocks.items()], axis=1)


@dataclass
class StepBlock:
    """Per-step features of one group for a manifest's items, in manifest order.

    ``steps`` is (items, max steps, step features); ``mask`` says which steps hold data (the rest
    are NaN); ``status`` is each item's bank status (FAILED items have no valid step).
    """

    key: str
    schema: GroupSchema
    steps: np.ndarray
    mask: np.ndarray
    timestamps: np.ndarray
    status: np.ndarray


def resolve_key(bank: FeatureBank, spec: str, rows: np.ndarray | None = None) -> str:
    """Bank group for a feature-group spec; a bare name must be unambiguous.

    An extractor name run with several configurations resolves to its current default
    configuration. An imported name (``featbank import --name videval``) imported from several
    files (KoNViD's and LIVE-VQC's VIDEVAL) resolves to the one group that holds every one of
    ``rows``, the manifest's items: the files cover different items, so at most one fits.
    """
    if "@" in spec and ":" not in spec:  # a bank key: keys have no ":", a spec may hold "@" (templates:M@SET)
        bank.group(spec)
        return spec
    keys = bank.keys_for(spec)
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise BankError(f"{bank.path} has no {spec!r} features; run "
                        f"`featbank extract --manifest M --extractor {spec}` (or `featbank import` "
                        f"for a feature file) first")
    if spec.partition(":")[0] in extractors.REGISTRY:
        default = _default_key(spec)
        if default in keys:
            return default
    elif rows is not None:
        covering = [k for k in keys if (bank.status(k, rows) != PENDING).all()]
        if len(covering) == 1:
            return covering[0]
    raise BankError(f"{spec!r} is ambiguous in {bank.path}: name one of {', '.join(keys)}")


def _default_key(spec: str) -> str | None:
    """The key the extractor ``spec`` names now; None when the spec alone builds none (bare ``timm``)."""
    try:
        return extractors.create(spec).key
    except FeatbankError:
        return None


def _not_yet(bank: FeatureBank, key: str) -> str:
    """What to do about items a group has no row for: extract them, or import their features."""
    if bank.is_imported(key):
        return ("imported features cannot be re-extracted; import the new items' features too "
                f"(`featbank import --name {key.split('@')[0]} ...` with a file that holds them)")
    return "run `featbank extract` first"


def lookup_rows(bank: FeatureBank | LocalBankView, manifest: Manifest) -> np.ndarray:
    """Bank row of every manifest item, -1 for items the bank has never registered."""
    return bank.rows_of(digest_paths(manifest.media_paths(), bank.hash_cache()))


def manifest_rows(bank: FeatureBank, manifest: Manifest) -> np.ndarray:
    """Bank row of every manifest item; BankError when some were never extracted or imported."""
    rows = lookup_rows(bank, manifest)
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        first = ", ".join(manifest.video_ids[i] for i in missing[:5])
        paths = manifest.media_paths()
        todo = ("import their features with `featbank import`" if isinstance(paths[missing[0]], VirtualItem)
                else "run `featbank extract` on this manifest first")
        raise BankError(f"{missing.size} items of {manifest.source} are not in {bank.path} "
                        f"(e.g. {first}); {todo}")
    return rows


def _check_complete(bank: FeatureBank, manifest: Manifest, key: str, status: np.ndarray) -> None:
    """Refuse a group that has not yet computed (or imported) some of the manifest's items."""
    pending = np.flatnonzero(status == PENDING)
    if pending.size:
        raise BankError(f"{pending.size} items of {manifest.source} have no {key} features yet "
                        f"(e.g. {manifest.video_ids[pending[0]]}); {_not_yet(bank, key)}")


def load_blocks(bank: FeatureBank, manifest: Manifest, specs: list[str]) -> FeatureBlocks:
    """Pooled features of the named groups for every manifest row, with which rows are usable."""
    rows = manifest_rows(bank, manifest)
    fb = FeatureBlocks(blocks={}, usable=np.ones(len(rows), dtype=bool), dropped=[])
    for spec in specs:
        key = resolve_key(bank, spec, rows)
        X, status = bank.pooled(key, rows)
        _check_complete(bank, manifest, key, status)
        failed = status == FAILED
        fb.dropped += [(manifest.video_ids[i], key) for i in np.flatnonzero(failed & fb.usable)]
        fb.usable &= np.isin(status, (OK, ABSENT))
        fb.blocks[key] = X.astype(np.float64)
        fb.specs.setdefault(key, spec)
        fb.keys[spec] = key
        fb.schemas[key] = bank.schema(key)
    return fb


def labelled_frame(manifest: Manifest, fb: FeatureBlocks) -> pd.DataFrame:
    """``video_id``, ``group`` (when the manifest has one), the labels, then every feature column.

    One row per manifest row in manifest order; rows whose extraction failed keep NaN features
    (``fb.usable`` says which rows a learner would see).
    """
    parts = [pd.DataFrame({"video_id": manifest.video_ids})]
    if manifest.groups is not None:
        parts.append(pd.DataFrame({"group": manifest.groups.to_numpy()}))
    parts.append(manifest.labels(manifest.label_columns).reset_index(drop=True))
    parts.append(fb.frame())
    return pd.concat(parts, axis=1)


def load_steps(bank: FeatureBank, manifest: Manifest, spec: str, rows: np.ndarray | None = None) -> StepBlock:
    """Per-step features of one named group for every manifest row (same lookup as load_blocks).

    ``rows`` is the manifest's :func:`manifest_rows`, when the caller reads several groups (the lookup
    hashes every item's path: 0.4-0.6 s at 40k items).
    """
    rows = manifest_rows(bank, manifest) if rows is None else rows
    key = resolve_key(bank, spec, rows)
    steps, mask, timestamps, status = bank.read_rows(key, ("steps", "mask", "timestamps", "status"), rows)
    _check_complete(bank, manifest, key, status)
    return StepBlock(key=key, schema=bank.schema(key), steps=steps, mask=mask.astype(bool),
                     timestamps=timestamps, status=status)
