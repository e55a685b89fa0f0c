"""Importing feature sets computed elsewhere, and exporting banked features.

Every supported file type must give the same matrix; rows are aligned with labels by id or by
order (and misalignment is an error, never a silent shift); imported items are virtual (no
media) yet flow through manifest → bank → fit unchanged; export round-trips the values.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io

import extractors
import featbank.io.subsets
from featbank.bank.store import FAILED, OK, FeatureBank
from featbank.cli import main
from featbank.errors import BankError, FeatbankError, ManifestError
from featbank.io.exporting import export_features
from featbank.extraction.item import extract_item
from featbank.bank.matrix import load_blocks, resolve_key
from featbank.bank.hashing import digest_paths, file_digest, virtual_digest
from featbank.io.importing import import_features, read_feature_matrix
from featbank.io.subsets import available_subsets, load_subset
from featbank.io.manifest import VirtualItem, item_text, load_manifest, media_item
from featbank.extraction.orchestrate import extract_manifest

FIT = ["--learners", "ridge,svr", "--folds", "5", "--no-progress", "--jobs", "1"]
X = np.array([[1.0, 2.0, 3.0], [4.0, 5.5, 6.0], [7.0, 8.0, 9.25], [0.5, -1.0, 2.0]])
NAMES = ["sharp", "noise", "colour"]
IDS = ["v0", "v1", "v2", "v3"]


def write_mat73(path: Path, variables: dict[str, np.ndarray]) -> Path:
    """A MATLAB v7.3 file as MATLAB writes it: a 512-byte header, then HDF5, arrays column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            ds = f.create_dataset(name, data=np.asarray(value).T)  # MATLAB's n×d is stored d×n
            ds.attrs["MATLAB_class"] = np.bytes_("double")
        f.create_group("#refs#")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, tuple[Path, str | None]]:
    """The same 4×3 matrix in every supported format, with the --key each needs."""
    out: dict[str, tuple[Path, str | None]] = {}
    scipy.io.savemat(tmp_path / "v5.mat", {"feats_mat": X, "note": np.array([[7.0]])})
    out["mat v5"] = (tmp_path / "v5.mat", None)
    out["mat v7.3"] = (write_mat73(tmp_path / "v73.mat", {"feats_mat": X}), None)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("deep/feats", data=X)
        f.create_dataset("labels/mos", data=np.arange(4.0))
    out["hdf5"] = (tmp_path / "f.h5", "deep/feats")
    np.save(tmp_path / "f.npy", X)
    out["npy"] = (tmp_path / "f.npy", None)
    np.savez(tmp_path / "f.npz", feats=X, other=np.ones((4, 2)))
    out["npz"] = (tmp_path / "f.npz", "feats")
    table = pd.DataFrame(X, columns=NAMES).assign(name=IDS)
    table.to_csv(tmp_path / "f.csv", index=False)
    out["csv"] = (tmp_path / "f.csv", None)
    table.to_parquet(tmp_path / "f.parquet", index=False)
    out["parquet"] = (tmp_path / "f.parquet", None)
    return out


def labels_csv(tmp_path: Path, ids=IDS, mos=(1.0, 2.0, 3.0, 4.0), **extra) -> Path:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"vid": list(ids), "mos": list(mos), **extra}).to_csv(path, index=False)
    return path


def test_every_format_gives_the_same_matrix(files):
    for fmt, (path, key) in files.items():
        got, names, ids = read_feature_matrix(path, key=key, id_column="name")
        assert got.dtype == np.float64 and got.shape == (4, 3), fmt
        np.testing.assert_array_equal(got, X, err_msg=fmt)
        if fmt in ("csv", "parquet"):
            assert names == NAMES and ids == IDS
        else:
            assert names == ["f0", "f1", "f2"] and ids is None, fmt


def test_ambiguous_or_wrong_keys_list_what_the_file_holds(tmp_path, files):
    scipy.io.savemat(tmp_path / "two.mat", {"a": X, "b": X[:, :2]})
    with pytest.raises(FeatbankError, match=r"2 2-D numeric variables, name one with --key: a 4×3, b 4×2"):
        read_feature_matrix(tmp_path / "two.mat")
    assert read_feature_matrix(tmp_path / "two.mat", key="b")[0].shape == (4, 2)
    with pytest.raises(FeatbankError, match=r"no 2-D numeric dataset 'feats'; available: deep/feats 4×3"):
        read_feature_matrix(files["hdf5"][0], key="feats")
    with pytest.raises(FeatbankError, match="name one with --key: feats 4×3, other 4×2"):
        read_feature_matrix(files["npz"][0])
    write_mat73(tmp_path / "two73.mat", {"x": X, "y": X[:2]})
    with pytest.raises(FeatbankError, match="x 4×3, y 2×3"):  # MATLAB's shape, not HDF5's
        read_feature_matrix(tmp_path / "two73.mat")
    with h5py.File(tmp_path / "v73.mat", "a") as f:  # MATLAB stores a char array as uint16 codes
        f.create_dataset("title", data=np.frombuffer(b"a title!", np.uint8).astype(np.uint16)[None])
        f["title"].attrs["MATLAB_class"] = np.bytes_("char")
    np.testing.assert_array_equal(read_feature_matrix(tmp_path / "v73.mat")[0], X)
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(FeatbankError, match=r"shape \(2, 2, 2\): expected items × features"):
        read_feature_matrix(tmp_path / "cube.npy")
    (tmp_path / "f.txt").write_text("1 2 3")
    with pytest.raises(FeatbankError, match="unsupported feature file type '.txt'"):
        read_feature_matrix(tmp_path / "f.txt")
    with pytest.raises(FeatbankError, match="non-numeric column.s. name"):
        read_feature_matrix(files["csv"][0])  # the id column was not named


