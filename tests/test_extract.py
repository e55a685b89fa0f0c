"""Decode-once extraction over real (synthesized) files, bad inputs, resume."""

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from featbank.bank.store import ABSENT, FAILED, OK, FeatureBank
from featbank.extraction.decode import iter_steps, open_media
from featbank.errors import BankError, MediaError
from featbank.extraction.item import extract_item
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.sampling import Clips, KeyFrames

import extractors


def test_iter_steps_decodes_each_frame_once_and_serves_every_plan(make_video):
    src = open_media(make_video(n=45, fps=15))
    assert (src.info.n_frames, src.info.fps, src.info.has_audio) == (45, 15.0, True)
    plans = [KeyFrames().plan(src.info), Clips(frames=4).plan(src.info)]
    calls = []
    original = src.frames
    src.frames = lambda idx: (calls.append(idx.tolist()), original(idx))[1]
    got = {(p, s): f for p, s, f in iter_steps(src, plans, batch=4)}
    decoded = sum(calls, [])
    assert len(decoded) == len(set(decoded))  # no frame decoded twice
    assert set(decoded) == set(plans[0].frame_indices.ravel()) | set(plans[1].frame_indices.ravel())
    assert len(got) == 3 + 3 and got[(1, 2)].shape == (4, 48, 64, 3)
    np.testing.assert_array_equal(got[(0, 1)][0], original(np.array([15]))[0])


def test_extract_item_runs_all_extractors_and_isolates_failures(make_video):
    exs = [extractors.create(n) for n in ("test-mean", "test-clip", "test-boom")]
    record, out = extract_item(make_video(n=30), exs)
    assert record.info.n_frames == 30
    mean, clip, boom = (out[e.key] for e in exs)
    assert mean.status == OK and mean.steps.shape == (2, 3) and mean.pooled.shape == (6,)
    assert clip.status == OK and clip.frame_indices.shape == (2, 4)
    assert boom.status == FAILED and "kaboom" in boom.error


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_undecodable_files_fail_every_extractor_with_a_message(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError):
        open_media(path)
    record, out = extract_item(path, [extractors.create("test-mean")])
    assert record.info is None
    (res,) = out.values()
    assert res.status == FAILED and str(path) in res.error


