"""``featbank import``: bring feature sets computed elsewhere into the bank, as *virtual items*.

Published feature sets (VIDEVAL and BRISQUE for KoNViD-1k / LIVE-VQC / YouTube-UGC as MATLAB
files, THQA's talking-head features as a CSV, anyone's NPY/HDF5 dumps) are matrices with one row
per video and a separate label file. Importing one turns it into exactly what extraction produces,
so ``fit`` / ``predict`` / ``export`` work on it unchanged:

- every row becomes an item without media, named ``featbank-import://<dataset>/<video_id>`` in a
  manifest that this module writes (labels, optional group, other label-file columns as
  ``meta_*``); its bank key is a digest of that name (:func:`featbank.bank.hashing.virtual_digest`), so
  a second feature set of the same dataset (BRISQUE after VIDEVAL) lands on the same rows;
- the matrix becomes one feature group ``<name>@<hash>``, the hash over the feature file's
  SHA-256, the variable read and the feature names (another file, or other columns of the same
  file, is another group; the same file again is the same group: re-importing is idempotent);
  each row is stored as its pooled vector and as a single step;
- ``±inf`` becomes NaN: regressor pipelines impute NaN inside each fold, but an infinity would
  break their scaling; the count is kept in the group's provenance. Rows that are NaN throughout
  are committed FAILED (nothing to fit on), and ``fit`` leaves them out like failed extractions.
  The bank stores float32, as for extracted features.

Files are taken as published (:mod:`featbank.io.selection`): feature columns picked or left out by
name or glob, items narrowed to a published subset or an id list, groups derived from the ids. A
label file is optional: without one (or with an id list that has no numeric column) the items are
unlabelled, for ``predict`` on a challenge's test list.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import extractors
from featbank.bank.schema import IMPORT_SPEC_PREFIX, GroupLayout, GroupSchema, default_names
from featbank.bank.store import FAILED, OK, FeatureBank, StepFeatures, StoreLike
from featbank.errors import FeatbankError, ManifestError
from featbank.bank.hashing import file_digest
from featbank.io.manifest import DATASET_NAME, META_PREFIX, RESERVED, VirtualItem, validate_table
from featbank.io.selection import (TABLE_SUFFIXES, groups_from_ids, require_numeric, select_columns,
                                   select_items)

IMPORTER_VERSION = "1"
SUFFIXES = (".mat", ".h5", ".hdf5", ".npy", ".npz", *TABLE_SUFFIXES)
MATLAB_INTERNAL = ("#refs#", "#subsystem#")

Matrix = tuple[np.ndarray, list[str], list[str] | None]


# ------------------------------------------------------------------------------------ reading
def read_feature_matrix(path: str | os.PathLike, key: str | None = None, id_column: str | None = None,
                        exclude: tuple[str, ...] = (), feature_columns: list[str] | None = None,
                        exclude_columns: list[str] | None = None) -> Matrix:
    """``(X, feature_names, ids)`` of a feature file: X float64 ``(items, features)``, ±inf as NaN.

    - ``.mat`` v5 (scipy) or v7.3 (HDF5; MATLAB stores column-major, so datasets are transposed
      back to items × features): ``key`` names the variable, needed when several 2-D numeric
      variables are present;
    - ``.h5`` / ``.hdf5``: ``key`` is the dataset path; its ``feature_names`` attribute names the
      columns when present, and ``id_column`` may name a 1-D dataset of ids (what ``export`` writes);
    - ``.npy`` (2-D, or 1-D as one feature), ``.npz`` (``key`` names the array);
    - ``.csv`` / ``.parquet``: numeric columns are the features, ``id_column`` (when present) gives
      the ids, ``exclude`` drops columns (labels kept in the same file); any other non-numeric
      column is an error naming it.

    In every format ``feature_columns`` picks and ``exclude_columns`` leaves out features by name or
    glob (``meta_*``; unnamed columns are ``f0``, ``f1``, ...), so a table's text columns can stay
    in the file (:func:`featbank.io.selection.select_columns`).

    ±inf becomes NaN because pipelines impute NaN per fold, and an infinity would break scaling.
    Files without ids give ``ids=None``; unnamed columns are named ``f0``, ``f1``, ...
    """
    X, names, ids = _read_any(Path(path), key, id_column, exclude, feature_columns, exclude_columns)
    return infinite_to_nan(X)[0], names, ids


def infinite_to_nan(X: np.ndarray) -> tuple[np.ndarray, int]:
    """``X`` with ±inf replaced by NaN, and how many there were."""
    infinite = np.isinf(X)
    return np.where(infinite, np.nan, X), int(infinite.sum())


def _read_any(path: Path, key: str | None, id_column: str | None, exclude: tuple[str, ...],
              feature_columns: list[str] | None = None, exclude_columns: list[str] | None = None) -> Matrix:
    if not path.is_file():
        raise FeatbankError(f"feature file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise FeatbankError(f"{path}: unsupported feature file type {suffix!r}; supported: {', '.join(SUFFIXES)}")
    try:
        if suffix in TABLE_SUFFIXES:  # picked before the numeric check, so text columns can be left out
            return _read_columns(path, id_column, exclude, feature_columns, exclude_columns)
        if suffix == ".mat":
            X, names, ids = _read_mat(path, key)
        elif suffix in (".h5", ".hdf5"):
            X, names, ids = _read_hdf5(path, key, id_column)
        else:
            X, names, ids = _read_numpy(path, key)
    except FeatbankError:
        raise
    except Exception as exc:  # the readers raise many types for a damaged file; name the file
        raise FeatbankError(f"cannot read feature file {path}: {exc}") from exc
    if feature_columns or exclude_columns:
        picked = select_columns(names, feature_columns, exclude_columns, {}, path)
        X, names = X[:, [names.index(c) for c in picked]], picked
    return X, names, ids


def _matrix(values: np.ndarray, what: str) -> np.ndarray:
    """A numeric 2-D float64 matrix (a 1-D array is one feature per item)."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise FeatbankError(f"{what} is not numeric (dtype {values.dtype})")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or 0 in values.shape:
        raise FeatbankError(f"{what} has shape {values.shape}: expected items × features")
    return values.astype(np.float64)


