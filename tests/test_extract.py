"""Decode-once extraction over real (synthesized) files, bad inputs, resume."""

import copy
import subprocess
import sys
import time

import av
import numpy as np
import pandas as pd
import pytest
from conftest import moving_frames

import extractors
from featbank.bank.store import ABSENT, FAILED, OK, FeatureBank
from featbank.errors import BankError, MediaError
from featbank.extraction.decode import BufferPool, VideoFile, iter_steps, open_media
from featbank.extraction.item import extract_item
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.pixels import BT601, Pixels, StepPixels
from featbank.extraction.sampling import Clips, KeyFrames


def test_iter_steps_decodes_each_frame_once_and_serves_every_plan(make_video):
    src = open_media(make_video(n=45, fps=15))
    assert (src.info.n_frames, src.info.fps, src.info.has_audio) == (45, 15.0, True)
    plans = [KeyFrames().plan(src.info), Clips(frames=4).plan(src.info)]
    decoded = []
    original = src.decode

    def counting(indices, batch, luma):
        for index, picture in original(indices, batch, luma):
            decoded.append(index)
            yield index, picture

    src.decode = counting
    got = {(p, s): f for p, s, f in iter_steps(src, plans, batch=4)}
    assert len(decoded) == len(set(decoded))  # no frame decoded twice
    assert set(decoded) == set(plans[0].frame_indices.ravel()) | set(plans[1].frame_indices.ravel())
    assert len(got) == 3 + 3 and got[(1, 2)].shape == (4, 48, 64, 3)
    np.testing.assert_array_equal(got[(0, 1)][0], src.frames(np.array([15]))[0])


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


# --- Readers, pixel requests and reused buffers ---------------------------------------------------


