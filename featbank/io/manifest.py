"""Manifests: the list of items of one track, with their labels, validated before any work starts.

A manifest is a CSV or Parquet table with columns

- ``video_id`` (required, unique): the name the track's submission files use;
- ``path`` (required): the media file, relative to the manifest's directory (or ``root``), or
  ``featbank-import://<dataset>/<video_id>`` for an *imported* item (see :class:`VirtualItem`);
- ``group`` (optional): source content / prompt id, so cross-validation never splits one source
  across train and test;
- ``prompt`` (optional): the text prompt of AI-generated items;
- any column starting with ``meta_``: free-form information, never validated or fitted;
- every other column is a numeric label (e.g. the six FineVD dimensions). There may be none: an
  unlabelled test list serves ``extract`` / ``predict`` / ``export``, and ``fit`` refuses it.

Validation collects *every* offending row before raising, because a 40k-row manifest that fails
one row at a time costs a user an afternoon.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from featbank.errors import ManifestError

REQUIRED = ("video_id", "path")
RESERVED = ("video_id", "path", "group", "prompt")
META_PREFIX = "meta_"
MAX_LISTED = 20
IMPORT_SCHEME = "featbank-import://"
DATASET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class VirtualItem:
    """An item whose features were imported from a file (``featbank import``): it has no media.

    Its manifest ``path`` is ``featbank-import://<dataset>/<video_id>``; the bank keys it by a
    digest of that name (:func:`featbank.bank.hashing.virtual_digest`) instead of file bytes, so
    nothing is looked up on disk and every import of the same dataset lands on the same rows.
    """

    dataset: str
    video_id: str

    @property
    def uri(self) -> str:
        return f"{IMPORT_SCHEME}{self.dataset}/{self.video_id}"

    def __str__(self) -> str:
        return self.uri


MediaItem = Path | VirtualItem
"""What a manifest row points at: a media file, or an imported item without one."""


def is_virtual(path: str) -> bool:
    return path.startswith(IMPORT_SCHEME)


def parse_virtual(path: str) -> VirtualItem | None:
    """The item named by a ``featbank-import://<dataset>/<video_id>`` path; None when malformed."""
    dataset, sep, video_id = path[len(IMPORT_SCHEME):].partition("/")
    if not sep or not DATASET_NAME.match(dataset) or not video_id.strip():
        return None
    return VirtualItem(dataset, video_id)


def media_item(path: str, root: Path) -> MediaItem:
    """A manifest ``path`` (or the text :func:`item_text` made of one) as a file or a virtual item."""
    if is_virtual(path):
        item = parse_virtual(path)
        if item is None:
            raise ManifestError(f"malformed import path {path!r}: expected {IMPORT_SCHEME}<dataset>/<video_id>")
        return item
    return root / path


def item_text(item: MediaItem) -> str:
    """A self-contained text form (absolute path or import URI), for passing items to workers."""
    return item.uri if isinstance(item, VirtualItem) else str(item.resolve())


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: the table plus where its relative paths are resolved from."""

    source: Path
    root: Path
    table: pd.DataFrame

    @property
    def label_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in RESERVED and not c.startswith(META_PREFIX)]

    @property
    def video_ids(self) -> list[str]:
        return self.table["video_id"].tolist()

    @property
    def groups(self) -> pd.Series | None:
        return self.table["group"] if "group" in self.table.columns else None

    def media_paths(self) -> list[MediaItem]:
        """Each row's media file, or its :class:`VirtualItem` when the row was imported."""
        return [media_item(p, self.root) for p in self.table["path"]]

    def labels(self, targets: list[str]) -> pd.DataFrame:
        missing = [t for t in targets if t not in self.label_columns]
        if missing:
            raise ManifestError(
                f"{self.source}: no label column(s) {', '.join(missing)}; "
                f"label columns are: {', '.join(self.label_columns) or '(none)'}"
            )
        return self.table[targets].astype("float64")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"video_id": str, "path": str, "group": str, "prompt": str})
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(f"manifest {path} is empty: expected a header line naming at least "
                            f"{', '.join(REQUIRED)}, then one row per item") from exc
    except Exception as exc:  # the parsers raise many types; the user needs one message
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc


def row_list(rows: pd.Index | list[int]) -> str:
    rows = list(rows)
    shown = ", ".join(str(r + 2) for r in rows[:MAX_LISTED])  # +2: header line, 1-based
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"line(s) {shown}{more}"