def _pick(candidates: dict[str, tuple[int, ...]], key: str | None, path: Path, what: str) -> str:
    """The variable to read: ``key``, or the only candidate; errors list every candidate."""
    listing = ", ".join(f"{k} {'×'.join(map(str, s))}" for k, s in candidates.items()) or "none"
    if key is not None:
        if key not in candidates:
            raise FeatbankError(f"{path}: no 2-D numeric {what} {key!r}; available: {listing}")
        return key
    if len(candidates) != 1:
        raise FeatbankError(f"{path}: {len(candidates)} 2-D numeric {what}s, name one with --key: {listing}")
    return next(iter(candidates))


def _is_matrix(shape: tuple[int, ...], kind: str) -> bool:
    return len(shape) == 2 and kind in "biuf" and int(np.prod(shape)) > 1


def _read_mat(path: Path, key: str | None) -> Matrix:
    import h5py

    if h5py.is_hdf5(path):
        return _read_mat73(path, key)
    import scipy.io

    data = scipy.io.loadmat(path)
    candidates = {k: v.shape for k, v in data.items()
                  if not k.startswith("__") and isinstance(v, np.ndarray) and _is_matrix(v.shape, v.dtype.kind)}
    name = _pick(candidates, key, path, "variable")
    X = _matrix(data[name], f"{path}:{name}")
    return X, default_names(X.shape[1]), None


def _read_mat73(path: Path, key: str | None) -> Matrix:
    """MATLAB v7.3 is HDF5 with column-major arrays: an n×d variable is stored as a d×n dataset."""
    import h5py

    with h5py.File(path, "r") as f:
        candidates = {k: v.shape[::-1] for k, v in f.items()
                      if k not in MATLAB_INTERNAL and isinstance(v, h5py.Dataset)
                      and _is_matrix(v.shape, v.dtype.kind) and _text(v.attrs.get("MATLAB_class", "")) != "char"}
        name = _pick(candidates, key, path, "variable")
        X = _matrix(f[name][()].T, f"{path}:{name}")
    return X, default_names(X.shape[1]), None


