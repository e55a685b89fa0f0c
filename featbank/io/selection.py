"""Which columns and rows of a feature file become features and items, and their groups.

Real feature files are rarely exactly "one numeric matrix, one row per item to keep": THQA's CSV
mixes text columns with its 24 features, VIDEVAL's YouTube-UGC numbers leave out 57 grayscale
videos, a challenge's test list is a subset of a larger dump, and grouped CV needs a source id
that is often only encoded in the video name. These helpers let ``featbank import`` take such
files as they are, and fail with a message naming what was not found rather than importing
something else.
"""

from __future__ import annotations

import difflib
import re
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pandas as pd

from featbank.errors import FeatbankError
from featbank.io.subsets import MAX_LISTED, load_subset

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


# ------------------------------------------------------------------------------------ columns
def _close(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=MAX_LISTED, cutoff=0.5)
    return f" (close: {', '.join(near)})" if near else ""


def _matching(pattern: str, columns: list[str]) -> list[str]:
    """Columns a name or glob pattern (``meta_*``) means; a literal name wins over glob syntax."""
    if pattern in columns:
        return [pattern]
    return [c for c in columns if fnmatchcase(c, pattern)]


def select_columns(columns: list[str], include: list[str] | None, exclude: list[str] | None,
                   reserved: dict[str, str], path: Path) -> list[str]:
    """The feature columns among ``columns`` (file order): ``include`` if given, minus ``exclude``.

    Both take names or glob patterns. ``reserved`` maps columns that can never be features (the id,
    the labels, the group) to what they are. A name or pattern that matches nothing is an error
    listing close matches: a typo must not silently import a different feature set.
    """
    candidates = [c for c in columns if c not in reserved]
    chosen = candidates
    if include:
        chosen = []
        for pattern in include:
            if pattern in reserved:
                raise FeatbankError(f"{path}: column {pattern!r} is {reserved[pattern]}, not a feature")
            found = _matching(pattern, candidates)
            if not found:
                raise FeatbankError(f"{path}: no feature column matches {pattern!r}{_close(pattern, candidates)}")
            chosen += [c for c in found if c not in chosen]
        chosen = [c for c in candidates if c in chosen]  # file order, whatever the order of the patterns
    for pattern in exclude or []:
        if not _matching(pattern, columns):
            raise FeatbankError(f"{path}: --exclude-columns {pattern!r} matches no column{_close(pattern, columns)}")
        chosen = [c for c in chosen if c not in _matching(pattern, chosen)]
    if not chosen:
        raise FeatbankError(f"{path}: no feature column left after --feature-columns / --exclude-columns")
    return chosen


def require_numeric(table: pd.DataFrame, columns: list[str], picked: bool, path: Path) -> None:
    """Raise naming every non-numeric column among ``columns``, with a value showing why."""
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(table[c])]
    if not text:
        return
    examples = []
    for c in text[:MAX_LISTED]:
        values = table[c].dropna()
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
        examples.append(f"{c} (e.g. {bad.iloc[0]!r} on line {int(bad.index[0]) + 2})" if len(bad) else c)
    more = f" and {len(text) - MAX_LISTED} more" if len(text) > MAX_LISTED else ""
    hint = ("every picked feature column must be numeric" if picked else
            "leave text columns out with --exclude-columns (globs allowed, e.g. 'meta_*'), or pick the "
            "features with --feature-columns; the id column is --id-column")
    raise FeatbankError(f"{path}: non-numeric column(s) {', '.join(examples)}{more}: {hint}")


# --------------------------------------------------------------------------------------- rows
def read_id_list(path: Path) -> list[str]:
    """Ids from a text file (one per line; blank lines and ``#`` comments skipped) or the first
    column of a CSV / Parquet table with a header (a challenge's test list, a split file)."""
    if not path.is_file():
        raise FeatbankError(f"id list {path} does not exist")
    if path.suffix.lower() in TABLE_SUFFIXES:
        table = pd.read_parquet(path) if path.suffix.lower() != ".csv" else pd.read_csv(path, dtype=str)
        ids = table.iloc[:, 0].dropna().astype(str).str.strip().tolist() if table.shape[1] else []
    else:
        lines = (line.strip() for line in path.read_text().splitlines())
        ids = [line for line in lines if line and not line.startswith("#")]
    if not ids:
        raise FeatbankError(f"id list {path} holds no ids")
    return ids


def _listed(ids: list[str], listed: list[str], path: Path, option: str) -> np.ndarray:
    """Mask of ``ids`` in ``listed``; every listed id must be an item (else a wrong file or id column)."""
    present = set(ids)
    missing = [v for v in dict.fromkeys(listed) if v not in present]
    if missing:
        near = difflib.get_close_matches(missing[0], ids, n=MAX_LISTED, cutoff=0.5)
        raise FeatbankError(f"{option} {path}: {len(missing)} of its ids are not among the {len(ids)} items "
                            f"(e.g. {', '.join(missing[:MAX_LISTED])})"
                            + (f"; items close to {missing[0]!r}: {', '.join(near)}" if near else ""))
    return np.isin(np.asarray(ids, dtype=object), np.asarray(listed, dtype=object))


def select_items(ids: list[str] | None, n: int, subset: str | None = None, keep_ids: Path | None = None,
                 drop_ids: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Which of ``n`` items (ids, or None when only row order is known) to import, and what each
    selection did (one line each, for the import report).

    ``subset`` names a published subset (:mod:`featbank.io.subsets`); ``keep_ids`` / ``drop_ids``
    are the user's id lists (:func:`read_id_list`). All apply in turn; the item order is kept.
    """
    keep = np.ones(n, dtype=bool)
    notes = []
    if subset is not None:
        published = load_subset(subset)
        keep &= np.asarray(published.keep(ids, n), dtype=bool)
        notes.append(f"subset {subset}: {int((~keep).sum())} items left out ({published.title})")
    for path, option, inverted in ((keep_ids, "--keep-ids", False), (drop_ids, "--drop-ids", True)):
        if path is None:
            continue
        if ids is None:
            raise FeatbankError(f"{option} needs item ids: name the id column with --id-column")
        listed = _listed(ids, read_id_list(path), path, option)
        before = int(keep.sum())
        keep &= ~listed if inverted else listed
        notes.append(f"{option} {path}: {before - int(keep.sum())} items left out")
    if not keep.any():
        raise FeatbankError("no item is left after " + ", ".join(o for o, v in (
            ("--subset", subset), ("--keep-ids", keep_ids), ("--drop-ids", drop_ids)) if v is not None))
    return keep, notes


def groups_from_ids(ids: list[str], pattern: str) -> list[str]:
    """The group of each id: the first capture group of ``pattern`` searched in it.

    E.g. ``'^(\\d+)_'`` on THQA's ``1_voice_en_35042678_ahead`` gives the portrait ``1``. Every id
    must match with a non-empty group: an item without a group could straddle CV folds.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise FeatbankError(f"--group-from-id {pattern!r} is not a valid regular expression: {exc}") from exc
    if regex.groups < 1:
        raise FeatbankError(f"--group-from-id {pattern!r} has no capture group: put the group part of the "
                            f"id in parentheses, e.g. '^(\\d+)_'")
    groups = [(m.group(1) if (m := regex.search(v)) else None) for v in ids]
    failed = [v for v, g in zip(ids, groups) if not g]
    if failed:
        raise FeatbankError(f"--group-from-id {pattern!r} does not match (or captures nothing in) {len(failed)} "
                            f"of {len(ids)} ids, e.g. {', '.join(failed[:MAX_LISTED])}")
    return [str(g) for g in groups]