def encode_with_gop(path, frames, fps: int, gop: int):
    """H.264 with a key frame every ``gop`` frames (and none in between: no scene-cut key frames)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": str(gop), "crf": "18", "sc_threshold": "0"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize(("gop", "reader"), [(30, "decord"), (300, "pyav")])
def test_sparse_plans_seek_only_where_key_frames_make_it_cheaper(tmp_path, gop, reader):
    source = open_media(encode_with_gop(tmp_path / "v.mp4", moving_frames(90, 48, 64), 30, gop))
    assert isinstance(source, VideoFile) and source.decoder == "decord"
    key_frames = KeyFrames().plan(source.info).frame_indices.ravel()  # 0, 30, 60
    assert source.choose_reader(key_frames) == reader
    assert source.seek_cost(key_frames) == (3 if gop == 30 else 61)
    dense = Clips(frames=8, consecutive=True).plan(source.info).frame_indices.ravel()
    assert source.choose_reader(np.unique(dense)) == ("decord" if gop == 30 else "pyav")
    assert source.choose_reader(key_frames, luma=True) == "pyav"  # the Y' plane is PyAV's alone


def test_both_readers_serve_the_same_frames(tmp_path, monkeypatch):
    source = open_media(encode_with_gop(tmp_path / "v.mp4", moving_frames(40, 48, 64), 30, 10))
    wanted = np.array([0, 3, 17, 39])
    got = {}
    for reader in ("pyav", "decord"):
        monkeypatch.setattr(source, "choose_reader", lambda indices, luma, r=reader: r)
        got[reader] = np.stack([picture.rgb for _, picture in source.decode(wanted)])
    assert got["pyav"].shape == (4, 48, 64, 3)
    assert np.abs(got["pyav"].astype(int) - got["decord"]).max() <= 2


def test_luma_comes_from_the_y_plane_and_rgb_only_for_the_frames_asked(make_video):
    src = open_media(make_video(n=30, fps=15, audio=False))
    plan = Clips(frames=4, consecutive=True).plan(src.info)
    steps = list(iter_steps(src, [plan], [Pixels(rgb="first", luma=True)]))
    assert len(steps) == 2
    _, s, step = steps[1]
    assert isinstance(step, StepPixels) and step.rgb.shape == (1, 48, 64, 3)
    rgb = src.frames(plan.frame_indices[s])
    np.testing.assert_array_equal(step.rgb[0], rgb[0])
    luma = step.luma
    assert luma.codes.dtype == np.uint8 and luma.codes.shape == (4, 48, 64)
    assert (luma.codes >= 16).all() and (luma.codes <= 235).all()  # clipped to limited range
    assert luma.scale == pytest.approx(255 / 219) and luma.offset == pytest.approx(-16 * 255 / 219)
    from_rgb = rgb @ BT601
    assert np.abs(luma.values() - from_rgb).mean() < 2.0  # the same picture, without RGB's rounding


def test_reused_buffers_give_the_same_steps_as_fresh_ones(make_video):
    src = open_media(make_video(n=45, fps=15, audio=False))
    plans = [Clips(frames=4, consecutive=True).plan(src.info), KeyFrames().plan(src.info)]
    requests = [Pixels(rgb="first", luma=True), Pixels()]
    fresh = [(p, s, copy.deepcopy(step)) for p, s, step in iter_steps(src, plans, requests)]
    pool = BufferPool()
    pooled, buffers = [], set()
    for p, s, step in iter_steps(src, plans, requests, pool=pool):
        pooled.append((p, s, copy.deepcopy(step)))
        buffers.add(id(step.luma.codes) if p == 0 else id(step))
    assert [(p, s) for p, s, _ in pooled] == [(p, s) for p, s, _ in fresh]
    for (_, _, a), (_, _, b) in zip(fresh, pooled):
        if isinstance(a, StepPixels):
            np.testing.assert_array_equal(a.rgb, b.rgb)
            np.testing.assert_array_equal(a.luma.codes, b.luma.codes)
        else:
            np.testing.assert_array_equal(a, b)
    assert len(buffers) == 2  # one luma buffer and one RGB buffer served all 6 steps


def test_batched_extractor_gets_the_steps_it_would_get_without_reuse(make_video):
    """A batch of 3 steps is copied out of the reused step buffers before the decoder overwrites them."""
    path = make_video(n=75, fps=15, audio=False)
    mean = extractors.create("test-mean")
    _, out = extract_item(path, [mean])
    src = open_media(path)
    frames = np.stack([picture.rgb for _, picture in src.decode(mean.sampling.plan(src.info).frame_indices.ravel())])
    assert len(frames) == 5 and mean.batch_size == 3  # a full batch and a partial one
    np.testing.assert_array_equal(out[mean.key].steps, mean.forward(frames[:, None]))


def test_a_finished_extraction_packs_its_large_groups_and_the_next_run_extends_them(make_video, tmp_path, monkeypatch):
    from featbank.bank import compact

    files = [make_video(f"v{i}.mp4", n=12, seed=i) for i in range(4)]
    manifest = write_manifest(tmp_path, files[:3])
    key = extractors.create("test-mean").key
    monkeypatch.setattr(compact, "AUTO_PACK_ROWS", 10**9)  # too small to pack: row chunks stay
    extract_manifest(manifest, tmp_path / "rows.zarr", ["test-mean"], progress=False)
    rows_bank = FeatureBank(tmp_path / "rows.zarr", mode="r")
    assert not compact.is_packed(rows_bank.chunk_files(f"features/{key}/pooled"))
    monkeypatch.setattr(compact, "AUTO_PACK_ROWS", 3)
    extract_manifest(manifest, tmp_path / "packed.zarr", ["test-mean"], progress=False)
    bank = FeatureBank(tmp_path / "packed.zarr", mode="r")
    assert all(compact.is_packed(bank.chunk_files(f"features/{key}/{name}")) for name in compact.PACKED_ARRAYS)
    for packed, chunked in zip(bank.pooled(key, np.arange(3)), rows_bank.pooled(key, np.arange(3)), strict=True):
        np.testing.assert_array_equal(packed, chunked)
    # a later run adds an item: it unpacks the group to write, and packs it again as it ends
    extract_manifest(write_manifest(tmp_path, files), tmp_path / "packed.zarr", ["test-mean"], progress=False)
    bank = FeatureBank(tmp_path / "packed.zarr", mode="r")
    assert compact.is_packed(bank.chunk_files(f"features/{key}/pooled")) and bank.validate() == []
    assert bank.counts(key)["ok"] == 4
    for packed, chunked in zip(bank.pooled(key, np.arange(3)), rows_bank.pooled(key, np.arange(3)), strict=True):
        np.testing.assert_array_equal(packed, chunked)


def test_prefetched_yields_in_order_and_raises_the_producers_error_where_it_occurred():
    from featbank.extraction.decode import prefetched

    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise MediaError("broken packet at frame 3")

    got = []
    with pytest.raises(MediaError, match="frame 3"):
        for item in prefetched(failing(), depth=1):
            got.append(item)  # noqa: PERF402 - the items before the error are the point
    assert got == [1, 2]


def test_prefetched_stops_and_closes_its_source_when_the_consumer_stops_early():
    import threading

    from featbank.extraction.decode import prefetched

    produced, closed = [], threading.Event()

    def source():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stream = prefetched(source(), depth=4)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # what an exception in the consumer does too
    assert closed.is_set() and len(produced) <= 3 + 4 + 1  # never more than depth ahead
    assert not any(t.name == "featbank-decode" for t in threading.enumerate())
