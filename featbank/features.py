"""From a manifest and a bank to the feature blocks the regressors consume.

Feature groups are named by extractor (``handcrafted``) or by exact bank key
(``handcrafted@1a2b3c4d5e``) when one extractor was run with several configurations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import extractors
from featbank.bank import ABSENT, FAILED, OK, PENDING, FeatureBank
from featbank.errors import BankError
from featbank.hashing import digest_paths
from featbank.manifest import Manifest


@dataclass
class FeatureBlocks:
    """One matrix per feature group, aligned with the manifest rows that can be used.

    ``usable`` marks manifest rows whose every group is OK or ABSENT (absent modalities are NaN and
    imputed inside each fold); rows that failed extraction are excluded and listed in ``dropped``.
    """

    blocks: dict[str, np.ndarray]
    usable: np.ndarray
    dropped: list[tuple[str, str]]

    def subset(self) -> dict[str, np.ndarray]:
        return {k: v[self.usable] for k, v in self.blocks.items()}


def resolve_key(bank: FeatureBank, spec: str) -> str:
    """Bank group for a feature-group spec; a bare extractor name must be unambiguous."""
    if "@" in spec:
        bank.group(spec)
        return spec
    keys = bank.keys_for(spec)
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise BankError(f"{bank.path} has no {spec!r} features; run "
                        f"`featbank extract --manifest M --extractor {spec}` first")
    default = extractors.create(spec).key
    if default in keys:
        return default
    raise BankError(f"{spec!r} is ambiguous in {bank.path}: name one of {', '.join(keys)}")


def manifest_rows(bank: FeatureBank, manifest: Manifest) -> np.ndarray:
    paths = manifest.media_paths()
    rows = bank.rows_of(digest_paths(paths, bank.hash_cache()))
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        first = ", ".join(manifest.video_ids[i] for i in missing[:5])
        raise BankError(f"{missing.size} items of {manifest.source} are not in {bank.path} "
                        f"(e.g. {first}); run `featbank extract` on this manifest first")
    return rows


def load_blocks(bank: FeatureBank, manifest: Manifest, specs: list[str]) -> FeatureBlocks:
    rows = manifest_rows(bank, manifest)
    blocks: dict[str, np.ndarray] = {}
    usable = np.ones(len(rows), dtype=bool)
    dropped: list[tuple[str, str]] = []
    for spec in specs:
        key = resolve_key(bank, spec)
        X, status = bank.pooled(key, rows)
        pending = np.flatnonzero(status == PENDING)
        if pending.size:
            raise BankError(f"{pending.size} items of {manifest.source} have no {key} features yet "
                            f"(e.g. {manifest.video_ids[pending[0]]}); run `featbank extract` first")
        failed = status == FAILED
        dropped += [(manifest.video_ids[i], key) for i in np.flatnonzero(failed & usable)]
        usable &= np.isin(status, (OK, ABSENT))
        blocks[key] = X.astype(np.float64)
    return FeatureBlocks(blocks=blocks, usable=usable, dropped=dropped)
