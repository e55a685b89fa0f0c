"""FAST-VQA-B / FasterVQA: official key layout, strict loading, sampling, fragments, features.

A full forward is one 32x224x224 Video Swin-T clip (a few seconds on CPU), so the forward-pass
tests share two extractors built once per module and run eight clips in all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import extractors
from extractors import fastvqa as fv
from extractors.deep import load_strict
from featbank.bank.store import OK, FeatureBank
from featbank.errors import WeightsMissingError
from featbank.bank.hashing import file_digest
from featbank.extraction.media import MediaInfo
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.sampling import FragmentClips
from featbank.extraction.weights import WeightsPolicy
from conftest import moving_frames
from tests.keymanifest import checkpoint_like, shape_differences

MANIFESTS = {"b": "fastvqa_b", "faster": "fastervqa"}


def info(n_frames: int, fps: float = 30.0) -> MediaInfo:
    return MediaInfo(n_frames=n_frames, fps=fps, width=64, height=48, has_audio=False)


@pytest.fixture(scope="module")
def random_b() -> fv.FastVQA:
    ex = fv.FastVQA()
    ex.setup("cpu", WeightsPolicy(random=True))
    return ex


# --------------------------------------------------------------------------- official keys

@pytest.mark.parametrize("variant", ["b", "faster"])
def test_architecture_matches_the_official_key_manifest(variant):
    ex = fv.FastVQA(variant)
    assert shape_differences(ex.build_model(), MANIFESTS[variant]) == []


def test_official_container_loads_strictly_through_setup(tmp_path):
    fill = 0.01
    torch.save({"state_dict": checkpoint_like("fastvqa_b", fill)}, tmp_path / "FAST_VQA_B_1_4.pth")
    ex = extractors.create("fastvqa")
    ex.setup("cpu", WeightsPolicy(directory=tmp_path))
    assert ex.resolved_weights.pinned_by == "unpinned"  # the release publishes no checksum
    attn = ex.model.fragments_backbone.layers[0].blocks[1].attn
    assert torch.all(attn.fragment_position_bias_table == fill)
    assert torch.all(ex.model.vqa_head.fc_last.bias == fill)


def test_fastervqa_checkpoint_is_its_own_file():
    ex = extractors.create("fastvqa:faster")
    assert ex.weights.filename == "FAST_VQA_3D_1_1.pth" and ex.weights.sha256 is None
    with pytest.raises(WeightsMissingError, match="FAST_VQA_3D_1_1.pth"):
        ex.setup("cpu", WeightsPolicy(directory=Path("/nonexistent")))


def test_weights_commands_find_the_fastervqa_file_by_name(tmp_path, capsys):
    from featbank.cli import main

    download = tmp_path / "downloads" / "FAST_VQA_3D_1_1.pth"
    download.parent.mkdir()
    torch.save({"state_dict": checkpoint_like("fastervqa", 0.02)}, download)
    weights = ["--weights-dir", str(tmp_path / "weights")]
    assert main(["weights", "import", str(download), *weights]) == 0  # no --extractor needed
    assert "for fastvqa:faster" in capsys.readouterr().out
    assert main(["weights", "verify", "--load", *weights]) == 4  # the other checkpoints are missing
    report = capsys.readouterr().out
    assert "OK       fastvqa:faster" in report and "loads strictly" in report
    assert "PROBLEM  fastvqa: FAST_VQA_B_1_4.pth was not found" in report


@pytest.mark.parametrize("corrupt", ["rename", "reshape"])
def test_corrupted_checkpoint_names_the_offending_key(corrupt):
    ex = fv.FastVQA()
    state = checkpoint_like("fastvqa_b")
    key = "fragments_backbone.layers.2.blocks.3.attn.fragment_position_bias_table"
    if corrupt == "rename":
        state[key.replace("fragment_", "frag_")] = state.pop(key)
    else:
        state[key] = torch.zeros(10, 12)
    with pytest.raises(WeightsMissingError, match=key):
        load_strict(ex.build_model(), ex.state_dict_from({"state_dict": state}), "corrupt.pth")


# --------------------------------------------------------------------------- temporal sampling

def test_fast_vqa_b_clip_is_centred_like_mmaction_test_mode():
    # 100 frames, one 32x2 clip (span 64): the free 37 frames are one part, centre floor(18.5) = 18
    plan = FragmentClips(clip_len=32, frame_interval=2).plan(info(100))
    assert plan.frame_indices.tolist() == [list(range(18, 82, 2))]
    assert plan.timestamps.tolist() == [18 / 30.0]


def test_several_clips_spread_over_the_video():
    plan = FragmentClips(num_clips=4).plan(info(300))  # part = 237 / 4 = 59.25
    assert plan.frame_indices[:, 0].tolist() == [29, 88, 148, 207]
    assert (np.diff(plan.frame_indices, axis=1) == 2).all()


def test_fastervqa_clip_takes_a_run_from_each_eighth_of_the_video():
    # 300 frames: segments of 37, runs of 4 frames every 2nd (8 frames), room 29, middle 14
    plan = FragmentClips(t_frag=8).plan(info(300))
    expected = [37 * s + 14 + 2 * k for s in range(8) for k in range(4)]
    assert plan.frame_indices.tolist() == [expected]
    two = FragmentClips(t_frag=8, num_clips=2).plan(info(300)).frame_indices
    assert two[:, 0].tolist() == [7, 21]  # floor(0.25 * 29), floor(0.75 * 29)


def test_short_videos_wrap_and_images_repeat_their_frame():
    short = FragmentClips().plan(info(20)).frame_indices[0]
    assert short.tolist() == [(2 * k) % 20 for k in range(32)]
    image = MediaInfo(n_frames=1, fps=0.0, width=64, height=48, has_audio=False, is_image=True)
    plan = FragmentClips(t_frag=8).plan(image)
    assert (plan.frame_indices == 0).all() and plan.frame_indices.shape == (1, 32)


def test_sampling_rejects_clip_length_not_divisible_by_temporal_fragments():
    with pytest.raises(ValueError, match="multiple"):
        FragmentClips(clip_len=30, t_frag=8)


# --------------------------------------------------------------------------- spatial fragments

def test_offsets_are_a_pure_function_of_seed_and_size():
    a = fv.fragment_offsets(0, 1080, 1920, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, fv.fragment_offsets(0, 1080, 1920, 4)))
    assert not np.array_equal(a[0], fv.fragment_offsets(1, 1080, 1920, 4)[0])
    # 1080 // 7 = 154: shifts lie in [0, 154 - 32); 1920 // 7 = 274: [0, 242)
    assert a[0].min() >= 0 and a[0].max() < 122 and a[1].max() < 242 and a[0].shape == (7, 7, 4)
    assert not np.array_equal(a[0], fv.fragment_offsets(0, 1080, 1920, 4, step=1)[0])


def test_each_step_of_a_video_cuts_its_own_fragments():
    still = torch.from_numpy(np.repeat(moving_frames(1, 480, 640), 32, axis=0))[None].expand(3, -1, -1, -1, -1)
    ex = fv.FastVQA("b")
    mosaics = ex.fragments(still, steps=[0, 1, 0])
    assert torch.equal(mosaics[0], mosaics[2]) and not torch.equal(mosaics[0], mosaics[1])
    assert torch.equal(ex.fragments(still[:1])[0], mosaics[0])  # no steps given: step 0's draw
    assert torch.equal(ex.fragments(still[:1], steps=[1])[0], mosaics[1])  # a row's draw ignores its batch


def test_mosaic_pixel_comes_from_its_cell_at_the_drawn_offset():
    h, w = 406, 720
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 32, h, w, 3), dtype=np.uint8))
    ex = fv.FastVQA("faster", seed=5)  # aligned 8: four offset draws per clip
    mosaic = ex.fragments(frames)[0]  # (3, 32, 224, 224), normalised
    dh, dw = fv.fragment_offsets(5, h, w, 4)
    for t, i, j, a, b in [(0, 0, 0, 0, 0), (9, 3, 5, 7, 30), (31, 6, 6, 31, 31), (17, 6, 2, 12, 1)]:
        row = min(i * (h // 7), h - 32) + dh[i, j, t // 8] + a
        col = min(j * (w // 7), w - 32) + dw[i, j, t // 8] + b
        raw = frames[0, t, row, col].float()
        expected = (raw - torch.tensor(fv.MEAN)) / torch.tensor(fv.STD)
        assert torch.allclose(mosaic[:, t, i * 32 + a, j * 32 + b], expected)


def test_a_patch_follows_the_same_place_within_an_aligned_chunk():
    still = torch.from_numpy(np.repeat(moving_frames(1, 480, 640), 32, axis=0))[None]
    b = fv.FastVQA("b").fragments(still)[0]
    assert all(torch.equal(b[:, 0], b[:, t]) for t in range(32))  # aligned 32: one draw per clip
    f = fv.FastVQA("faster").fragments(still)[0]
    assert torch.equal(f[:, 0], f[:, 7]) and not torch.equal(f[:, 7], f[:, 8])  # aligned 8


def test_small_frames_are_upscaled_to_a_224_short_side():
    frames = torch.from_numpy(moving_frames(32, 48, 64))[None]
    assert fv.upscaled_size(48, 64) == (224, 298)
    big = fv.upscale(frames)
    assert big.shape == (1, 32, 224, 298, 3) and big.dtype == torch.uint8
    # a 14/3 bilinear upscale: every output pixel lies within the range of the source pixels
    assert big.min() >= frames.min() and big.max() <= frames.max()
    assert fv.FastVQA().fragments(frames).shape == (1, 3, 32, 224, 224)


def test_uniform_frame_normalises_to_the_hand_computed_value():
    grey = torch.full((1, 32, 256, 320, 3), 100, dtype=torch.uint8)
    mosaic = fv.FastVQA().fragments(grey)[0]
    expected = [(100 - 123.675) / 58.395, (100 - 116.28) / 57.12, (100 - 103.53) / 57.375]
    assert torch.allclose(mosaic.mean(dim=(1, 2, 3)), torch.tensor(expected), atol=1e-6)


# --------------------------------------------------------------------------- options and keys

def test_spec_options_change_the_bank_key():
    ex = extractors.create("fastvqa:faster,clips=2,seed=7")
    assert ex.options() == {"variant": "faster", "num_clips": 2, "seed": 7}
    assert ex.sampling.num_clips == 2 and ex.sampling.max_steps == 2
    keys = {extractors.create(s).key for s in ("fastvqa", "fastvqa:faster", "fastvqa:b,seed=1", "fastvqa:b,clips=4")}
    assert len(keys) == 4
    with pytest.raises(ValueError, match="variant"):
        fv.FastVQA("m")
    with pytest.raises(ValueError, match="clips=N"):
        fv.parse_spec("b,frames=3")
    assert extractors.create("fastvqa:clips=3").options() == {"variant": "b", "num_clips": 3, "seed": 0}


# --------------------------------------------------------------------------- features

def test_features_are_finite_float32_and_deterministic_across_setups_and_batches(random_b):
    steps = np.stack([moving_frames(32, 48, 64, seed=s) for s in (0, 1)])
    both = random_b.forward(steps)
    assert both.shape == (2, random_b.step_dim) == (2, 769) and both.dtype == np.float32
    assert np.isfinite(both).all() and not np.allclose(both[0], both[1])
    again = fv.FastVQA()
    again.setup("cpu", WeightsPolicy(random=True))
    np.testing.assert_allclose(again.forward(steps[1:]), both[1:], rtol=1e-5, atol=1e-6)
    assert random_b.feature_names()[-1] == "quality"


def test_forward_item_runs_each_row_at_its_steps_offsets(random_b):
    clip = moving_frames(32, 48, 64, seed=2)
    out = random_b.forward_item(np.stack([clip, clip]), np.array([0, 3]), None)
    np.testing.assert_allclose(out[0], random_b.forward(clip[None])[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])  # same frames, another step: other fragments


@pytest.mark.realdata
def test_real_videos_extract_end_to_end(realdata, tmp_path):
    files = {"fastvqa_demo": realdata / "VQAssessment+FAST-VQA-and-FasterVQA" / "demos" / "10053703034.mp4",
             "dover_portrait": realdata / "VQAssessment+DOVER" / "demo" / "1724.mp4"}  # 960x540, 406x720
    for vid, path in files.items():
        (tmp_path / f"{vid}.mp4").symlink_to(path)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"video_id": list(files), "path": [f"{v}.mp4" for v in files]}).to_csv(manifest, index=False)
    spec = "fastvqa:faster"
    extract_manifest(manifest, tmp_path / "bank.zarr", [spec], weights=WeightsPolicy(random=True), progress=False)
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    ex = extractors.create(spec)
    ex.adopt(WeightsPolicy(random=True))
    group = bank.group(ex.key)
    rows = bank.rows_of([file_digest(tmp_path / f"{v}.mp4") for v in files])
    assert (bank.status(ex.key)[rows] == OK).all()
    steps = group["steps"][rows]
    assert steps.shape == (2, 1, 769) and np.isfinite(steps).all()
    n_frames = bank.items["n_frames"][rows]
    for r, n in zip(rows, n_frames):  # one clip over the whole video: 8 runs of 4 frames
        expected = FragmentClips(t_frag=8).plan(info(int(n))).frame_indices
        assert np.array_equal(group["frame_indices"][r], expected)
