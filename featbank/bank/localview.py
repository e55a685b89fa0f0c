"""A read-only view of a bank in a local folder, from its JSON metadata and chunk files: no zarr.

Why: ``featbank status`` is what a user runs again and again while an extraction writes, and
importing zarr (which imports fsspec) was a fifth of its start-up, above the 1.5 s a quick command
should take (benchmarks/bench_startup.py). This view answers exactly what ``status`` asks of a
bank (its row count, complete groups, statuses, digests and hash cache), reading the same files
zarr would (:mod:`featbank.bank.chunkfiles`) and sharing every rule with
:class:`~featbank.bank.store.FeatureBank` through :mod:`featbank.bank.schema`. Anything it cannot
read plainly (a URL, a folder whose root metadata is missing or foreign, an array of another
layout) is opened as a FeatureBank instead, whose messages say what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featbank.bank.chunkfiles import ChunkFiles, node_metadata, read_span
from featbank.bank.schema import (
    check_bank_format,
    hash_cache_of,
    match_rows,
    status_counts,
)
from featbank.errors import BankError

if TYPE_CHECKING:
    from featbank.bank.store import FeatureBank


class LocalBankView:
    """The counting side of a bank in ``folder`` (see the module docstring); never writes."""

    def __init__(self, folder: Path, root_attrs: dict) -> None:
        check_bank_format(root_attrs, str(folder))
        self.path = str(folder)
        self.folder = folder
        items = node_metadata(folder / "items")
        self.count = int(((items or {}).get("attributes") or {}).get("count", 0))

    @classmethod
    def open(cls, location: str | os.PathLike) -> LocalBankView | None:
        """The view of a local bank; None for a URL or a folder without readable root metadata."""
        text = os.fspath(location)
        if "://" in text:
            return None
        folder = Path(text).resolve()
        meta = node_metadata(folder)
        if meta is None or meta.get("node_type") != "group":
            return None
        return cls(folder, meta.get("attributes") or {})

    def _children(self, name: str) -> dict[str, dict]:
        """Attributes of each sub-group of ``name`` (``features``, ``tracks``), by sub-group name."""
        parent = self.folder / name
        if not parent.is_dir():
            return {}
        found = {}
        for child in sorted(parent.iterdir()):
            meta = node_metadata(child) if child.is_dir() else None
            if meta is not None and meta.get("node_type") == "group":
                found[child.name] = meta.get("attributes") or {}
        return found

    def group_keys(self) -> list[str]:
        """The complete feature groups (a group gets its attributes last; see FeatureBank.group_keys)."""
        return sorted(key for key, attrs in self._children("features").items() if "layout" in attrs)

    def _array(self, path: str) -> ChunkFiles:
        files = ChunkFiles.open(self.folder / path)
        if files is None:
            raise BankError(f"{self.path}: the array {path} is missing or unreadable; run "
                            f"`featbank validate --bank {self.path}`")
        return files

    def status(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        codes = read_span(self._array(f"features/{key}/status"), 0, self.count, self.path)
        return codes if rows is None else codes[rows]

    def counts(self, key: str, rows: np.ndarray | None = None) -> dict[str, int]:
        return status_counts(self.status(key, rows))

    def digests(self) -> np.ndarray:
        if not self.count:  # (the items table may be a creation a full disk cut short)
            return np.zeros((0, 32), dtype=np.uint8)
        return read_span(self._array("items/digest"), 0, self.count, self.path)

    def rows_of(self, digests: list[bytes]) -> np.ndarray:
        return match_rows(self.digests(), digests)

    def hash_cache(self) -> dict[tuple[str, int, int], bytes]:
        return hash_cache_of(self._children("tracks").values())


def open_for_counting(location: str | os.PathLike) -> LocalBankView | FeatureBank:
    """A view that counts statuses without importing zarr where it can, else a read-only FeatureBank."""
    view = LocalBankView.open(location)
    if view is not None:
        return view
    from featbank.bank.store import (
        FeatureBank,  # imports zarr: only for what the view cannot read
    )

    return FeatureBank(location, mode="r")


__all__ = ["LocalBankView", "open_for_counting"]
