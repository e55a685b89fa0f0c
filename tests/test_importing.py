"""Importing feature sets computed elsewhere, and exporting banked features.

Every supported file type must give the same matrix; rows are aligned with labels by id or by
order (and misalignment is an error, never a silent shift); imported items are virtual (no
media) yet flow through manifest → bank → fit unchanged; export round-trips the values.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io

import extractors
from featbank.bank.store import FAILED, OK, FeatureBank
from featbank.cli import main
from featbank.errors import BankError, FeatbankError, ManifestError
from featbank.io.exporting import export_features
from featbank.extraction.item import extract_item
from featbank.bank.matrix import load_blocks, resolve_key
from featbank.bank.hashing import digest_paths, file_digest, virtual_digest
from featbank.io.importing import import_features, read_feature_matrix
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