def test_infinities_become_nan_and_are_counted(tmp_path):
    bad = X.copy()
    bad[0, 1], bad[2, 2] = np.inf, -np.inf
    np.save(tmp_path / "inf.npy", bad)
    got, _, _ = read_feature_matrix(tmp_path / "inf.npy")
    assert np.isnan(got[0, 1]) and np.isnan(got[2, 2]) and np.isfinite(np.delete(got.ravel(), [1, 8])).all()
    report = import_features(tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "inf.npy",
                             labels_csv(tmp_path), "deep", id_column="vid")
    assert report.inf_values == 2 and report.nan_values == 2 and report.rows_with_nan == 2
    bank = FeatureBank(tmp_path / "b.zarr", mode="r")
    assert bank.group(report.key).attrs["inf_to_nan"] == 2
    assert bank.validate() == []  # NaN is a legal gap in imported rows


def test_rows_are_aligned_by_id_or_by_order_and_misalignment_is_an_error(tmp_path, files):
    csv = files["csv"][0]
    shuffled = labels_csv(tmp_path, ids=["v2", "v0", "v3", "v1"], mos=[3.0, 1.0, 4.0, 2.0])
    report = import_features(tmp_path / "b.zarr", tmp_path / "m.csv", csv, shuffled, "hc",
                             id_column="name", label_id_column="vid")
    manifest = load_manifest(tmp_path / "m.csv")
    assert manifest.video_ids == ["v2", "v0", "v3", "v1"]  # label-file order, features follow the ids
    fb = load_blocks(FeatureBank(tmp_path / "b.zarr", mode="r"), manifest, ["hc"])
    np.testing.assert_array_equal(fb.blocks[report.key], X[[2, 0, 3, 1]].astype(np.float32))

    few = labels_csv(tmp_path, ids=["v0", "v1", "v2"], mos=[1.0, 2.0, 3.0])
    with pytest.raises(FeatbankError, match="has 4 rows but .* has 3: without ids on both sides"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", files["npy"][0], few, "deep", id_column="vid")
    unknown = labels_csv(tmp_path, ids=["v0", "v1", "v9", "v8"])
    with pytest.raises(FeatbankError, match="2 labelled items .* have no row in .*e.g. v9, v8"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", csv, unknown, "hc",
                        id_column="name", label_id_column="vid")
    dup = labels_csv(tmp_path, ids=["v0", "v0", "v1", "v2"])
    with pytest.raises(FeatbankError, match="duplicate label ids, e.g. v0"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", csv, dup, "hc",
                        id_column="name", label_id_column="vid")
    subset = labels_csv(tmp_path, ids=["v3", "v1"], mos=[1.0, 2.0])  # a labelled split of the file
    assert import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", csv, subset, "hc", id_column="name",
                           label_id_column="vid").unlabelled == 2
    nan_label = labels_csv(tmp_path, mos=[1.0, np.nan, 3.0, 4.0])
    with pytest.raises(ManifestError, match="label 'mos' is non-numeric or NaN at line.s. 3"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", files["npy"][0], nan_label, "deep", id_column="vid")
    with pytest.raises(FeatbankError, match="name the label column.s. with --label-columns .numeric columns: mos, width"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", files["npy"][0],
                        labels_csv(tmp_path, width=[1, 2, 3, 4]), "deep", id_column="vid")
    with pytest.raises(FeatbankError, match="an extractor's name"):
        import_features(tmp_path / "b.zarr", tmp_path / "m2.csv", csv, shuffled, "handcrafted")


def test_reimport_is_idempotent_and_all_nan_rows_fail(tmp_path):
    data = X.copy()
    data[1] = np.nan
    np.save(tmp_path / "f.npy", data)
    labels = labels_csv(tmp_path, group=["a", "a", "b", "b"], note=["x", "y", "z", "w"])
    args = (tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.npy", labels, "deep")
    first = import_features(*args, id_column="vid", group_column="group", dataset="toy")
    bank = FeatureBank(tmp_path / "b.zarr", mode="r")
    before = (bank.count, bank.group(first.key)["pooled"][:], bank.status(first.key).tolist())
    second = import_features(*args, id_column="vid", group_column="group", dataset="toy")
    bank = FeatureBank(tmp_path / "b.zarr", mode="r")
    assert second.key == first.key and bank.group_keys() == [first.key] and bank.count == before[0] == 4
    np.testing.assert_array_equal(bank.group(first.key)["pooled"][:], before[1])
    assert before[2] == [OK, FAILED, OK, OK] and first.failed == ["v1"]
    assert "NaN (nothing to fit on)" in next(iter(bank.failures(first.key).values()))["error"]
    assert bank.validate() == []
    table = pd.read_csv(tmp_path / "m.csv", dtype=str)
    assert table.columns.tolist() == ["video_id", "path", "group", "mos", "meta_note"]
    assert table["path"].tolist()[0] == "featbank-import://toy/v0"
    attrs = bank.group(first.key).attrs
    assert attrs["spec"] == "import:deep" and attrs["config"]["sha256"] == file_digest(tmp_path / "f.npy").hex()
    assert attrs["feature_names"] == ["f0", "f1", "f2"] and attrs["layout"]["max_steps"] == 1
    fb = load_blocks(bank, load_manifest(tmp_path / "m.csv"), ["deep"])
    assert fb.usable.tolist() == [True, False, True, True] and fb.dropped == [("v1", first.key)]


def test_virtual_items_in_manifests(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({"video_id": ["a", "b", "c"], "mos": [1.0, 2.0, 3.0],
                  "path": ["featbank-import://ds/a", "featbank-import://ds/dir/b.mp4", "x.mp4"]}).to_csv(path, index=False)
    (tmp_path / "x.mp4").write_bytes(b"x")
    items = load_manifest(path).media_paths()
    assert items[:2] == [VirtualItem("ds", "a"), VirtualItem("ds", "dir/b.mp4")] and items[2] == tmp_path / "x.mp4"
    assert [media_item(item_text(i), Path("/")) for i in items] == [*items[:2], (tmp_path / "x.mp4").resolve()]
    digests = digest_paths(items)
    assert digests[0] == virtual_digest(VirtualItem("ds", "a")) != virtual_digest(VirtualItem("ds", "b"))
    assert virtual_digest(VirtualItem("ab", "c")) != virtual_digest(VirtualItem("a", "bc"))
    assert digests[2] == file_digest(tmp_path / "x.mp4")
    pd.DataFrame({"video_id": ["a", "b"], "path": ["featbank-import://ds/", "featbank-import://bad name/x"]}
                 ).to_csv(path, index=False)
    with pytest.raises(ManifestError, match="malformed import path .* at line.s. 2, 3"):
        load_manifest(path)


def test_extracting_from_an_imported_item_fails_per_item(tmp_path):
    ex = extractors.create("test-mean")
    record, out = extract_item(VirtualItem("ds", "a"), [ex])
    assert record.info is None and out[ex.key].status == FAILED
    assert "featbank-import://ds/a: imported item has no media to decode" in out[ex.key].error
    np.save(tmp_path / "f.npy", X)
    import_features(tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.npy", labels_csv(tmp_path),
                    "deep", id_column="vid")
    report = extract_manifest(tmp_path / "m.csv", tmp_path / "b.zarr", ["test-mean"], progress=False)
    assert report.n_failed == 4 and "no media to decode" in report.failures[0][2]
    assert FeatureBank(tmp_path / "b.zarr", mode="r").validate() == []


@pytest.mark.parametrize("suffix", [".parquet", ".h5"])
def test_export_round_trip(tmp_path, files, suffix):
    bank, csv = tmp_path / "b.zarr", files["csv"][0]
    labels = labels_csv(tmp_path, group=["a", "a", "b", "b"])
    r1 = import_features(bank, tmp_path / "m.csv", csv, labels, "hc", id_column="name",
                         label_id_column="vid", group_column="group", dataset="toy")
    r2 = import_features(bank, tmp_path / "m.csv", files["npy"][0], labels, "deep", id_column="vid",
                         group_column="group", dataset="toy")
    out = export_features(bank, tmp_path / "m.csv", ["hc", "deep"], tmp_path / f"out{suffix}")
    if suffix == ".parquet":
        table = pd.read_parquet(out)
        assert table.columns[:3].tolist() == ["video_id", "group", "mos"]
        np.testing.assert_array_equal(table[[f"hc:{n}" for n in NAMES]].to_numpy(), X.astype(np.float32))
        np.testing.assert_array_equal(table[["deep:f0", "deep:f1", "deep:f2"]].to_numpy(), X.astype(np.float32))
        import pyarrow.parquet as pq
        meta = json.loads(pq.read_schema(out).metadata[b"featbank"])
        assert meta["hc"]["key"] == r1.key and meta["deep"]["provenance"]["spec"] == "import:deep"
        assert table["mos"].tolist() == [1.0, 2.0, 3.0, 4.0] and table["video_id"].tolist() == IDS
    else:
        with h5py.File(out) as f:
            assert [v.decode() for v in f["video_id"][()]] == IDS
            np.testing.assert_array_equal(f["features/hc"][()], X.astype(np.float32))
            assert list(f["features/hc"].attrs["feature_names"]) == NAMES and f["usable"][()].all()
            assert f["features/deep"].attrs["key"] == r2.key
            np.testing.assert_array_equal(f["labels/mos"][()], [1.0, 2.0, 3.0, 4.0])
        back = read_feature_matrix(out, key="features/hc", id_column="video_id")
        np.testing.assert_array_equal(back[0], X)
        assert back[1:] == (NAMES, IDS)  # export → import reads its own files back


def test_cli_import_then_fit_and_name_resolution(tmp_path, capsys):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 5))
    mos = feats @ np.array([1.0, -0.5, 0.3, 0.0, 0.0]) + 0.1 * rng.normal(size=60)
    ids = [f"clip{i:02d}" for i in range(60)]
    pd.DataFrame(feats, columns=[f"c{j}" for j in range(5)]).assign(id=ids, mos=mos,
                                                                    src=[f"s{i // 5}" for i in range(60)]
                                                                    ).to_csv(tmp_path / "both.csv", index=False)
    bank = str(tmp_path / "b.zarr")
    base = ["import", "--features", str(tmp_path / "both.csv"), "--labels", str(tmp_path / "both.csv"),
            "--id-column", "id", "--label-columns", "mos", "--group-column", "src", "--name", "thqa",
            "--bank", bank]
    assert main([*base, "--dataset", "one", "--manifest-out", str(tmp_path / "one.csv")]) == 0
    assert "imported 60 items × 5 features" in capsys.readouterr().out  # mos, id and src are no features
    code = main(["fit", "--manifest", str(tmp_path / "one.csv"), "--features", "thqa", "--bank", bank,
                 "--out", str(tmp_path / "fit"), *FIT])
    assert code == 0 and (tmp_path / "fit" / "model").is_dir()
    summary = pd.read_csv(tmp_path / "fit" / "summary.csv")
    assert summary["srcc_median"].max() > 0.8
    # the same file imported for another dataset is another group; the name picks the one holding the items
    assert main([*base, "--dataset", "two", "--manifest-out", str(tmp_path / "two.csv")]) == 0
    fbank = FeatureBank(bank, mode="r")
    assert len(fbank.keys_for("thqa")) == 1  # same file, variable and columns: the same group
    (tmp_path / "other.csv").write_text((tmp_path / "both.csv").read_text().replace("c4", "c9"))
    assert main([*base[:2], str(tmp_path / "other.csv"), *base[3:], "--dataset", "three",
                 "--manifest-out", str(tmp_path / "three.csv")]) == 0
    fbank = FeatureBank(bank, mode="r")
    keys = fbank.keys_for("thqa")
    assert len(keys) == 2
    with pytest.raises(BankError, match="ambiguous"):
        resolve_key(fbank, "thqa")
    for m in ("one", "three"):
        fb = load_blocks(fbank, load_manifest(tmp_path / f"{m}.csv"), ["thqa"])
        assert fb.usable.all() and fbank.group(next(iter(fb.blocks))).attrs["feature_names"][-1] == \
            ("c4" if m == "one" else "c9")
    # predicting items whose imported features are missing says to import them
    pd.read_csv(tmp_path / "one.csv").assign(path=lambda t: t["path"].str.replace("//one/", "//new/")
                                             ).to_csv(tmp_path / "new.csv", index=False)
    code = main(["predict", "--manifest", str(tmp_path / "new.csv"), "--model", str(tmp_path / "fit" / "model"),
                 "--out", str(tmp_path / "sub.csv"), "--bank", bank, "--no-progress"])
    assert code == 3 and "import the new items' features too" in capsys.readouterr().err
    assert main(["predict", "--manifest", str(tmp_path / "one.csv"), "--model", str(tmp_path / "fit" / "model"),
                 "--out", str(tmp_path / "sub.csv"), "--bank", bank, "--no-progress"]) == 0
    assert main(["export", "--manifest", str(tmp_path / "one.csv"), "--features", "thqa",
                 "--out", str(tmp_path / "x.parquet"), "--bank", bank]) == 0
    assert pd.read_parquet(tmp_path / "x.parquet").shape == (60, 1 + 1 + 1 + 5)  # id, group, mos, features
    assert main(["import", "--features", str(tmp_path / "nope.mat"), "--labels", str(tmp_path / "both.csv"),
                 "--label-columns", "mos", "--name", "x", "--manifest-out", str(tmp_path / "x.csv"),
                 "--bank", bank]) == 1
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------- column and item selection
def text_table(tmp_path: Path) -> Path:
    """THQA-like: an id, a text column, numeric meta columns and features, labels in the same file."""
    path = tmp_path / "mixed.csv"
    pd.DataFrame({"Image": IDS, "frame": ["0.png", "1.png", "x", "3.png"], **dict(zip(NAMES, X.T)),
                  "meta_w": [1, 2, 3, 4], "meta_h": [5, 6, 7, 8], "Score": [1.0, 2.0, 3.0, 4.0]}
                 ).to_csv(path, index=False)
    return path


def test_feature_and_exclude_columns_pick_features_by_name_or_glob(tmp_path):
    path = text_table(tmp_path)
    with pytest.raises(FeatbankError, match=r"non-numeric column.s. Image .e.g. 'v0' on line 2., frame .e.g. "
                                            r"'0.png' on line 2.: leave text columns out with --exclude-columns"):
        read_feature_matrix(path)
    got, names, ids = read_feature_matrix(path, id_column="Image", exclude_columns=["frame", "meta_*", "Score"])
    assert names == NAMES and ids == IDS
    np.testing.assert_array_equal(got, X)
    got, names, _ = read_feature_matrix(path, id_column="Image", feature_columns=["colour", "s*"])
    assert names == ["sharp", "colour"]  # file order, whatever the order of the patterns
    np.testing.assert_array_equal(got, X[:, [0, 2]])
    with pytest.raises(FeatbankError, match=r"no feature column matches 'sharpness' \(close: sharp\)"):
        read_feature_matrix(path, id_column="Image", feature_columns=["sharpness"])
    with pytest.raises(FeatbankError, match=r"--exclude-columns 'fram' matches no column \(close: frame\)"):
        read_feature_matrix(path, id_column="Image", exclude_columns=["fram"])
    with pytest.raises(FeatbankError, match=r"non-numeric column.s. frame .e.g. '0.png' on line 2.: every picked "
                                            r"feature column must be numeric"):
        read_feature_matrix(path, id_column="Image", feature_columns=["frame", "sharp"])
    with pytest.raises(FeatbankError, match="column 'Image' is the id column .--id-column., not a feature"):
        read_feature_matrix(path, id_column="Image", feature_columns=["Image"])
    with pytest.raises(FeatbankError, match="no feature column left"):
        read_feature_matrix(path, id_column="Image", feature_columns=["sharp"], exclude_columns=["s*"])
    np.save(tmp_path / "f.npy", X)  # unnamed columns are f0, f1, ...
    got, names, _ = read_feature_matrix(tmp_path / "f.npy", feature_columns=["f0", "f2"])
    assert names == ["f0", "f2"]
    np.testing.assert_array_equal(got, X[:, [0, 2]])
    # in one file with the labels, the label column is never a feature, and each pick is its own group
    full = import_features(tmp_path / "b.zarr", tmp_path / "m.csv", path, path, "thqa", id_column="Image",
                           label_columns=["Score"], exclude_columns=["frame", "meta_*"])
    picked = import_features(tmp_path / "b.zarr", tmp_path / "m.csv", path, path, "thqa", id_column="Image",
                             label_columns=["Score"], feature_columns=["sharp", "colour"])
    assert (full.n_features, picked.n_features) == (3, 2) and full.key != picked.key
    table = pd.read_csv(tmp_path / "m.csv")  # columns that are no feature are kept as information
    assert table.columns.tolist() == ["video_id", "path", "Score", "meta_frame", "meta_noise", "meta_w", "meta_h"]
    with pytest.raises(FeatbankError, match="column 'Score' is a label or group column, not a feature"):
        import_features(tmp_path / "b.zarr", tmp_path / "m.csv", path, path, "thqa", id_column="Image",
                        label_columns=["Score"], feature_columns=["sharp", "Score"])


THQA_IDS = ["1_voice_en_35042678_ahead", "1_voice_en_35042678_dinet", "2_voice_en_35042678_ahead",
            "2_voice_en_35087734_sad"]


def test_group_from_id_takes_the_first_capture_group(tmp_path):
    np.save(tmp_path / "f.npy", X)
    labels = labels_csv(tmp_path, ids=THQA_IDS)
    args = (tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.npy", labels, "deep")
    report = import_features(*args, id_column="vid", group_from_id=r"^(\d+)_")
    assert load_manifest(tmp_path / "m.csv").groups.tolist() == ["1", "1", "2", "2"] and report.groups == 2
    assert "groups: 2" in report.text
    import_features(*args, id_column="vid", group_from_id=r"^(.+)_[a-z]+$")  # source = portrait + speech
    assert load_manifest(tmp_path / "m.csv").groups.nunique() == 3
    with pytest.raises(FeatbankError, match=r"does not match .or captures nothing in. 2 of 4 ids, e.g. "
                                            r"2_voice_en_35042678_ahead, 2_voice_en_35087734_sad"):
        import_features(*args, id_column="vid", group_from_id=r"^(1)_")
    with pytest.raises(FeatbankError, match="has no capture group: put the group part of the id in parentheses"):
        import_features(*args, id_column="vid", group_from_id=r"^\d+_")
    with pytest.raises(FeatbankError, match="is not a valid regular expression"):
        import_features(*args, id_column="vid", group_from_id=r"^(\d+_")
    with pytest.raises(FeatbankError, match="needs item ids: name the id column with --id-column"):
        import_features(*args, group_from_id=r"^(\d+)_")
    with pytest.raises(FeatbankError, match="--group-column.*or from the id .--group-from-id., not both"):
        import_features(*args, id_column="vid", group_column="vid", group_from_id=r"^(\d+)_")


def published_like(tmp_path: Path, subset) -> tuple[Path, list[str]]:
    """A synthetic label file of ``subset.total`` items whose listed rows hold the listed ids."""
    ids = [f"other-{i:04d}" for i in range(subset.total)]
    for row, vid in zip(subset.drop_rows, subset.drop_ids):
        ids[row - 1] = vid
    path = tmp_path / "published.csv"
    pd.DataFrame({"vid": ids, "MOSFull": np.linspace(1.0, 5.0, subset.total)}).to_csv(path, index=False)
    return path, ids


def test_published_subset_drops_the_listed_items_by_id_or_by_row(tmp_path):
    assert "youtube_ugc_color" in available_subsets()
    subset = load_subset("youtube_ugc_color")
    assert (subset.total, subset.count, len(subset.drop_ids)) == (1380, 1323, 57)
    labels, ids = published_like(tmp_path, subset)
    feats = np.random.default_rng(0).normal(size=(subset.total, 3))
    np.save(tmp_path / "f.npy", feats)
    kept = [v for v in ids if not v.startswith("other-")] == list(subset.drop_ids)  # listed rows hold listed ids
    assert kept
    common = dict(label_columns=["MOSFull"], subset="youtube_ugc_color")
    by_id = import_features(tmp_path / "b.zarr", tmp_path / "id.csv", tmp_path / "f.npy", labels, "deep",
                            id_column="vid", **common)
    assert by_id.items == 1323 and "subset youtube_ugc_color: 57 items left out" in by_id.text
    manifest = load_manifest(tmp_path / "id.csv")
    assert set(manifest.video_ids) == set(ids) - set(subset.drop_ids)
    fb = load_blocks(FeatureBank(tmp_path / "b.zarr", mode="r"), manifest, ["deep"])
    keep = ~np.isin(ids, subset.drop_ids)
    np.testing.assert_array_equal(fb.blocks[by_id.key], feats[keep].astype(np.float32))
    np.testing.assert_array_equal(manifest.labels(["MOSFull"])["MOSFull"], np.linspace(1.0, 5.0, 1380)[keep])
    # without ids the published 1-based rows apply: the same items, named by their row number
    pd.read_csv(labels)[["MOSFull"]].to_csv(tmp_path / "mos_only.csv", index=False)
    by_row = import_features(tmp_path / "b.zarr", tmp_path / "row.csv", tmp_path / "f.npy",
                             tmp_path / "mos_only.csv", "deep", **common)
    rows = load_manifest(tmp_path / "row.csv").video_ids
    assert by_row.items == 1323 and rows == [str(i) for i in np.flatnonzero(keep)]
    np.save(tmp_path / "short.npy", feats[:100])
    with pytest.raises(FeatbankError, match="lists rows of the 1380 items of YouTube-UGC.*this import has 100 items"):
        import_features(tmp_path / "b.zarr", tmp_path / "x.csv", tmp_path / "short.npy", None, "deep",
                        subset="youtube_ugc_color")
    with pytest.raises(FeatbankError, match=r"57 of its 57 ids are not among the imported items \(e.g. "
                                            r"Animation_1080P-0c4f.*its 'vid' column"):
        import_features(tmp_path / "b.zarr", tmp_path / "x.csv", files_csv(tmp_path), labels_csv(tmp_path),
                        "hc", id_column="name", label_id_column="vid", subset="youtube_ugc_color")
    with pytest.raises(FeatbankError, match="unknown subset 'ugc'; subsets: .*youtube_ugc_color"):
        import_features(tmp_path / "b.zarr", tmp_path / "x.csv", tmp_path / "f.npy", labels, "deep",
                        id_column="vid", subset="ugc", label_columns=["MOSFull"])


def files_csv(tmp_path: Path) -> Path:
    pd.DataFrame(X, columns=NAMES).assign(name=IDS).to_csv(tmp_path / "f.csv", index=False)
    return tmp_path / "f.csv"


def test_an_inconsistent_subset_file_is_refused(tmp_path, monkeypatch):
    text = (resources.files("manifests") / "subsets" / "youtube_ugc_color.toml").read_text()
    text = text.replace("count = 1323", "count = 1322")
    (tmp_path / "bad.toml").write_text(text)
    monkeypatch.setattr(featbank.io.subsets, "_subset_files", lambda: {"bad": tmp_path / "bad.toml"})
    with pytest.raises(FeatbankError, match="subset file bad.toml is inconsistent: total - count = 58, 57 drop_rows"):
        load_subset("bad")


def test_keep_and_drop_id_lists(tmp_path):
    csv = files_csv(tmp_path)
    args = (tmp_path / "b.zarr", tmp_path / "m.csv", csv, labels_csv(tmp_path), "hc")
    ids = dict(id_column="name", label_id_column="vid")
    (tmp_path / "keep.txt").write_text("# the test list\nv3\n\nv1\n")
    report = import_features(*args, **ids, keep_ids=tmp_path / "keep.txt")
    assert load_manifest(tmp_path / "m.csv").video_ids == ["v1", "v3"]  # the items' order, not the list's
    assert f"--keep-ids {tmp_path / 'keep.txt'}: 2 items left out" in report.text
    pd.DataFrame({"Video": ["v0"], "other": [1]}).to_csv(tmp_path / "drop.csv", index=False)  # first column
    import_features(*args, **ids, keep_ids=tmp_path / "keep.txt", drop_ids=tmp_path / "drop.csv")
    import_features(*args, **ids, drop_ids=tmp_path / "drop.csv")
    assert load_manifest(tmp_path / "m.csv").video_ids == ["v1", "v2", "v3"]
    (tmp_path / "typo.txt").write_text("v1\nv03\nv9\n")
    with pytest.raises(FeatbankError, match=r"--keep-ids .*typo.txt: 2 of its ids are not among the 4 items "
                                            r"\(e.g. v03, v9\); items close to 'v03': v3, v0"):
        import_features(*args, **ids, keep_ids=tmp_path / "typo.txt")
    with pytest.raises(FeatbankError, match="--drop-ids needs item ids"):
        import_features(tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.csv", None, "hc",
                        exclude_columns=["name"], drop_ids=tmp_path / "drop.csv")
    (tmp_path / "all.txt").write_text("\n".join(IDS))
    with pytest.raises(FeatbankError, match="no item is left after --drop-ids"):
        import_features(*args, **ids, drop_ids=tmp_path / "all.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(FeatbankError, match="id list .*empty.txt holds no ids"):
        import_features(*args, **ids, drop_ids=tmp_path / "empty.txt")
    with pytest.raises(FeatbankError, match="id list .*nope.txt does not exist"):
        import_features(*args, **ids, keep_ids=tmp_path / "nope.txt")


def test_imports_without_labels_serve_predict_and_fit_refuses_them(tmp_path, capsys):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 3))
    ids = [f"c{i:02d}" for i in range(40)]
    pd.DataFrame(feats, columns=NAMES).assign(id=ids, mos=feats @ [1.0, -1.0, 0.5]).to_csv(tmp_path / "all.csv",
                                                                                         index=False)
    bank = str(tmp_path / "b.zarr")
    common = ["--features", str(tmp_path / "all.csv"), "--id-column", "id", "--exclude-columns", "mos",
              "--name", "hc", "--dataset", "toy", "--bank", bank]
    (tmp_path / "train.txt").write_text("\n".join(ids[:30]))
    (tmp_path / "test.txt").write_text("\n".join(ids[30:]))
    assert main(["import", *common, "--labels", str(tmp_path / "all.csv"), "--label-columns", "mos",
                 "--keep-ids", str(tmp_path / "train.txt"), "--manifest-out", str(tmp_path / "train.csv")]) == 0
    # the test list: no --labels; the feature file's ids define the items
    assert main(["import", *common, "--keep-ids", str(tmp_path / "test.txt"),
                 "--manifest-out", str(tmp_path / "test.csv")]) == 0
    assert "no labels: the items serve predict and export" in capsys.readouterr().out
    test = load_manifest(tmp_path / "test.csv")
    assert test.label_columns == [] and test.video_ids == ids[30:]
    assert pd.read_csv(tmp_path / "test.csv").columns.tolist() == ["video_id", "path"]
    assert main(["check", "--manifest", str(tmp_path / "test.csv"), "--track", "thqa"]) == 0  # a test list
    assert main(["fit", "--manifest", str(tmp_path / "test.csv"), "--features", "hc", "--bank", bank,
                 "--out", str(tmp_path / "nofit"), *FIT]) == 2
    assert "has no label columns to fit" in capsys.readouterr().err
    assert main(["fit", "--manifest", str(tmp_path / "train.csv"), "--features", "hc", "--bank", bank,
                 "--out", str(tmp_path / "fit"), *FIT]) == 0
    assert main(["predict", "--manifest", str(tmp_path / "test.csv"), "--model", str(tmp_path / "fit" / "model"),
                 "--out", str(tmp_path / "sub.csv"), "--bank", bank, "--no-progress"]) == 0
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert sub["video_id"].tolist() == ids[30:] and sub["mos"].notna().all()


def test_an_id_list_without_numeric_columns_gives_unlabelled_items(tmp_path):
    np.save(tmp_path / "f.npy", X)
    pd.DataFrame({"Video": [f"{v}.mp4" for v in IDS]}).to_csv(tmp_path / "testlist.csv", index=False)
    report = import_features(tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.npy", tmp_path / "testlist.csv",
                             "deep", id_column="Video")  # rows matched by order: the .npy has no ids
    assert report.label_columns == [] and load_manifest(tmp_path / "m.csv").video_ids == [f"{v}.mp4" for v in IDS]
    report = import_features(tmp_path / "b.zarr", tmp_path / "rows.csv", tmp_path / "f.npy", None, "deep")
    assert load_manifest(tmp_path / "rows.csv").video_ids == ["0", "1", "2", "3"]  # nothing names the rows
    assert FeatureBank(tmp_path / "b.zarr", mode="r").count == 8  # datasets testlist and f: other items
    with pytest.raises(FeatbankError, match="--label-columns, --label-id-column and --group-column name columns "
                                            "of the label file: give it with --labels"):
        import_features(tmp_path / "b.zarr", tmp_path / "m.csv", tmp_path / "f.npy", None, "deep",
                        label_columns=["mos"])
    path = text_table(tmp_path)
    with pytest.raises(FeatbankError, match="every numeric column but the labels is a feature; without labels, "
                                            "leave out --labels"):
        import_features(tmp_path / "b.zarr", tmp_path / "m.csv", path, path, "thqa", id_column="Image",
                        exclude_columns=["frame"])


def test_import_help_lists_the_published_subsets_and_teaches_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["import", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "youtube_ugc_color: 1323 of 1380 items" in out
    assert "--subset youtube_ugc_color" in out and "--group-from-id '^(\\d+)_'" in out


# ------------------------------------------------------------------------------- real data
VIDEVAL = [  # (dataset, label column, id column, rows, label range per SOURCES.md A1)
    ("KONVID_1K", "mos", "flickr_id", 1200, (1.0, 5.0)),
    ("LIVE_VQC", "MOS", "File", 585, (0.0, 100.0)),
    ("YOUTUBE_UGC", "MOSFull", "vid", 1380, (1.0, 5.0)),
]


@pytest.mark.realdata
def test_realdata_published_feature_sets_import(realdata, tmp_path):
    bank = tmp_path / "b.zarr"
    features = realdata / "vztu+VIDEVAL" / "features"
    nan_counts = {}
    for ds, label, id_col, n, (lo, hi) in VIDEVAL:
        r = import_features(bank, tmp_path / f"{ds}.csv", features / f"{ds}_VIDEVAL_feats.mat",
                            features / f"{ds}_metadata.csv", "videval", dataset=ds.lower(),
                            label_columns=[label], id_column=id_col)
        m = load_manifest(tmp_path / f"{ds}.csv")
        assert (r.items, r.n_features, len(m.video_ids)) == (n, 60, n)
        y = m.labels([label])[label]
        assert lo <= y.min() and y.max() <= hi
        nan_counts[ds] = (r.nan_values, r.rows_with_nan, len(r.failed))
    # the files' NaN gaps (SOURCES.md: "some entries are NaN/Inf; the authors set them to 0")
    assert nan_counts == {"KONVID_1K": (2, 2, 0), "LIVE_VQC": (1, 1, 0), "YOUTUBE_UGC": (579, 221, 1)}
    r = import_features(bank, tmp_path / "KONVID_1K.csv",
                        realdata / "vztu+BVQA_Benchmark" / "data" / "KONVID_1K_BRISQUE_feats.mat",
                        features / "KONVID_1K_metadata.csv", "brisque", dataset="konvid_1k",
                        label_columns=["mos"], id_column="flickr_id")
    assert (r.items, r.n_features, r.nan_values) == (1200, 36, 0)
    fbank = FeatureBank(bank, mode="r")
    fb = load_blocks(fbank, load_manifest(tmp_path / "KONVID_1K.csv"), ["videval", "brisque"])
    assert [b.shape for b in fb.blocks.values()] == [(1200, 60), (1200, 36)] and fb.usable.all()
    assert fbank.count == 1200 + 585 + 1380  # BRISQUE shares KoNViD's items
    thqa = realdata / "zyj-2000+THQA" / "vvmf_results_a01.csv"
    r = import_features(bank, tmp_path / "thqa.csv", thqa, thqa, "thqa_vvmf", label_columns=["Score"],
                        id_column="Image")
    assert (r.items, r.n_features, r.nan_values) == (800, 24, 0)
    names = FeatureBank(bank, mode="r").group(r.key).attrs["feature_names"]
    assert names[0] == "brisque" and names[-1] == "confi" and "Score" not in names
    score = load_manifest(tmp_path / "thqa.csv").labels(["Score"])["Score"]
    assert (score.min(), score.max()) == (0.1, 5.0)
    assert FeatureBank(bank, mode="r").validate() == []


@pytest.mark.realdata
def test_realdata_colour_subset_thqa_groups_and_picked_columns(realdata, tmp_path):
    from benchmarks import reference_data

    features = realdata / "vztu+VIDEVAL" / "features"
    subset = load_subset("youtube_ugc_color")
    metadata = pd.read_csv(features / "YOUTUBE_UGC_metadata.csv")
    assert metadata["vid"].iloc[np.array(subset.drop_rows) - 1].tolist() == list(subset.drop_ids)
    r = import_features(tmp_path / "b.zarr", tmp_path / "ugc.csv", features / "YOUTUBE_UGC_VIDEVAL_feats.mat",
                        features / "YOUTUBE_UGC_metadata.csv", "videval", dataset="youtube_ugc",
                        label_columns=["MOSFull"], id_column="vid", subset="youtube_ugc_color")
    assert r.items == 1323 and r.n_features == 60
    # the benchmarks' reference loader reads the same shipped subset: the same rows and MOS
    X, y = reference_data.load(features, "YOUTUBE_UGC")
    manifest = load_manifest(tmp_path / "ugc.csv")
    np.testing.assert_array_equal(manifest.labels(["MOSFull"])["MOSFull"], y)
    fb = load_blocks(FeatureBank(tmp_path / "b.zarr", mode="r"), manifest, ["videval"])
    np.testing.assert_array_equal(fb.blocks[r.key], X[fb.usable].astype(np.float32))
    thqa = realdata / "zyj-2000+THQA" / "vvmf_results_a01.csv"  # 20 portraits x 5 speeches x 8 generators
    r = import_features(tmp_path / "b.zarr", tmp_path / "thqa.csv", thqa, thqa, "thqa_iqa", id_column="Image",
                        label_columns=["Score"], feature_columns=["musiq-*", "clipiqa*"], group_from_id=r"^(\d+)_")
    assert r.n_features == 5 and r.groups == 20
    assert load_manifest(tmp_path / "thqa.csv").groups.value_counts().eq(40).all()
    names = FeatureBank(tmp_path / "b.zarr", mode="r").group(r.key).attrs["feature_names"]
    assert names == ["musiq-ava", "musiq-koniq", "musiq-spaq", "clipiqa", "clipiqa+"]
