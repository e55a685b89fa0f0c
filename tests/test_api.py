"""The Python API for notebooks: open a bank, list groups, features as pandas and xarray."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import extractors
import featbank
from featbank.bank.matrix import manifest_rows
from featbank.bank.store import FAILED, OK
from featbank.errors import BankError
from featbank.extraction.orchestrate import extract_manifest
from featbank.io.importing import import_features
from featbank.io.manifest import load_manifest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The python code block of the README's "Python API" section."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold exactly one python block"
    return blocks[0]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md#python-api", "exec"), namespace)
    frame, steps, outcome = namespace["frame"], namespace["steps"], namespace["outcome"]
    assert frame.shape == (60, 4) and list(frame.columns[1:]) == ["toy:sharpness", "toy:noise", "toy:contrast"]
    assert steps.dims == ("item", "time", "feature") and steps.sizes["item"] == 60
    assert np.allclose(steps.isel(time=0).to_numpy(), frame.iloc[:, 1:].to_numpy())
    assert outcome.report.is_file()


def test_frame_and_steps_of_an_extracted_bank(make_video, tmp_path):
    files = [make_video(f"v{i}.mp4", n=15 * (i + 1), seed=i, audio=False) for i in range(3)]
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 500)
    names = [f.name for f in files] + ["broken.mp4"]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"video_id": [Path(n).stem for n in names], "path": names,
                  "overall": [1.0, 2.0, 3.0, 4.0]}).to_csv(manifest, index=False)
    extract_manifest(manifest, tmp_path / "bank.zarr", ["test-mean"], progress=False)
    key = extractors.create("test-mean").key

    with featbank.open_bank(tmp_path / "bank.zarr") as bank:
        (info,) = bank.groups()
        assert (info.key, info.name, info.pooled_dim, info.counts["ok"], info.counts["failed"]) == \
            (key, "test-mean", 6, 3, 1)
        frame = featbank.feature_frame(bank, manifest, "test-mean")
        steps = featbank.step_array(bank, manifest, "test-mean")
        group = bank.group(key)
        rows = manifest_rows(bank, load_manifest(manifest))
        raw_steps, raw_mask = group["steps"][rows], group["mask"][rows]

    assert list(frame.index) == ["v0", "v1", "v2", "broken"]
    assert list(frame.columns) == ["overall", *(f"test-mean:{c}_{s}" for s in ("mean", "std") for c in "rgb")]
    assert frame.loc["broken"].iloc[1:].isna().all() and frame.iloc[:3, 1:].notna().all().all()
    assert steps.dims == ("item", "time", "feature") and list(steps["feature"].values) == ["r", "g", "b"]
    assert list(steps["video_id"].values) == list(frame.index)
    assert steps["status"].values.tolist() == [OK, OK, OK, FAILED]
    mask = steps["mask"].values
    assert (mask == raw_mask).all() and mask.sum(1)[:3].tolist() == sorted(mask.sum(1)[:3].tolist())
    assert mask.sum(1)[0] < mask.sum(1)[2]  # a shorter video has fewer valid steps
    assert np.isnan(steps.values[~mask]).all() and np.array_equal(steps.values[mask], raw_steps[mask])
    assert np.all(np.diff(steps["timestamp"].values[2][mask[2]]) > 0)
    # the pooled mean is the mean over the valid steps: the frame and the array agree
    assert np.allclose(frame.iloc[:3, 1:4].to_numpy(), steps.mean("time").values[:3], atol=1e-4)


def test_import_and_read_back_on_a_memory_store(tmp_path):
    table = pd.DataFrame({"video_id": ["a", "b", "c"], "f1": [1.0, 2.0, 3.0], "f2": [0.5, np.nan, 1.5],
                          "mos": [1.0, 2.0, 3.0]})
    table.to_csv(tmp_path / "t.csv", index=False)
    store = zarr.storage.MemoryStore()
    import_features(store, tmp_path / "m.csv", tmp_path / "t.csv", tmp_path / "t.csv", name="lab",
                    id_column="video_id", label_columns=["mos"])
    with featbank.open_bank(store) as bank:
        frame = featbank.feature_frame(bank, tmp_path / "m.csv", ["lab"])
    assert frame.index.tolist() == ["a", "b", "c"] and frame["mos"].tolist() == [1.0, 2.0, 3.0]
    assert np.array_equal(frame["lab:f2"].to_numpy(), np.array([0.5, np.nan, 1.5], np.float32), equal_nan=True)
    with pytest.raises(BankError, match="no feature bank"):
        featbank.open_bank(zarr.storage.MemoryStore())


def test_import_featbank_stays_light():
    code = ("import sys, featbank\n"
            "heavy = [m for m in ('featbank.api', 'zarr', 'pandas', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(featbank.open_bank) and 'featbank.api' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
