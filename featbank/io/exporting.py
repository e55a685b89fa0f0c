"""``featbank export``: a manifest's pooled features and labels as one HDF5 or Parquet file.

For tools outside featbank (a notebook, R, MATLAB, a teammate without the bank): one row per
manifest item, in manifest order, with the exact float32 values the bank holds. Items whose
extraction failed stay in the file with NaN features (``usable`` in HDF5 says which), so the row
order always matches the manifest.

- HDF5: ``video_id``, ``group`` (when the manifest has one), ``labels/<column>``,
  ``features/<group>`` ``(items, features)`` with attributes ``feature_names``, ``key`` and
  ``provenance`` (JSON), and ``usable``. ``featbank import --key features/<group>
  --id-column video_id`` reads such a file back.
- Parquet: ``video_id``, ``group``, the labels, then one column ``<group>:<feature_name>`` per
  feature; each group's key and provenance are in the schema metadata under ``featbank``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featbank import __version__
from featbank.bank.store import FeatureBank, StoreLike
from featbank.errors import FeatbankError
from featbank.bank.matrix import FeatureBlocks, labelled_frame, load_blocks
from featbank.io.manifest import Manifest, load_manifest

HDF5_SUFFIXES = (".h5", ".hdf5")
PARQUET_SUFFIXES = (".parquet", ".pq")


def export_features(bank_path: StoreLike, manifest_path: str | os.PathLike, features: list[str],
                    out_path: str | os.PathLike) -> Path:
    """Write the manifest's items with the named feature groups to ``out_path`` (.h5/.hdf5/.parquet)."""
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in HDF5_SUFFIXES + PARQUET_SUFFIXES:
        raise FeatbankError(f"{out}: export writes {', '.join(HDF5_SUFFIXES + PARQUET_SUFFIXES)} files")
    if len(set(features)) != len(features):
        raise FeatbankError(f"feature groups named twice: {', '.join(features)}")
    manifest = load_manifest(manifest_path)
    with FeatureBank(bank_path, mode="r") as bank:
        fb = load_blocks(bank, manifest, features)
        if len(fb.blocks) != len(features):
            raise FeatbankError(f"{', '.join(features)} name the same bank group more than once")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if suffix in HDF5_SUFFIXES:
        _write_hdf5(partial, manifest, fb)
    else:
        _write_parquet(partial, manifest, fb)
    os.replace(partial, out)
    return out


def _write_hdf5(path: Path, manifest: Manifest, fb: FeatureBlocks) -> None:
    import h5py

    text = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs.update({"featbank": __version__, "manifest": str(manifest.source.resolve())})
        f.create_dataset("video_id", data=np.array(manifest.video_ids, dtype=object), dtype=text)
        if manifest.groups is not None:
            f.create_dataset("group", data=manifest.groups.to_numpy(dtype=object), dtype=text)
        for col in manifest.label_columns:
            f.create_dataset(f"labels/{col}", data=manifest.labels([col])[col].to_numpy())
        f.create_dataset("usable", data=fb.usable)
        for key, X in fb.blocks.items():
            schema = fb.schemas[key]
            ds = f.create_dataset(f"features/{fb.specs[key]}", data=X.astype(np.float32))
            ds.attrs["feature_names"] = np.array(schema.column_names(), dtype=object)
            ds.attrs["key"] = key
            ds.attrs["provenance"] = json.dumps(schema.to_attrs())


def _write_parquet(path: Path, manifest: Manifest, fb: FeatureBlocks) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(labelled_frame(manifest, fb), preserve_index=False)
    meta = {fb.specs[key]: {"key": key, "provenance": schema.to_attrs()} for key, schema in fb.schemas.items()}
    schema_meta = {**(table.schema.metadata or {}), b"featbank": json.dumps(meta).encode()}
    pq.write_table(table.replace_schema_metadata(schema_meta), path)
