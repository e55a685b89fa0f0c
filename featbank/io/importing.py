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
from featbank import __version__
from featbank.bank.store import FAILED, IMPORT_SPEC_PREFIX, OK, FeatureBank, GroupLayout, StepFeatures
from featbank.errors import FeatbankError, ManifestError
from featbank.bank.hashing import file_digest
from featbank.io.manifest import DATASET_NAME, META_PREFIX, RESERVED, VirtualItem, validate_table

IMPORTER_VERSION = "1"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SUFFIXES = (".mat", ".h5", ".hdf5", ".npy", ".npz", *TABLE_SUFFIXES)
MATLAB_INTERNAL = ("#refs#", "#subsystem#")

Matrix = tuple[np.ndarray, list[str], list[str] | None]


# ------------------------------------------------------------------------------------ reading
def read_feature_matrix(path: str | os.PathLike, key: str | None = None, id_column: str | None = None,
                        exclude: tuple[str, ...] = ()) -> Matrix:
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

    ±inf becomes NaN because pipelines impute NaN per fold, and an infinity would break scaling.
    Files without ids give ``ids=None``; unnamed columns are named ``f0``, ``f1``, ...
    """
    X, names, ids = _read_any(Path(path), key, id_column, exclude)
    return infinite_to_nan(X)[0], names, ids


def infinite_to_nan(X: np.ndarray) -> tuple[np.ndarray, int]:
    """``X`` with ±inf replaced by NaN, and how many there were."""
    infinite = np.isinf(X)
    return np.where(infinite, np.nan, X), int(infinite.sum())


def _read_any(path: Path, key: str | None, id_column: str | None, exclude: tuple[str, ...]) -> Matrix:
    if not path.is_file():
        raise FeatbankError(f"feature file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat":
            return _read_mat(path, key)
        if suffix in (".h5", ".hdf5"):
            return _read_hdf5(path, key, id_column)
        if suffix in (".npy", ".npz"):
            return _read_numpy(path, key)
        if suffix in TABLE_SUFFIXES:
            return _read_columns(path, id_column, exclude)
    except FeatbankError:
        raise
    except Exception as exc:  # the readers raise many types for a damaged file; name the file
        raise FeatbankError(f"cannot read feature file {path}: {exc}") from exc
    raise FeatbankError(f"{path}: unsupported feature file type {suffix!r}; supported: {', '.join(SUFFIXES)}")


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


def default_names(d: int) -> list[str]:
    """Names for unnamed feature columns: ``f0 .. f{d-1}``."""
    return [f"f{j}" for j in range(d)]


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


def _read_columns(path: Path, id_column: str | None, exclude: tuple[str, ...]) -> Matrix:
    table = read_table(path, id_column)
    ids = table[id_column].tolist() if id_column and id_column in table.columns else None
    features = table.drop(columns=[c for c in {id_column, *exclude} if c in table.columns])
    text = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise FeatbankError(f"{path}: non-numeric column(s) {', '.join(text)}; every column other than "
                            f"the id (--id-column) and the labels must be a numeric feature")
    X = _matrix(features.to_numpy(dtype=np.float64, na_value=np.nan), str(path))
    return X, [str(c) for c in features.columns], ids


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

    @property
    def text(self) -> str:
        lines = [f"imported {self.items} items × {self.n_features} features as {self.key}",
                 f"  manifest: {self.manifest}",
                 f"  NaN values: {self.nan_values} in {self.rows_with_nan} rows (imputed inside each fold)"
                 + (f"; {self.inf_values} ±inf values in the file became NaN" if self.inf_values else "")]
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
    if len(numeric) == 1 and not same_file:
        return numeric
    why = ("features and labels share one file, so every numeric column but the labels is a feature"
           if same_file else f"numeric columns: {', '.join(map(str, numeric)) or 'none'}")
    raise FeatbankError(f"{path}: name the label column(s) with --label-columns ({why})")


def _align(ids: list[str] | None, label_ids: list[str] | None, n_rows: int, n_labels: int,
           features_path: Path, labels_path: Path) -> tuple[np.ndarray, int]:
    """Feature row of each label row, and how many feature rows have no label row."""
    if ids is not None and label_ids is not None:
        for side, values, path in (("feature", ids, features_path), ("label", label_ids, labels_path)):
            dup = pd.Index(values)[pd.Index(values).duplicated()].unique().tolist()
            if dup:
                raise FeatbankError(f"{path}: duplicate {side} ids, e.g. {', '.join(dup[:5])}")
        position = {v: i for i, v in enumerate(ids)}
        missing = [v for v in label_ids if v not in position]
        if missing:
            raise FeatbankError(f"{len(missing)} labelled items of {labels_path} have no row in {features_path} "
                                f"(e.g. {', '.join(missing[:5])}); check the id columns")
        return np.array([position[v] for v in label_ids], dtype=np.int64), n_rows - n_labels
    if n_rows != n_labels:
        raise FeatbankError(f"{features_path} has {n_rows} rows but {labels_path} has {n_labels}: without "
                            f"ids on both sides rows are matched by order, so the counts must agree")
    return np.arange(n_rows), 0


def _manifest_table(labels: pd.DataFrame, video_ids: list[str], dataset: str, label_columns: list[str],
                    group_column: str | None, drop: set[str]) -> pd.DataFrame:
    """video_id, import path, group, labels, and the label file's other columns as ``meta_*``."""
    table = pd.DataFrame({"video_id": video_ids,
                          "path": [VirtualItem(dataset, v).uri for v in video_ids]})
    if group_column:
        table["group"] = labels[group_column].astype(str).to_numpy()
    for c in label_columns:
        table[c] = labels[c].to_numpy()
    for c in labels.columns:
        if c not in drop and c not in label_columns and c != group_column:
            table[c if str(c).startswith(META_PREFIX) else f"{META_PREFIX}{c}"] = labels[c].to_numpy()
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


