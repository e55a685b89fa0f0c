"""timm backbones as key-frame extractors: official keys, strict loading, preprocessing, SimpleVQA stages.

The key manifests come from timm 1.0.31's own model definitions (see each manifest's ``how``); the
checkpoint round-trips write a ``model.safetensors``-style file with those names and load it through
``setup`` exactly as a downloaded timm checkpoint would be. Everything runs on random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import extractors
from extractors.timm_backbone import TimmBackbone
from featbank.bank.store import OK, FeatureBank
from featbank.errors import FeatbankError, WeightsMissingError
from featbank.bank.hashing import file_digest
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsPolicy
from tests.keymanifest import checkpoint_like, load_manifest, shape_differences

MANIFESTS = {"resnet50": "timm_resnet50", "convnext_tiny": "timm_convnext_tiny",
             "swin_tiny_patch4_window7_224": "timm_swin_tiny_patch4_window7_224"}
RANDOM = WeightsPolicy(random=True)


def frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(n, 1, h, w, 3)`` uint8 key frames, as the orchestrator hands them over."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, h, w, 3), dtype=np.uint8)


def ready(spec: str) -> TimmBackbone:
    ex = extractors.create(spec)
    ex.setup("cpu", RANDOM)
    return ex


# --- The spec -------------------------------------------------------------------------------------


def test_spec_resolves_the_default_tag_and_keys_on_the_full_name():
    plain, tagged = extractors.create("timm:resnet50"), extractors.create("timm:resnet50.a1_in1k")
    assert isinstance(plain, TimmBackbone) and plain.model_name == "resnet50.a1_in1k"
    assert plain.key == tagged.key  # same checkpoint, same features, same bank group
    assert plain.key != extractors.create("timm:resnet50.tv_in1k").key
    assert plain.key != extractors.create("timm:resnet50/stages").key
    assert plain.sampling == KeyFrames()


def test_weights_spec_names_the_hub_file_and_its_licence():
    ex = extractors.create("timm:resnet50.tv_in1k")
    spec = ex.weights
    assert spec.filename == "timm/resnet50.tv_in1k.safetensors" and spec.sha256 is None
    assert (spec.hf_repo, spec.hf_filename) == ("timm/resnet50.tv_in1k", "model.safetensors")
    assert spec.source == "https://huggingface.co/timm/resnet50.tv_in1k/resolve/main/model.safetensors"
    assert (spec.license, spec.non_commercial) == ("bsd-3-clause", False)
    fcmae = extractors.create("timm:convnextv2_atto.fcmae").weights
    assert fcmae.license == "cc-by-nc-4.0" and fcmae.non_commercial


@pytest.mark.parametrize("spec, words", [
    ("timm", ["timm:<model_name>", "timm.list_pretrained"]),
    ("timm:resnet5", ["no model 'resnet5'", "resnet50", "timm.list_pretrained"]),
    ("timm:resnet50.nope", ["nope", "resnet50.tv_in1k"]),
    ("timm:resnet50/layers", ["unknown variant 'layers'"]),
    ("timm:swin_tiny_patch4_window7_224/stages", ["fixed input size"]),
])
def test_bad_specs_fail_with_a_message_that_says_what_to_do(spec, words):
    with pytest.raises(FeatbankError) as error:
        extractors.create(spec)
    assert all(w in str(error.value) for w in words), str(error.value)


# --- Official keys and strict loading -------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(MANIFESTS))
def test_architecture_matches_the_official_key_manifest(arch):
    ex = extractors.create(f"timm:{arch}")
    assert f"timm/{ex.model_name}" == load_manifest(MANIFESTS[arch])["model"]
    assert shape_differences(ex.build_model(), MANIFESTS[arch]) == []


def test_checkpoint_in_the_weights_directory_loads_strictly(tmp_path):
    ex = extractors.create("timm:swin_tiny_patch4_window7_224")
    path = tmp_path / "weights" / ex.weights.filename
    path.parent.mkdir(parents=True)
    save_file(checkpoint_like(MANIFESTS["swin_tiny_patch4_window7_224"], fill=0.25), str(path))
    ex.setup("cpu", WeightsPolicy(directory=tmp_path / "weights"))
    assert ex.resolved_weights.path == path and ex.resolved_weights.pinned_by == "unpinned"
    assert torch.all(ex.model.patch_embed.proj.weight == 0.25)
    assert torch.all(ex.model.head.fc.weight == 0.25)  # the classifier is part of the checkpoint
    assert ex.weights_provenance()["random"] is False


def test_checkpoint_in_a_hugging_face_cache_snapshot_is_found(tmp_path):
    ex = extractors.create("timm:resnet50")
    snapshot = tmp_path / "hf" / "models--timm--resnet50.a1_in1k" / "snapshots" / "0123abc"  # conftest: $HF_HUB_CACHE
    snapshot.mkdir(parents=True)
    save_file(checkpoint_like(MANIFESTS["resnet50"], fill=0.5), str(snapshot / "model.safetensors"))
    ex.setup("cpu", WeightsPolicy())
    assert ex.resolved_weights.path == snapshot / "model.safetensors"
    assert torch.all(ex.model.layer4[2].conv3.weight == 0.5)


@pytest.mark.parametrize("corrupt", ["rename", "reshape"])
def test_a_checkpoint_of_another_structure_fails_naming_the_key(tmp_path, corrupt):
    ex = extractors.create("timm:convnext_tiny")
    state = checkpoint_like(MANIFESTS["convnext_tiny"])
    key = "stages.2.blocks.4.mlp.fc1.weight"
    if corrupt == "rename":
        state["stages.2.blocks.4.mlp.fc_1.weight"] = state.pop(key)
    else:
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    path = tmp_path / ex.weights.filename
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    with pytest.raises(WeightsMissingError, match=key.replace(".", r"\.")):
        ex.setup("cpu", WeightsPolicy(directory=tmp_path))


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(WeightsMissingError, match="huggingface.co/timm/resnet50.a1_in1k"):
        extractors.create("timm:resnet50").setup("cpu", WeightsPolicy(directory=tmp_path))


# --- Preprocessing --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, crop", [("timm:resnet18", 224), ("timm:resnet18/stages", 448),
                                        ("timm:swin_tiny_patch4_window7_224", 224)])
@pytest.mark.parametrize("h, w", [(48, 64), (720, 406)])
def test_preprocessing_resizes_crops_and_normalises_non_square_frames(spec, crop, h, w):
    """A grey centre with red bands where the crop must cut: only the normalised grey survives.

    The bands lie along the long side, beyond the centre square the crop keeps (with room for the
    resampling kernel), so any error in the short-side resize or the centring lets red in."""
    ex = extractors.create(spec)
    frame = np.full((1, 1, h, w, 3), 128, dtype=np.uint8)
    band = max(h, w) // 2 - min(h, w) // 2 - 4  # long-side pixels beyond the central square, minus slack
    if h > w:
        frame[:, :, :band], frame[:, :, -band:] = (255, 0, 0), (255, 0, 0)
    else:
        frame[:, :, :, :band], frame[:, :, :, -band:] = (255, 0, 0), (255, 0, 0)
    out = ex.preprocess(torch.from_numpy(frame).permute(0, 1, 4, 2, 3).float()[:, 0] / 255)
    assert out.shape == (1, 3, crop, crop)
    expected = (128 / 255 - np.array(ex.preprocess.mean)) / np.array(ex.preprocess.std)
    np.testing.assert_allclose(out.amax((2, 3))[0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out.amin((2, 3))[0].numpy(), expected, atol=1e-5)


def test_pooled_variant_follows_the_checkpoints_own_data_config():
    """swin_tiny (ms_in1k): 224 input, crop_pct 0.9, bicubic; resnet50.tv_in1k: 0.875, bilinear."""
    swin = extractors.create("timm:swin_tiny_patch4_window7_224").preprocess
    assert (swin.resize, swin.crop, swin.interpolation) == (248, 224, "bicubic")  # floor(224 / 0.9)
    tv = extractors.create("timm:resnet50.tv_in1k").preprocess
    assert (tv.resize, tv.crop, tv.interpolation) == (256, 224, "bilinear")
    eva = extractors.create("timm:eva02_base_patch14_224.mim_in22k")
    assert eva.preprocess.mean == (0.48145466, 0.4578275, 0.40821073)  # CLIP statistics, not ImageNet
    assert eva.step_dim == 768


# --- Features -------------------------------------------------------------------------------------


def test_pooled_features_have_the_declared_shape_and_repeat_across_setups_and_batches():
    ex = ready("timm:resnet18")
    batch = frames(4, 90, 160)
    out = ex.forward(batch)
    assert out.shape == (4, ex.step_dim) == (4, 512) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std(0).max() > 0
    assert np.array_equal(out, ready("timm:resnet18").forward(batch))
    split = np.concatenate([ex.forward(batch[:1]), ex.forward(batch[1:])])
    np.testing.assert_allclose(split, out, rtol=1e-5, atol=1e-6)  # only the CPU kernels' blocking differs


def test_stages_variant_is_simplevqas_layer2_to_layer4_mean_and_std():
    names = extractors.create("timm:resnet50/stages").feature_names()
    assert len(names) == (512 + 1024 + 2048) * 2 == 7168
    assert names[0] == "layer2_mean_0" and names[512] == "layer2_std_0" and names[1024] == "layer3_mean_0"
    assert names[-1] == "layer4_std_2047"

    ex = ready("timm:resnet18/stages")
    batch = frames(2, 120, 200)
    out = ex.forward(batch)
    assert out.shape == (2, (128 + 256 + 512) * 2) and np.isfinite(out).all()
    # Independently: hook ResNet's layer2-4 (SimpleVQA's module names) and pool as SimpleVQA does.
    maps = []
    hooks = [getattr(ex.model, f"layer{i}").register_forward_hook(lambda m, i, o: maps.append(o))
             for i in (2, 3, 4)]
    with torch.inference_mode():
        ex.model(ex.preprocess(torch.from_numpy(batch).permute(0, 1, 4, 2, 3).float()[:, 0] / 255))
    for hook in hooks:
        hook.remove()
    expected = torch.cat([s for m in maps for s in (m.mean((2, 3)), torch.std(m.flatten(2), dim=2))], 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)


# --- Real videos ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_videos_end_to_end(realdata: Path, tmp_path: Path):
    videos = {"simplevqa_demo": "sunwei925+SimpleVQA/videos/2999049224_original_centercrop_960x540_8s.mp4",
              "dover_1724_portrait": "VQAssessment+DOVER/demo/1724.mp4"}
    rows = []
    for vid, rel in videos.items():
        (tmp_path / f"{vid}.mp4").symlink_to(realdata / rel)
        rows.append({"video_id": vid, "path": f"{vid}.mp4"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    specs = ["timm:resnet18", "timm:resnet18/stages"]
    extract_manifest(tmp_path / "manifest.csv", tmp_path / "bank.zarr", specs, weights=RANDOM, progress=False)
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    found = bank.rows_of([file_digest(tmp_path / f"{v}.mp4") for v in videos])
    for spec, dim in zip(specs, (512, 1792)):
        ex = extractors.create(spec)
        ex.adopt(RANDOM)  # the random-weights run has its own group key
        group = bank.group(ex.key)
        assert (bank.status(ex.key)[found] == OK).all()
        assert group.attrs["weights"] == {"filename": ex.weights.filename, "random": True}
        steps, mask = group["steps"][found], group["mask"][found]
        assert steps.shape[-1] == dim and group["pooled"].shape[1] == 2 * dim
        assert (mask.sum(1) == 8).all()  # 8-s clips: one key frame per second
        assert np.isfinite(steps[mask]).all() and np.isfinite(group["pooled"][found]).all()
    assert bank.validate() == []