def _escapes_root(rel: str) -> bool:
    if is_virtual(rel):  # an import URI names no file, so it cannot escape anything
        return False
    norm = os.path.normpath(rel)
    return os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep)


def _problems(table: pd.DataFrame, root: Path, check_files: bool) -> list[str]:
    problems: list[str] = []
    missing_cols = [c for c in REQUIRED if c not in table.columns]
    if missing_cols:  # the columns found show a typo or a stray space in the header
        found = ", ".join(repr(str(c)) for c in table.columns) or "none"
        return [f"missing required column(s): {', '.join(missing_cols)} (columns found: {found})"]
    if table.empty:
        return ["manifest has no items (a header but no rows)"]
    for col in REQUIRED:
        empty = table.index[table[col].isna() | (table[col].astype(str).str.strip() == "")]
        if len(empty):
            problems.append(f"empty {col} at {row_list(empty)}")
    dup = table.index[table["video_id"].duplicated(keep=False) & table["video_id"].notna()]
    if len(dup):
        problems.append(f"duplicate video_id at {row_list(dup)}")
    paths = table["path"].fillna("").astype(str)
    escaping = table.index[paths.map(_escapes_root)]
    if len(escaping):
        problems.append(f"path is absolute or escapes the manifest root at {row_list(escaping)}")
    virtual = paths.map(is_virtual)
    malformed = table.index[virtual & paths.map(lambda p: parse_virtual(p) is None)]
    if len(malformed):
        problems.append(f"malformed import path (expected {IMPORT_SCHEME}<dataset>/<video_id>, dataset "
                        f"of letters, digits, '_', '.', '-') at {row_list(malformed)}")
    if check_files:
        ok = paths.ne("") & ~paths.map(_escapes_root) & ~virtual
        not_files = [i for i in table.index[ok] if not (root / paths[i]).is_file()]
        for reason, rows in _why_not_files(root, paths, not_files).items():
            first = root / paths[rows[0]]
            problems.append(f"{reason} at {row_list(rows)} (first: {first})")
    for col in table.columns:
        if col in RESERVED or col.startswith(META_PREFIX):
            continue
        if table[col].isna().all():  # a column left blank in a spreadsheet, not a few gaps
            problems.append(f"label column {col!r} is entirely empty; fill it, drop it, or rename it "
                            f"{META_PREFIX}{col} to keep it as unvalidated information")
            continue
        values = pd.to_numeric(table[col], errors="coerce")
        bad = table.index[values.isna()]
        if len(bad):
            problems.append(f"label {col!r} is non-numeric or NaN at {row_list(bad)}")
        infinite = table.index[np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))]
        if len(infinite):  # "inf" parses as a number, but no regressor can fit it
            problems.append(f"label {col!r} is infinite (not finite) at {row_list(infinite)}")
    return problems


def _why_not_files(root: Path, paths: pd.Series, rows: list[int]) -> dict[str, list[int]]:
    """Rows whose path is not a regular file, grouped by why: absent, a directory, a dead link."""
    reasons: dict[str, list[int]] = {}
    for i in rows:
        target = root / paths[i]
        if target.is_dir():
            reason = "path is a directory, not a file"
        elif target.is_symlink():
            reason = "path is a broken symbolic link (its target does not exist)"
        elif target.exists():
            reason = "path is not a regular file"
        else:
            reason = "file not found"
        reasons.setdefault(reason, []).append(i)
    return reasons


def load_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None,
                  check_files: bool = True) -> Manifest:
    """Read and validate a manifest; raise one :class:`ManifestError` listing every problem."""
    source = Path(path)
    base = Path(root) if root is not None else source.parent
    return validate_table(_read_table(source), source, base, check_files)


def validate_table(table: pd.DataFrame, source: Path, base: Path, check_files: bool = True) -> Manifest:
    """Validate an in-memory manifest table (e.g. one about to be written); see :func:`load_manifest`."""
    table = table.reset_index(drop=True)
    problems = _problems(table, base, check_files)
    if problems:
        raise ManifestError(f"manifest {source} is invalid:\n  - " + "\n  - ".join(problems))
    table["video_id"] = table["video_id"].astype(str)
    if "group" in table.columns:
        table["group"] = table["group"].astype(str)
    return Manifest(source=source, root=base, table=table)
