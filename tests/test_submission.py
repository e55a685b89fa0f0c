"""Submissions in each organiser's layout: written, read back through `featbank score`, bad ones refused."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from featbank.cli import main
from featbank.errors import SubmissionError
from featbank.io.submission import read_labels, read_pairs, read_submission, write_submission
from featbank.io.tracks import available, load_track
from featbank.learning.official import official_scores


def _labels_and_predictions(track_name: str, n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    track = load_track(track_name)
    rng = np.random.default_rng(7)
    low, high = track.range or (0.0, 100.0)
    ids = [f"{i:02d}_clip.mp4" for i in range(n)]
    labels = pd.DataFrame(np.round(rng.uniform(low, high, (n, len(track.labels))) * 2) / 2,
                          index=pd.Index(ids, name="video_id"), columns=list(track.labels))
    labels["group"] = [f"src{i // 4}" for i in range(n)]
    predictions = labels[list(track.labels)] + rng.normal(0, 0.3 * (high - low), (n, len(track.labels)))
    return labels, predictions


@pytest.mark.parametrize("name", available())
def test_each_layout_round_trips_through_featbank_score(name, tmp_path, capsys):
    track = load_track(name)
    labels, predictions = _labels_and_predictions(name)
    layout_is_zip = track.layout != "csv"
    path = write_submission(track, list(labels.index), predictions,
                            tmp_path / ("submission.zip" if layout_is_zip else "submission.csv"))
    assert zipfile.is_zipfile(path) == layout_is_zip
    labels.to_csv(tmp_path / "labels.csv")
    code = main(["score", "--track", name, "--labels", str(tmp_path / "labels.csv"),
                 "--predictions", str(path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    _, expected = official_scores(track, labels, predictions)
    assert report["score"] == track.score
    assert report["value"] == pytest.approx(expected, abs=1e-12)  # repr() floats read back exactly
    assert set(report["targets"]) == set(track.labels)


def test_output_txt_layout_is_the_organisers_baseline_byte_for_byte(realdata, tmp_path):
    baseline = realdata / "zyj-2000+THQA-NTIRE" / "baseline_example.zip"
    predictions = read_submission("thqa", baseline)
    path = write_submission("thqa", list(predictions.index), predictions, tmp_path / "again.zip")
    with zipfile.ZipFile(path) as ours, zipfile.ZipFile(baseline) as theirs:
        assert ours.namelist() == theirs.namelist() == ["output.txt"]
        assert ours.read("output.txt") == theirs.read("output.txt")  # no header, .mp4 names, \n, same digits


def test_featbank_score_reproduces_the_thqa_baseline(realdata, capsys):
    folder = realdata / "zyj-2000+THQA-NTIRE"
    assert main(["score", "--track", "thqa", "--labels", str(folder / "thqa_ntire_val.csv"),
                 "--predictions", str(folder / "baseline_example.zip")]) == 0
    assert capsys.readouterr().out.startswith("main_score_poly3 = 0.7892   (track thqa, 1714 items)")


def test_kvq_layout_has_the_columns_the_organisers_script_reads(tmp_path):
    labels, predictions = _labels_and_predictions("kvq", n=6)
    path = write_submission("kvq", list(labels.index), predictions, tmp_path / "kvq.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["prediction.csv"]
        text = archive.read("prediction.csv").decode()
    assert text.splitlines()[0] == "filename,score" and text.endswith("\n") and "\r" not in text
    assert list(pd.read_csv(path.parent / "kvq.zip", compression="zip").columns) == ["filename", "score"]


def test_finevd_lines_carry_six_values_in_label_order(tmp_path):
    labels, predictions = _labels_and_predictions("finevd", n=4)
    path = write_submission("finevd", list(labels.index), predictions, tmp_path / "finevd.zip")
    first = zipfile.ZipFile(path).read("output.txt").decode().splitlines()[0].split(",")
    assert first[0] == "00_clip.mp4" and len(first) == 7
    assert [float(v) for v in first[1:]] == list(predictions.iloc[0])


def test_a_submission_with_holes_is_not_written(tmp_path):
    labels, predictions = _labels_and_predictions("thqa", n=5)
    predictions.iloc[2, 0] = np.nan
    with pytest.raises(SubmissionError, match="no finite prediction for 2 item.*02_clip.mp4, extra.mp4"):
        write_submission("thqa", [*labels.index, "extra.mp4"], predictions, tmp_path / "s.zip")
    with pytest.raises(SubmissionError, match="more than once: 00_clip.mp4"):
        write_submission("thqa", ["00_clip.mp4", "00_clip.mp4"], predictions, tmp_path / "s.zip")
    with pytest.raises(SubmissionError, match="ending in .zip"):
        write_submission("thqa", list(labels.index[:2]), predictions, tmp_path / "s.txt")
    assert not (tmp_path / "s.zip").exists()


@pytest.mark.parametrize("text, message", [
    ("a.mp4,1.0\nb.mp4,2.0\na.mp4,3.0\n", "more than once: a.mp4"),
    ("a.mp4,1.0\nb.mp4,high\n", "not numbers for b.mp4"),
])
def test_bad_submission_files_are_refused(tmp_path, text, message):
    path = tmp_path / "output.txt"
    path.write_text(text)
    with pytest.raises(SubmissionError, match=message):
        read_submission("thqa", path)


def test_score_exits_2_on_bad_input(tmp_path, capsys):
    labels, predictions = _labels_and_predictions("thqa", n=8)
    labels.to_csv(tmp_path / "labels.csv")
    write_submission("thqa", list(labels.index[:-1]), predictions, tmp_path / "short.zip")
    with zipfile.ZipFile(tmp_path / "wrong.zip", "w") as archive:
        archive.writestr("answer.txt", "x.mp4,1\n")
    cases = [
        (["--track", "ntire2099"], "unknown track"),
        (["--predictions", str(tmp_path / "short.zip")], "miss 1 labelled item(s): 07_clip.mp4"),
        (["--predictions", str(tmp_path / "wrong.zip")], "holds answer.txt; layout output_txt_zip needs output.txt"),
    ]
    for override, message in cases:
        argv = {"--track": "thqa", "--labels": str(tmp_path / "labels.csv"),
                "--predictions": str(tmp_path / "short.zip")}
        argv.update(dict(zip(override[::2], override[1::2])))
        assert main(["score", *[part for item in argv.items() for part in item]]) == 2
        assert message in capsys.readouterr().err


def test_organiser_label_files_and_pair_files_are_read(tmp_path):
    (tmp_path / "val.csv").write_text("Video,Score\na.mp4,3.1\nb.mp4,0.8\n")
    labels = read_labels("thqa", tmp_path / "val.csv")
    assert list(labels.index) == ["a.mp4", "b.mp4"] and list(labels["mos"]) == [3.1, 0.8]
    (tmp_path / "pairs.csv").write_text("video1,video2,rank,kind\na,b,1,source\nc,d,2,non-homologous\n")
    pairs = read_pairs(tmp_path / "pairs.csv")
    assert pairs.to_dict("list") == {"first": ["a", "c"], "second": ["b", "d"], "first_better": [True, False],
                                     "homologous": [True, False]}
    (tmp_path / "bad.csv").write_text("video1,video2,rank,kind\na,b,3,source\n")
    with pytest.raises(SubmissionError, match="rank must be 1"):
        read_pairs(tmp_path / "bad.csv")
