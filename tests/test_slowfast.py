"""SlowFast R50 motion features: official architecture, strict checkpoint loading, preprocessing, and
the per-second feature definition of SimpleVQA (see extractors/slowfast.py).

No pretrained weights exist offline, so the network runs with seeded random weights; what is
checked is everything that does not depend on the weight values: parameter names and shapes
against pytorchvideo 0.1.5's own ``slowfast_r50`` (tests/keymanifests/slowfast_r50.json), loading a
file in the model zoo's ``{"model_state": ...}`` container through ``setup``, the resize/crop/
normalise arithmetic, the slow-pathway frame choice, and that the features are the head's own
average pools of the last stage. Each forward pass is a 32x224x224 clip, so inputs are few.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from keymanifest import checkpoint_like, load_manifest, shape_differences

from extractors import create
from extractors.slowfast import SlowFast, preprocess, slow_indices
from featbank.bank.store import OK, FeatureBank
from featbank.errors import WeightsMissingError
from featbank.extraction.orchestrate import extract_manifest
from featbank.demo.synth import write_video
from featbank.extraction.weights import WeightsPolicy

MEAN, STD = 0.45, 0.225


def kinetics(value: float) -> float:
    """A uint8 level after [0, 1] scaling and Kinetics normalisation, computed by hand."""
    return (value / 255 - MEAN) / STD


@pytest.fixture(scope="module")
def ex() -> SlowFast:
    extractor = SlowFast()
    extractor.setup("cpu", WeightsPolicy(random=True))
    return extractor


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    """Two random 32-frame clips at 48x64: small frames, but every step is upscaled to 224x224."""
    return np.random.default_rng(0).integers(0, 256, size=(2, 32, 48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def traced(ex, clips) -> tuple[np.ndarray, dict]:
    """Features of ``clips``, with the backbone's input pathways and last-stage outputs captured.

    pytorchvideo's multi-pathway blocks overwrite their input list in place, hence the copies.
    """
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [ex.model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(inputs=list(args[0]))),
             ex.model.blocks[4].register_forward_hook(lambda m, args, out: seen.update(stage5=list(out)))]
    try:
        features = ex.forward(clips)
    finally:
        for hook in hooks:
            hook.remove()
    return features, seen


def write_checkpoint(directory: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save({"model_state": state}, directory / SlowFast.weights.filename)


# --- Architecture and weights ---------------------------------------------------------------


def test_architecture_matches_pytorchvideo_slowfast_r50_manifest(ex):
    assert load_manifest("slowfast_r50")["derived_from"].startswith("pytorchvideo 0.1.5")
    assert shape_differences(ex.model, "slowfast_r50") == []


def test_model_zoo_checkpoint_loads_strictly_through_setup(tmp_path):
    write_checkpoint(tmp_path, checkpoint_like("slowfast_r50", fill=0.25))
    loaded = SlowFast()
    loaded.setup("cpu", WeightsPolicy(directory=tmp_path))
    assert loaded.resolved_weights.pinned_by == "unpinned" and not loaded.random_weights
    state = loaded.model.state_dict()
    for name in ("blocks.0.multipathway_blocks.1.conv.weight", "blocks.4.multipathway_blocks.0.res_blocks.2"
                 ".branch2.conv_c.weight", "blocks.6.proj.weight"):
        assert torch.equal(state[name], torch.full_like(state[name], 0.25)), name


@pytest.mark.parametrize("corruption", ["rename", "reshape"])
def test_corrupted_checkpoint_fails_naming_the_key(tmp_path, corruption):
    state = checkpoint_like("slowfast_r50")
    key = "blocks.2.multipathway_fusion.conv_fast_to_slow.weight"  # the (7, 1, 1) lateral kernel
    if corruption == "rename":
        state["blocks.2.multipathway_fusion.conv_f2s.weight"] = state.pop(key)
    else:
        state[key] = torch.zeros(64, 32, 5, 1, 1)  # the create_slowfast default, not the hub's (7, 1, 1)
    write_checkpoint(tmp_path, state)
    with pytest.raises(WeightsMissingError, match=key.replace(".", r"\.")):
        SlowFast().setup("cpu", WeightsPolicy(directory=tmp_path))


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(WeightsMissingError, match="SLOWFAST_8x8_R50.pyth.*dl.fbaipublicfiles.com"):
        SlowFast().setup("cpu", WeightsPolicy(directory=tmp_path))


# --- Preprocessing --------------------------------------------------------------------------


def test_slow_pathway_takes_pyslowfast_linspace_frames():
    # linspace(0, 31, 8) = 0, 4.43, 8.86, 13.29, 17.71, 22.14, 26.57, 31, truncated
    assert slow_indices(32).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


def test_preprocess_normalises_each_channel_and_keeps_time_order():
    levels = [0, 60, 120, 255]
    frames = torch.stack([torch.full((48, 64, 3), v, dtype=torch.uint8) for v in levels])[None]
    out = preprocess(frames)
    assert out.shape == (1, 3, 4, 224, 224) and out.dtype == torch.float32
    for t, v in enumerate(levels):
        torch.testing.assert_close(out[0, :, t], torch.full((3, 224, 224), kinetics(v)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("h, w", [(48, 64), (720, 406)])
def test_preprocess_crops_the_centre_square_of_non_square_frames(h, w):
    """A coloured centre square (side = short side) inside black margins: resizing the short side
    to 224 and cropping the centre must keep only the square, without stretching it. A squashing
    resize or an off-centre crop would bring black margin columns/rows into the crop."""
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    frame = torch.zeros(h, w, 3, dtype=torch.uint8)
    frame[top:top + side, left:left + side] = torch.tensor([255, 128, 0], dtype=torch.uint8)
    out = preprocess(frame[None, None])[0, :, 0]
    assert out.shape == (3, 224, 224)
    expected = torch.tensor([kinetics(255), kinetics(128), kinetics(0)]).view(3, 1, 1)
    torch.testing.assert_close(out[:, 5:-5, 5:-5], expected.expand(3, 214, 214), atol=1e-5, rtol=0)
    # margins read -2.0 and the square 2.44; the resized square's edge may fall inside the outermost
    # row or column, which then mixes both, but a stretched or off-centre crop has pure-margin lines
    red = out[0]
    assert red.mean(0).min() > -1.5 and red.mean(1).min() > -1.5


# --- Features -------------------------------------------------------------------------------


def test_pathways_get_the_preprocessed_clip_and_its_linspace_frames(clips, traced):
    _, seen = traced
    clip = preprocess(torch.from_numpy(clips))
    slow_in, fast_in = seen["inputs"]
    assert slow_in.shape == (2, 3, 8, 224, 224) and fast_in.shape == (2, 3, 32, 224, 224)
    torch.testing.assert_close(slow_in, clip[:, :, slow_indices(32)], atol=0, rtol=0)
    torch.testing.assert_close(fast_in, clip, atol=0, rtol=0)


def test_features_are_the_heads_average_pools_of_each_pathway(ex, traced):
    """The per-pathway means equal pytorchvideo's own head pooling (AvgPool3d (8, 7, 7) slow and
    (32, 7, 7) fast, concatenated), the feature SimpleVQA saves per second."""
    features, seen = traced
    slow, fast = seen["stage5"]
    assert slow.shape == (2, 2048, 8, 7, 7) and fast.shape == (2, 256, 32, 7, 7)
    with torch.inference_mode():
        head_pool = ex.model.blocks[5](list(seen["stage5"])).flatten(1).numpy()
    np.testing.assert_allclose(features, head_pool, rtol=1e-5, atol=1e-6)


def test_names_shape_dtype_and_finite(ex, clips, traced):
    features, _ = traced
    names = ex.feature_names()
    assert ex.step_dim == len(names) == 2304 == features.shape[1] and len(set(names)) == 2304
    assert (names[0], names[2047], names[2048], names[-1]) == ("slow_0", "slow_2047", "fast_0", "fast_255")
    assert features.shape == (len(clips), 2304) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert ex.sampling.frames_per_step == 32 and not ex.sampling.consecutive


def test_deterministic_across_setups_and_batch_splits(ex, clips, traced):
    features, _ = traced
    first, second = ex.forward(clips[:1]), ex.forward(clips[1:])
    # oneDNN may pick a different convolution kernel per batch size: float rounding only
    np.testing.assert_allclose(np.concatenate([first, second]), features, rtol=1e-5, atol=1e-6)
    again = SlowFast()
    again.setup("cpu", WeightsPolicy(random=True))
    np.testing.assert_array_equal(again.forward(clips[:1]), first)
    assert not np.allclose(features[0], features[1])  # different clips, different features


# --- End to end on a real video -------------------------------------------------------------


@pytest.mark.realdata
def test_real_portrait_video_end_to_end(realdata, tmp_path):
    """The first 2 s of DOVER's portrait demo 1724.mp4 (406x720, 29.97 fps), re-encoded, through
    the manifest, decoder, sampling and bank: a full 8-s video is 8 SlowFast passes, too slow for
    CPU test runs, while 2 seconds still exercise the per-second steps and the pooling."""
    with av.open(str(realdata / "VQAssessment+DOVER" / "demo" / "1724.mp4")) as source:
        stream = source.streams.video[0]
        fps = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(source.decode(stream), range(60))]
    video = write_video(tmp_path / "dover_1724_2s.mp4", np.stack(frames), fps)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"video_id": "dover_1724_2s", "path": video.name}]).to_csv(manifest, index=False)
    report = extract_manifest(manifest, tmp_path / "bank.zarr", ["slowfast"],
                              weights=WeightsPolicy(random=True), progress=False)
    assert report.failures == []
    (key,) = report.counts
    expected = create("slowfast")
    expected.adopt(WeightsPolicy(random=True))
    assert key == expected.key
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    group = bank.group(key)
    assert bank.status(key)[0] == OK and group.attrs["feature_names"] == expected.feature_names()
    assert (int(bank.items["width"][0]), int(bank.items["height"][0])) == (406, 720)
    n = int(group["mask"][0].sum())
    assert n == 2
    steps = group["steps"][0][:n]
    assert np.isfinite(steps).all() and not np.allclose(steps[0], steps[1])
    frames = group["frame_indices"][0][:n]
    starts = np.floor(np.arange(n) * float(fps) + 1e-6)[:, None]
    assert frames.shape == (n, 32)
    assert (frames >= starts).all() and (frames < starts + float(fps)).all()  # each clip within its second
    pooled = group["pooled"][0]
    np.testing.assert_allclose(pooled[:2304], steps.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[2304:], steps.std(0), rtol=1e-4, atol=1e-6)