def _read_hdf5(path: Path, key: str | None, id_column: str | None) -> Matrix:
    import h5py

    with h5py.File(path, "r") as f:
        candidates: dict[str, tuple[int, ...]] = {}
        f.visititems(lambda n, v: candidates.update({n: v.shape}) if isinstance(v, h5py.Dataset)
                     and _is_matrix(v.shape, v.dtype.kind) else None)
        name = _pick(candidates, key.strip("/") if key else None, path, "dataset")
        X = _matrix(f[name][()], f"{path}:{name}")
        names = [_text(n) for n in f[name].attrs.get("feature_names", [])]
        ids = None
        if id_column and id_column in f:
            ids = [_text(v) for v in f[id_column][()]]
            if len(ids) != X.shape[0]:
                raise FeatbankError(f"{path}: {id_column} holds {len(ids)} ids for {X.shape[0]} rows of {name}")
    return X, names if len(names) == X.shape[1] else default_names(X.shape[1]), ids


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_numpy(path: Path, key: str | None) -> Matrix:
    if path.suffix.lower() == ".npy":
        X = _matrix(np.load(path, allow_pickle=False), str(path))
        return X, default_names(X.shape[1]), None
    with np.load(path, allow_pickle=False) as npz:
        candidates = {k: npz[k].shape for k in npz.files
                      if npz[k].ndim in (1, 2) and npz[k].dtype.kind in "biuf"}
        name = _pick(candidates, key, path, "array")
        X = _matrix(npz[name], f"{path}:{name}")
    return X, default_names(X.shape[1]), None


def read_table(path: Path, id_column: str | None) -> pd.DataFrame:
    """A CSV or Parquet table, the id column read as text (so ``3339962845`` never becomes a float)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype={id_column: str} if id_column else None)
    if id_column and id_column in table.columns:
        table[id_column] = table[id_column].astype(str)
    return table


def _read_columns(path: Path, id_column: str | None, exclude: tuple[str, ...],
                  feature_columns: list[str] | None, exclude_columns: list[str] | None) -> Matrix:
    table = read_table(path, id_column)
    table.columns = table.columns.map(str)
    ids = table[id_column].tolist() if id_column and id_column in table.columns else None
    reserved = {c: "a label or group column" for c in exclude if c in table.columns}
    if ids is not None:
        reserved[str(id_column)] = "the id column (--id-column)"
    columns = select_columns(table.columns.tolist(), feature_columns, exclude_columns, reserved, path)
    require_numeric(table, columns, picked=bool(feature_columns), path=path)
    X = _matrix(table[columns].to_numpy(dtype=np.float64, na_value=np.nan), str(path))
    return X, columns, ids


# ---------------------------------------------------------------------------------- importing
@dataclass
class ImportReport:
    """What an import did: the group, the manifest, and the gaps the file had."""

    key: str
    manifest: Path
    items: int
    n_features: int
    nan_values: int
    rows_with_nan: int
    inf_values: int
    unlabelled: int  # feature rows whose id has no label row: not imported
    failed: list[str] = field(default_factory=list)  # ids of rows that are NaN throughout
    label_columns: list[str] = field(default_factory=list)  # none: items for predict / export only
    selection: list[str] = field(default_factory=list)  # what each item selection left out
    groups: int = 0  # distinct groups (0: no group)

    @property
    def text(self) -> str:
        lines = [f"imported {self.items} items × {self.n_features} features as {self.key}",
                 f"  manifest: {self.manifest}",
                 f"  NaN values: {self.nan_values} in {self.rows_with_nan} rows (imputed inside each fold)"
                 + (f"; {self.inf_values} ±inf values in the file became NaN" if self.inf_values else "")]
        lines.append(f"  labels: {', '.join(self.label_columns)}" if self.label_columns else
                     "  no labels: the items serve predict and export (fit needs label columns)")
        if self.groups:
            lines.append(f"  groups: {self.groups} (CV folds never split one)")
        lines += [f"  {note}" for note in self.selection]
        if self.unlabelled:
            lines.append(f"  {self.unlabelled} feature rows without a label row were left out")
        if self.failed:
            lines.append(f"  {len(self.failed)} rows are NaN throughout and were recorded as failed "
                         f"(e.g. {self.failed[0]})")
        return "\n".join(lines)


def _check_name(name: str) -> None:
    if not DATASET_NAME.match(name):
        raise FeatbankError(f"feature set name {name!r}: use letters, digits, '_', '.', '-' only")
    if name in extractors.REGISTRY:
        raise FeatbankError(f"{name!r} is an extractor's name; give imported features another --name")


def _label_columns(labels: pd.DataFrame, given: list[str] | None, taken: set[str], path: Path,
                   same_file: bool) -> list[str]:
    """The label columns: as given, or the label file's only numeric column besides ids/groups."""
    if given:
        missing = [c for c in given if c not in labels.columns]
        if missing:
            raise FeatbankError(f"{path}: no label column(s) {', '.join(missing)}; "
                                f"columns: {', '.join(map(str, labels.columns))}")
        clash = [c for c in given if c in RESERVED or c.startswith(META_PREFIX)]
        if clash:
            raise FeatbankError(f"label column(s) {', '.join(clash)} would collide with the manifest's "
                                f"reserved columns ({', '.join(RESERVED)}, {META_PREFIX}*); rename them")
        return list(given)
    numeric = [c for c in labels.columns if c not in taken and pd.api.types.is_numeric_dtype(labels[c])]
    if len(numeric) <= 1 and not same_file:  # none: an id list, e.g. a challenge's unlabelled test list
        return numeric
    why = ("features and labels share one file, so every numeric column but the labels is a feature; "
           "without labels, leave out --labels" if same_file else f"numeric columns: {', '.join(map(str, numeric))}")
    raise FeatbankError(f"{path}: name the label column(s) with --label-columns ({why})")


