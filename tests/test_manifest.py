from pathlib import Path

import pandas as pd
import pytest

from featbank.errors import ManifestError
from featbank.io.manifest import load_manifest


def write(tmp_path: Path, rows: list[dict], files=("a.mp4", "b.mp4", "c.mp4")) -> Path:
    for f in files:
        (tmp_path / f).write_bytes(b"x")
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_valid_manifest_exposes_labels_groups_and_paths(tmp_path):
    m = load_manifest(write(tmp_path, [
        {"video_id": "a", "path": "a.mp4", "group": 1, "overall": 3.5, "meta_note": "x"},
        {"video_id": "b", "path": "b.mp4", "group": 1, "overall": 2.0, "meta_note": None},
    ]))
    assert m.label_columns == ["overall"]
    assert m.groups.tolist() == ["1", "1"]
    assert m.media_paths()[1] == tmp_path / "b.mp4"
    assert m.labels(["overall"])["overall"].tolist() == [3.5, 2.0]
    with pytest.raises(ManifestError, match="no label column"):
        m.labels(["color"])


def test_every_problem_is_listed_in_one_error(tmp_path):
    path = write(tmp_path, [
        {"video_id": "a", "path": "a.mp4", "overall": 1.0},
        {"video_id": "a", "path": "missing.mp4", "overall": "bad"},
        {"video_id": "c", "path": "../outside.mp4", "overall": None},
        {"video_id": "d", "path": "/etc/passwd", "overall": 2.0},
    ])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert "duplicate video_id at line(s) 2, 3" in text
    assert "file not found at line(s) 3" in text
    assert "escapes the manifest root at line(s) 4, 5" in text
    assert "'overall' is non-numeric or NaN at line(s) 3, 4" in text


def test_missing_columns_and_unreadable_files(tmp_path):
    with pytest.raises(ManifestError, match="missing required column"):
        load_manifest(write(tmp_path, [{"id": "a", "file": "a.mp4"}]))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(bad)


def test_parquet_and_unlabelled_manifests(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    path = tmp_path / "m.parquet"
    pd.DataFrame({"video_id": ["a"], "path": ["a.mp4"]}).to_parquet(path)
    m = load_manifest(path)
    assert m.label_columns == [] and m.video_ids == ["a"]
