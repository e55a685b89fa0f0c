"""Handcrafted + audio extraction over real videos from ../shared/realdata, through the manifest.

Four files cover the cases real datasets throw at the pipeline: a 960x540 clip with a stereo
44.1 kHz track, a 406x720 portrait clip with no audio stream, a 192x144 10-fps clip, and a 0-byte
file. They are symlinked into a temporary manifest directory (manifest paths may not escape the
manifest root) and extracted once per module; every test reads that one bank.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pandas as pd
import pytest

import extractors
from featbank import cli
from featbank.bank.store import ABSENT, FAILED, OK, FeatureBank
from featbank.bank.hashing import file_digest
from featbank.extraction.orchestrate import extract_manifest

pytestmark = pytest.mark.realdata

# video_id -> (path under realdata, has an audio stream)
FILES = {
    "fastvqa_10053703034": ("VQAssessment+FAST-VQA-and-FasterVQA/demos/10053703034.mp4", True),
    "dover_1724": ("VQAssessment+DOVER/demo/1724.mp4", False),
    "dover_FEQ": ("VQAssessment+DOVER/demo/FEQ-gdkTN4Q_000008_000018.mp4", True),
    "dover_error_test": ("VQAssessment+DOVER/demo/error_test.mp4", False),
}
EMPTY = "dover_error_test"
GOOD = [v for v in FILES if v != EMPTY]
SPECS = ["handcrafted", "audio"]


@pytest.fixture(scope="module")
def run(realdata: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("realdata_manifest")
    rows = []
    for vid, (rel, _) in FILES.items():
        link = root / f"{vid}.mp4"
        link.symlink_to(realdata / rel)
        rows.append({"video_id": vid, "path": link.name})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    bank_path = root / "bank.zarr"
    report = extract_manifest(manifest, bank_path, SPECS, progress=False)
    bank = FeatureBank(bank_path, mode="r")
    links = {vid: root / f"{vid}.mp4" for vid in FILES}
    row = dict(zip(FILES, bank.rows_of([file_digest(links[v]) for v in FILES]).tolist()))
    hand, audio = (extractors.create(s).key for s in SPECS)
    return SimpleNamespace(manifest=manifest, bank_path=bank_path, report=report, bank=bank,
                           links=links, row=row, hand=hand, audio=audio)


def container_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def test_run_completes_with_one_row_per_file_and_expected_statuses(run):
    assert run.report.items == len(FILES) and run.report.already_done == 0
    assert run.report.counts[run.hand] == {"pending": 0, "ok": 3, "failed": 1, "absent": 0}
    assert run.report.counts[run.audio] == {"pending": 0, "ok": 2, "failed": 1, "absent": 1}
    assert run.bank.count == len(FILES) and min(run.row.values()) >= 0
    assert run.bank.validate() == []


@pytest.mark.parametrize("vid", GOOD)
def test_good_video_has_finite_handcrafted_features_for_each_second(run, vid):
    group, r = run.bank.group(run.hand), run.row[vid]
    assert run.bank.status(run.hand)[r] == OK
    assert np.isfinite(group["pooled"][r]).all()
    n_frames, fps = int(run.bank.items["n_frames"][r]), float(run.bank.items["fps"][r])
    n_steps = int(group["mask"][r].sum())
    assert n_steps == round(n_frames / fps)
    assert abs(n_steps - container_duration(run.links[vid])) <= 1  # the container's own clock
    steps = group["steps"][r][:n_steps]
    assert np.isfinite(steps).all() and np.isnan(group["steps"][r][n_steps:]).all()
    np.testing.assert_array_equal(group["timestamps"][r][:n_steps], np.arange(n_steps))
    frames = group["frame_indices"][r][:n_steps]
    assert (np.diff(frames, axis=1) == 1).all()  # 8 adjacent frames...
    np.testing.assert_array_equal(frames[:, 0], np.floor(np.arange(n_steps) * fps + 1e-6))  # ...from each second
    assert frames.max() < n_frames


@pytest.mark.parametrize("vid", GOOD)
def test_good_video_handcrafted_values_lie_in_their_physical_ranges(run, vid):
    group, r = run.bank.group(run.hand), run.row[vid]
    names = group.attrs["feature_names"]
    n_steps = int(group["mask"][r].sum())
    values = dict(zip(names, group["steps"][r][:n_steps].T))
    for fraction in ("brightness_mean", "contrast_rms", "saturation_mean", "duplicate_frame_fraction"):
        assert ((values[fraction] >= 0) & (values[fraction] <= 1)).all(), fraction
    for nonneg in ("sharpness_laplacian_var", "noise_sigma_immerkaer", "colorfulness_hasler", "si",
                   "ti_mean", "frame_diff_mean_abs", "blockiness_h", "blockiness_v"):
        assert (values[nonneg] >= 0).all(), nonneg
    assert (values["ti_max"] >= values["ti_mean"]).all()
    assert (values["frame_diff_mean_abs_max"] >= values["frame_diff_mean_abs"]).all()
    assert (values["mscn_ggd_shape"] >= 0.2).all() and (values["mscn_ggd_shape"] < 10).all()
    assert values["si"].mean() > 0  # real footage has edges


def test_video_without_audio_stream_is_absent_for_audio_but_ok_for_handcrafted(run):
    r = run.row["dover_1724"]
    assert run.bank.items["has_audio"][r] == 0
    assert run.bank.status(run.hand)[r] == OK
    assert run.bank.status(run.audio)[r] == ABSENT
    group = run.bank.group(run.audio)
    assert not group["mask"][r].any() and np.isnan(group["pooled"][r]).all()
    assert all(rec["video_id"] != "dover_1724" for rec in run.bank.failures(run.audio).values())


@pytest.mark.parametrize("vid", [v for v in GOOD if FILES[v][1]])
def test_video_with_sound_has_finite_audio_on_the_same_seconds(run, vid):
    r = run.row[vid]
    assert run.bank.items["has_audio"][r] == 1
    assert run.bank.status(run.audio)[r] == OK
    group = run.bank.group(run.audio)
    n_steps = int(group["mask"][r].sum())
    assert n_steps == int(run.bank.group(run.hand)["mask"][r].sum())
    steps = group["steps"][r][:n_steps]
    assert np.isfinite(steps).all() and np.isfinite(group["pooled"][r]).all()
    rms = steps[:, group.attrs["feature_names"].index("rms_db")]
    assert ((rms > -100) & (rms <= 0)).all()  # a real soundtrack: above the floor, below full scale


def test_empty_file_fails_both_extractors_with_a_recorded_message(run):
    r = run.row[EMPTY]
    assert run.bank.items["probe"][r] == FAILED and run.bank.items["size_bytes"][r] == 0
    for key in (run.hand, run.audio):
        assert run.bank.status(key)[r] == FAILED
        (record,) = run.bank.failures(key).values()
        assert record["video_id"] == EMPTY and "empty file" in record["error"]
    assert sorted((vid, key) for vid, key, _ in run.report.failures) == sorted(
        [(EMPTY, run.hand), (EMPTY, run.audio)])


def test_rerun_decodes_nothing_and_changes_nothing(run, monkeypatch):
    before = {key: run.bank.group(key)["pooled"][: run.bank.count] for key in (run.hand, run.audio)}

    def refuse(*args, **kwargs):
        raise AssertionError("a complete bank must not decode anything again")

    monkeypatch.setattr("featbank.extraction.orchestrate.extract_item", refuse)
    again = extract_manifest(run.manifest, run.bank_path, SPECS, progress=False)
    assert again.already_done == len(FILES) and again.failures == []
    assert again.counts == run.report.counts
    after = FeatureBank(run.bank_path, mode="r")
    for key, pooled in before.items():
        np.testing.assert_array_equal(after.group(key)["pooled"][: after.count], pooled)


def test_featbank_info_lists_the_groups_and_the_failure(run, capsys):
    assert cli.main(["info", "--bank", str(run.bank_path), "--failures"]) == 0
    out = capsys.readouterr().out
    assert f"{len(FILES)} items" in out
    assert f"{run.hand}: " in out and "3 ok, 1 failed, 0 absent" in out
    assert f"{run.audio}: " in out and "2 ok, 1 failed, 1 absent" in out
    assert out.count("FAILED [") == 2 and EMPTY in out