@dataclass
class _LabelFile:
    """The label file as an import reads it: one row per item, in the order the manifest keeps."""

    path: Path
    table: pd.DataFrame
    id_column: str | None
    label_columns: list[str]
    group_column: str | None

    @property
    def ids(self) -> list[str] | None:
        return self.table[self.id_column].tolist() if self.id_column else None

    @property
    def never_features(self) -> set[str]:
        """Columns that are never features, even when features and labels share one file."""
        return {c for c in (self.id_column, self.group_column) if c} | set(self.label_columns)


def _read_labels(path: Path, id_column: str | None, label_columns: list[str] | None, group_column: str | None,
                 same_file: bool) -> _LabelFile:
    if not path.is_file():
        raise FeatbankError(f"label file {path} does not exist")
    table = read_table(path, id_column)
    for what, col in (("id", id_column), ("group", group_column)):
        if col and col not in table.columns:
            raise FeatbankError(f"{path}: no {what} column {col!r}; columns: {', '.join(map(str, table.columns))}")
    taken = {c for c in (id_column, group_column) if c}
    return _LabelFile(path, table, id_column, _label_columns(table, label_columns, taken, path, same_file),
                      group_column)


def _check_unique(values: list[str] | None, path: Path, side: str) -> None:
    if values is not None:
        index = pd.Index(values)
        dup = index[index.duplicated()].unique().tolist()
        if dup:
            raise FeatbankError(f"{path}: duplicate {side} ids, e.g. {', '.join(map(str, dup[:5]))}")


def _align(ids: list[str] | None, labels: _LabelFile | None, keep: np.ndarray, n_rows: int,
           features_path: Path) -> tuple[np.ndarray, int]:
    """Feature row of each kept item, and how many feature rows have no label row.

    Items are the label file's rows (or, without one, the feature file's): matched by id when both
    files have ids (every kept labelled id needs a feature row), else by order (counts must agree).
    """
    label_ids = labels.ids if labels is not None else None
    if labels is None or ids is None or label_ids is None:
        if labels is not None and n_rows != len(labels.table):
            raise FeatbankError(f"{features_path} has {n_rows} rows but {labels.path} has {len(labels.table)}: "
                                f"without ids on both sides rows are matched by order, so the counts must agree")
        return np.flatnonzero(keep), 0
    position = {v: i for i, v in enumerate(ids)}
    wanted = [v for v, k in zip(label_ids, keep) if k]
    missing = [v for v in wanted if v not in position]
    if missing:
        raise FeatbankError(f"{len(missing)} labelled items of {labels.path} have no row in {features_path} "
                            f"(e.g. {', '.join(missing[:5])}); check the id columns")
    return np.array([position[v] for v in wanted], dtype=np.int64), len(set(ids) - set(label_ids))


def _groups(video_ids: list[str], named: bool, labels: _LabelFile | None, keep: np.ndarray,
            group_from_id: str | None) -> list[str] | None:
    """Each kept item's group: from its id (``named``: the ids come from a file), or the label file's column."""
    if group_from_id:
        if not named:
            raise FeatbankError("--group-from-id needs item ids: name the id column with --id-column")
        return groups_from_ids(video_ids, group_from_id)
    if labels is not None and labels.group_column:
        return labels.table[labels.group_column].astype(str)[keep].tolist()
    return None