def test_truncated_video_fails_or_extracts_but_never_crashes(make_video, tmp_path):
    good = make_video(n=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    record, out = extract_item(cut, [extractors.create("test-mean")])
    (res,) = out.values()
    assert res.status in (OK, FAILED)
    assert (res.status == FAILED) == (res.error is not None)


def write_manifest(tmp_path, files, labels=True):
    rows = [{"video_id": f.stem, "path": f.name, **({"overall": i % 5 + 1.0} if labels else {})}
            for i, f in enumerate(files)]
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_extract_manifest_resumes_and_shares_rows_across_tracks(make_video, tmp_path):
    files = [make_video(f"v{i}.mp4", n=20 + i, seed=i, audio=i % 2 == 0) for i in range(4)]
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    m1 = write_manifest(tmp_path, files + [tmp_path / "broken.mp4"])
    bank_path = tmp_path / "bank.zarr"
    report = extract_manifest(m1, bank_path, ["test-mean", "test-clip"], progress=False)
    assert report.already_done == 0 and report.n_failed == 2  # broken file, for both extractors
    key = extractors.create("test-mean").key
    assert report.counts[key] == {"pending": 0, "ok": 4, "failed": 1, "absent": 0}
    # a second track listing two of the same files under other names: nothing new to compute
    sub = tmp_path / "track2"
    sub.mkdir()
    for f in files[:2]:
        (sub / f"other_{f.name}").write_bytes(f.read_bytes())
    m2 = write_manifest(sub, sorted(sub.glob("*.mp4")))
    again = extract_manifest(m2, bank_path, ["test-mean"], progress=False)
    assert again.already_done == 2 and again.n_failed == 0
    bank = FeatureBank(bank_path, mode="r")
    assert bank.count == 5 and bank.validate() == []
    # re-running the first manifest computes nothing; --retry-failed retries only the failure
    assert extract_manifest(m1, bank_path, ["test-mean"], progress=False).already_done == 5
    retry = extract_manifest(m1, bank_path, ["test-mean"], retry_failed=True, progress=False)
    assert retry.already_done == 4 and retry.n_failed == 1


def test_killed_run_resumes_to_a_complete_bank(make_video, tmp_path):
    """SIGKILL a real extraction process mid-run, then resume: every row committed exactly once."""
    files = [make_video(f"v{i}.mp4", n=15, seed=i, audio=False) for i in range(70)]
    manifest = write_manifest(tmp_path, files)
    bank_path = tmp_path / "bank.zarr"
    script = (
        "import sys, time; sys.path.insert(0, 'tests'); import conftest\n"
        "from featbank.extraction.item import StepRunner\n"
        "orig = StepRunner.flush\n"
        "def slow(self):\n    time.sleep(0.03); orig(self)\n"
        "StepRunner.flush = slow\n"
        "from featbank.extraction.orchestrate import extract_manifest\n"
        f"extract_manifest({str(manifest)!r}, {str(bank_path)!r}, ['test-mean'], progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    key = extractors.create("test-mean").key
    done_before = 0
    while proc.poll() is None and done_before == 0:  # kill right after the first committed chunk
        time.sleep(0.05)
        try:  # the child may still be creating the bank
            done_before = int((FeatureBank(bank_path, mode="r").status(key) == OK).sum())
        except (BankError, KeyError, FileNotFoundError):
            continue
    proc.kill()
    proc.wait()
    partial = FeatureBank(bank_path, mode="r")
    assert partial.validate() == []
    done_before = int((partial.status(key) == OK).sum())
    assert 0 < done_before < 70, "the kill should land mid-run"
    report = extract_manifest(manifest, bank_path, ["test-mean"], progress=False)
    assert report.already_done == done_before
    bank = FeatureBank(bank_path, mode="r")
    assert bank.count == 70 and (bank.status(key) == OK).all() and bank.validate() == []
    X, _ = bank.pooled(key, np.arange(70))
    assert np.isfinite(X).all()


def test_video_without_audio_gets_a_flagged_absent_row_not_a_failure(make_video, tmp_path):
    files = [make_video("with.mp4", n=30, audio=True), make_video("without.mp4", n=30, audio=False, seed=1)]
    manifest = write_manifest(tmp_path, files)
    bank_path = tmp_path / "bank.zarr"
    report = extract_manifest(manifest, bank_path, ["audio", "test-mean"], progress=False)
    assert report.n_failed == 0
    bank = FeatureBank(bank_path, mode="r")
    audio_key, mean_key = extractors.create("audio").key, extractors.create("test-mean").key
    pooled, status = bank.pooled(audio_key, np.arange(2))
    assert status.tolist() == [OK, ABSENT]
    assert np.isfinite(pooled[0]).all() and np.isnan(pooled[1]).all()
    mask = bank.group(audio_key)["mask"][:2]
    assert mask[0].sum() == 2 and mask[0, :2].all()  # a 2-s video: two 1-s audio steps
    assert not mask[1].any()
    assert bank.items["has_audio"][:2].tolist() == [1, 0]
    assert (bank.status(mean_key, np.arange(2)) == OK).all()  # the picture is still extracted


def test_one_frame_video_extracts_every_video_extractor(make_video, tmp_path):
    one = make_video("one.mp4", n=1, audio=False)
    record, out = extract_item(one, [extractors.create(n) for n in ("handcrafted", "test-clip")])
    assert record.info.n_frames == 1
    hand = out[extractors.create("handcrafted").key]
    assert hand.status == OK and hand.steps.shape[0] == 1 and np.isfinite(hand.pooled).all()
    names = extractors.create("handcrafted").feature_names()
    assert hand.steps[0, names.index("duplicate_frame_fraction")] == 1.0  # one frame repeated