def import_features(bank_path: str | os.PathLike, manifest_out: str | os.PathLike,
                    features_path: str | os.PathLike, labels_path: str | os.PathLike, name: str,
                    dataset: str | None = None, key: str | None = None, id_column: str | None = None,
                    label_columns: list[str] | None = None, label_id_column: str | None = None,
                    group_column: str | None = None) -> ImportReport:
    """Import a feature file with its label file into the bank and write the manifest of its items.

    Rows are matched by id when both files have one (``id_column`` in the feature file,
    ``label_id_column``, default ``id_column``, in the label file; labelled ids must all have
    features, unlabelled feature rows are left out), else by order (the counts must agree).
    ``dataset`` (default: the label file's name) scopes the ids: imports sharing it share items.
    Everything is checked before the bank or the manifest is touched.
    """
    from featbank.extraction.orchestrate import register_manifest  # deferred: it imports the decoders

    features_path, labels_path, manifest_out = Path(features_path), Path(labels_path), Path(manifest_out)
    _check_name(name)
    dataset = dataset or re.sub(r"[^A-Za-z0-9_.-]+", "_", labels_path.stem)
    if not DATASET_NAME.match(dataset):
        raise FeatbankError(f"dataset name {dataset!r}: use letters, digits, '_', '.', '-' only")
    label_id_column = label_id_column or id_column
    if not labels_path.is_file():
        raise FeatbankError(f"label file {labels_path} does not exist")
    labels = read_table(labels_path, label_id_column)
    for what, col in (("id", label_id_column), ("group", group_column)):
        if col and col not in labels.columns:
            raise FeatbankError(f"{labels_path}: no {what} column {col!r}; columns: {', '.join(map(str, labels.columns))}")
    same_file = features_path.resolve() == labels_path.resolve()
    taken = {c for c in (label_id_column, group_column) if c}
    label_columns = _label_columns(labels, label_columns, taken, labels_path, same_file)
    exclude = tuple(sorted(taken | set(label_columns)))
    X, feature_names, ids = _read_any(features_path, key, id_column, exclude)
    X, n_inf = infinite_to_nan(X)
    if np.abs(X[np.isfinite(X)]).max(initial=0) > np.finfo(np.float32).max:
        raise FeatbankError(f"{features_path}: values beyond float32's range, which the bank stores; rescale them")
    label_ids = labels[label_id_column].tolist() if label_id_column else None
    order, unlabelled = _align(ids, label_ids, len(X), len(labels), features_path, labels_path)
    X = X[order]
    video_ids = label_ids or ids or [str(i) for i in range(len(X))]
    drop = set(feature_names) | taken if same_file else taken
    table = _manifest_table(labels, [str(v) for v in video_ids], dataset, label_columns, group_column, drop)
    try:
        manifest = validate_table(table, manifest_out, manifest_out.parent)
    except ManifestError as exc:
        raise ManifestError(f"the labels in {labels_path} do not make a valid manifest "
                            f"(line numbers are the label file's rows): {exc}") from exc

    source_sha256 = file_digest(features_path).hex()
    gkey = group_key(name, source_sha256, key, feature_names)
    d = X.shape[1]
    provenance = {
        "extractor": name, "spec": IMPORT_SPEC_PREFIX + name, "version": IMPORTER_VERSION,
        "config": {"source": str(features_path.resolve()), "sha256": source_sha256, "key": key,
                   "id_column": id_column, "dataset": dataset},
        "feature_names": feature_names, "pooled_names": feature_names, "weights": None,
        "inf_to_nan": n_inf, "missing_values": "NaN (±inf in the file became NaN; imputed per fold)",
        "featbank": __version__,
    }
    bank = FeatureBank(bank_path)
    rows = register_manifest(bank, manifest)
    bank.ensure_group(gkey, GroupLayout(pooled_dim=d, max_steps=1, step_dim=d, frames_per_step=0), provenance)
    per_item = _rows(X, manifest.video_ids, features_path)
    bank.commit(rows, {}, {gkey: {int(rows[i]): out for i, out in per_item.items()}},
                {int(r): v for r, v in zip(rows, manifest.video_ids)})

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
                        failed=[manifest.video_ids[i] for i, o in per_item.items() if o.status == FAILED])