def _manifest_table(video_ids: list[str], dataset: str, groups: list[str] | None, labels: _LabelFile | None,
                    keep: np.ndarray, drop: set[str]) -> pd.DataFrame:
    """video_id, import path, group, labels, and the label file's other columns as ``meta_*``."""
    table = pd.DataFrame({"video_id": video_ids,
                          "path": [VirtualItem(dataset, v).uri for v in video_ids]})
    if groups is not None:
        table["group"] = groups
    if labels is None:
        return table
    kept = labels.table[keep]
    for c in labels.label_columns:
        table[c] = kept[c].to_numpy()
    for c in kept.columns:
        if c not in drop and c not in labels.label_columns and c != labels.group_column:
            table[c if str(c).startswith(META_PREFIX) else f"{META_PREFIX}{c}"] = kept[c].to_numpy()
    return table


def group_key(name: str, source_sha256: str, key: str | None, feature_names: list[str]) -> str:
    """``name@<10 hex>``: same file, variable and columns → same group (re-import is idempotent)."""
    text = "\0".join([source_sha256, key or "", *feature_names])
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _rows(X: np.ndarray, video_ids: list[str], source: Path) -> dict[int, StepFeatures]:
    """One bank row per item: the vector as pooled features and as its single step."""
    out = {}
    for i, x in enumerate(X.astype(np.float32)):
        if np.isnan(x).all():
            out[i] = StepFeatures(status=FAILED, error=f"{source}: every feature of {video_ids[i]} "
                                                       f"is NaN (nothing to fit on)")
        else:
            out[i] = StepFeatures(status=OK, pooled=x, steps=x[None], mask=np.ones(1, bool),
                                  timestamps=np.zeros(1, np.float32))
    return out


def import_features(bank_path: StoreLike, manifest_out: str | os.PathLike,
                    features_path: str | os.PathLike, labels_path: str | os.PathLike | None, name: str,
                    dataset: str | None = None, key: str | None = None, id_column: str | None = None,
                    label_columns: list[str] | None = None, label_id_column: str | None = None,
                    group_column: str | None = None, *, feature_columns: list[str] | None = None,
                    exclude_columns: list[str] | None = None, group_from_id: str | None = None,
                    subset: str | None = None, keep_ids: str | os.PathLike | None = None,
                    drop_ids: str | os.PathLike | None = None) -> ImportReport:
    """Import a feature file (with its label file, if any) into the bank and write its items' manifest.

    Items are the label file's rows; without a label file (``labels_path=None``: an unlabelled test
    set, for predict) the feature file's rows. Rows are matched by id when both files have one
    (``id_column`` in the feature file, ``label_id_column``, default ``id_column``, in the label
    file; labelled ids must all have features, unlabelled feature rows are left out), else by order
    (the counts must agree). A label file without a numeric column is an id list: unlabelled items.
    ``dataset`` (default: the label, else feature, file's name) scopes the ids: imports sharing it
    share items.

    ``feature_columns`` / ``exclude_columns`` pick the features (names or globs); ``subset`` (a
    published subset), ``keep_ids`` and ``drop_ids`` (id list files) pick the items
    (:func:`featbank.io.selection.select_items`); ``group_from_id`` (a regex) derives each item's
    group from its id instead of a ``group_column``. Everything is checked before the bank or the
    manifest is touched.
    """
    from featbank.extraction.orchestrate import register_manifest  # deferred: it imports the decoders

    features_path, manifest_out = Path(features_path), Path(manifest_out)
    labels_path = Path(labels_path) if labels_path is not None else None
    _check_name(name)
    dataset = dataset or re.sub(r"[^A-Za-z0-9_.-]+", "_", (labels_path or features_path).stem)
    if not DATASET_NAME.match(dataset):
        raise FeatbankError(f"dataset name {dataset!r}: use letters, digits, '_', '.', '-' only")
    if group_column and group_from_id:
        raise FeatbankError("give the group either as a label-file column (--group-column) or from the id "
                            "(--group-from-id), not both")
    if labels_path is None and (label_columns or label_id_column or group_column):
        raise FeatbankError("--label-columns, --label-id-column and --group-column name columns of the label "
                            "file: give it with --labels")
    same_file = labels_path is not None and features_path.resolve() == labels_path.resolve()
    labels = None if labels_path is None else _read_labels(labels_path, label_id_column or id_column,
                                                           label_columns, group_column, same_file)
    exclude = tuple(sorted(labels.never_features)) if labels is not None else ()
    X, feature_names, ids = _read_any(features_path, key, id_column, exclude, feature_columns, exclude_columns)
    X, n_inf = infinite_to_nan(X)
    if np.abs(X[np.isfinite(X)]).max(initial=0) > np.finfo(np.float32).max:
        raise FeatbankError(f"{features_path}: values beyond float32's range, which the bank stores; rescale them")
    label_ids = labels.ids if labels is not None else None
    _check_unique(ids, features_path, "feature")
    _check_unique(label_ids, labels.path if labels is not None else features_path, "label")
    item_ids = label_ids if label_ids is not None else ids
    keep, selection = select_items(item_ids, len(labels.table) if labels is not None else len(X), subset,
                                   Path(keep_ids) if keep_ids else None, Path(drop_ids) if drop_ids else None)
    order, unlabelled = _align(ids, labels, keep, len(X), features_path)
    X = X[order]
    video_ids = ([str(v) for v, k in zip(item_ids, keep) if k] if item_ids is not None
                 else [str(i) for i in np.flatnonzero(keep)])
    groups = _groups(video_ids, item_ids is not None, labels, keep, group_from_id)
    drop = (set(feature_names) if same_file else set()) | (labels.never_features if labels is not None else set())
    table = _manifest_table(video_ids, dataset, groups, labels, keep, drop)
    try:
        manifest = validate_table(table, manifest_out, manifest_out.parent)
    except ManifestError as exc:
        rows = "the label file's rows" if keep.all() else "the imported rows, after the item selection"
        raise ManifestError(f"the items of {labels_path or features_path} do not make a valid manifest "
                            f"(line numbers count {rows}): {exc}") from exc

    source_sha256 = file_digest(features_path).hex()
    gkey = group_key(name, source_sha256, key, feature_names)
    d = X.shape[1]
    schema = GroupSchema(
        extractor=name, spec=IMPORT_SPEC_PREFIX + name, version=IMPORTER_VERSION,
        layout=GroupLayout(pooled_dim=d, max_steps=1, step_dim=d, frames_per_step=0),
        config={"source": str(features_path.resolve()), "sha256": source_sha256, "key": key,
                "id_column": id_column, "dataset": dataset},
        feature_names=tuple(feature_names), pooled_names=tuple(feature_names),
        details={"inf_to_nan": n_inf,
                 "missing_values": "NaN (±inf in the file became NaN; imputed per fold)"},
    )
    per_item = _rows(X, manifest.video_ids, features_path)
    from featbank.bank.compact import pack_group
    from featbank.bank.session import write_session  # one writer per bank (featbank/bank/lock.py)

    with write_session(bank_path), FeatureBank(bank_path) as bank:
        rows = register_manifest(bank, manifest)
        bank.ensure_group(gkey, schema)
        bank.commit(rows, {}, {gkey: {int(rows[i]): out for i, out in per_item.items()}},
                    {int(r): v for r, v in zip(rows, manifest.video_ids)})
        if bank.chunk_files(f"features/{gkey}/pooled") is not None:
            # An import writes its group whole, at once: pack it now, as `featbank compact` would, so a
            # 40k-row table is read cold from ~10 files instead of 2,500 (benchmarks/bench_bank_load.py).
            pack_group(bank, gkey)

    manifest_out.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest_out.with_name(manifest_out.name + ".partial")
    if manifest_out.suffix.lower() in (".parquet", ".pq"):
        table.to_parquet(partial, index=False)
    else:
        table.to_csv(partial, index=False)
    os.replace(partial, manifest_out)
    nan = np.isnan(X)
    return ImportReport(key=gkey, manifest=manifest_out, items=len(X), n_features=d,
                        nan_values=int(nan.sum()), rows_with_nan=int(nan.any(1).sum()), inf_values=n_inf,
                        unlabelled=unlabelled,
                        failed=[manifest.video_ids[i] for i, o in per_item.items() if o.status == FAILED],
                        label_columns=manifest.label_columns, selection=selection,
                        groups=int(manifest.groups.nunique()) if manifest.groups is not None else 0)
