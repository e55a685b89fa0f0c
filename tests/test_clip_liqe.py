"""CLIP (``clip``, ``clip:prompt``) and LIQE: official checkpoint structure, preprocessing, outputs.

Both extractors are OpenAI CLIP ViT-B/32. Its names and shapes are checked at full size against
``keymanifests/clip_vit_b32.json`` (derived from open_clip 3.3.0's OpenAI-compatible build, see its
``how``), and checkpoints built from that manifest go through the real set-up path: OpenAI's
TorchScript archive for ``clip`` and a plain ``torch.save``'d state dict, as LIQE's code loads
``LIQE.pt``, for ``liqe`` (LIQE fine-tunes the whole CLIP model, so its file has the same key set).

A full-size LIQE set-up encodes 495 captions with the 12-layer text transformer, several seconds
on a small CPU; the behaviour tests therefore run the same code on a one-layer, 64-wide CLIP
(``TINY``, same 512-d embedding, same patch size, same tokenizer), which changes no preprocessing,
patch selection or output definition.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

import extractors
from extractors import clip as clip_module
from extractors import liqe as liqe_module
from extractors.clip import ClipArchitecture, ClipExtractor, ClipPrompt, OpenAIClip, clip_preprocess
from extractors.deep import load_checkpoint, load_strict
from extractors.liqe import DISTORTIONS, PROMPTS, QUALITIES, SCENES, Liqe, liqe_patches
from featbank.bank.store import OK, FeatureBank
from featbank.errors import FeatbankError, WeightsMissingError
from featbank.bank.hashing import file_digest
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.weights import WeightsPolicy, sha256_of
from tests.keymanifest import checkpoint_like, load_manifest, shape_differences

MANIFEST = "clip_vit_b32"
FILL = 0.5  # exact in fp16, the dtype of OpenAI's and LIQE's files
RANDOM = WeightsPolicy(random=True)
TINY = ClipArchitecture(vision_width=64, vision_layers=1, text_width=64, text_layers=1)
MEAN = torch.tensor(clip_module.OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(clip_module.OPENAI_DATASET_STD).view(3, 1, 1)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(OpenAIClip, "architecture", TINY)


def ready(spec: str) -> OpenAIClip:
    ex = extractors.create(spec)
    ex.setup("cpu", RANDOM)
    return ex


def run(ex: OpenAIClip, batch: np.ndarray, prompt: str = "a red car on a wet road") -> np.ndarray:
    return ex.forward_item(batch, np.arange(len(batch)), prompt if ex.text_column else None)


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour regions plus grain: resampling errors show as they would on real frames."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    return np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


def frames(h: int, w: int, n: int = 3) -> np.ndarray:
    return np.stack([photo_like(h, w, seed=i)[None] for i in range(n)])  # (n, 1, h, w, 3)


# --- Official checkpoint structure (full size) -------------------------------------------------


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    """The manifest's tensors in fp16, as both official files store their weights (tests copy the
    dict before changing entries)."""
    return {k: v.half() for k, v in checkpoint_like(MANIFEST, FILL).items()}


def save_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive holding ``state`` under its dotted names, like OpenAI's ``ViT-B-32.pt``."""
    root = nn.Module()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value)
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.fixture(scope="module")
def openai_clip(tmp_path_factory, official) -> ClipExtractor:
    """``clip`` set up from a TorchScript archive shaped like OpenAI's, with its three extra entries."""
    directory = tmp_path_factory.mktemp("openai_weights")
    state = dict(official)
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = directory / ClipExtractor.weights.filename
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save is deprecated; it is OpenAI's format
        save_torchscript(state, path)
    with pytest.MonkeyPatch.context() as mp:  # stands in for OpenAI's file: pin this file's checksum
        mp.setattr(ClipExtractor, "weights", replace(ClipExtractor.weights, sha256=sha256_of(path)))
        ex = extractors.create("clip")
        ex.setup("cpu", WeightsPolicy(directory=directory))
    return ex


def test_openai_torchscript_archive_loads_strictly_through_setup(openai_clip):
    assert openai_clip.resolved_weights.pinned_by == "upstream" and not openai_clip.random_weights
    assert shape_differences(openai_clip.model, MANIFEST) == []
    state = openai_clip.model.state_dict()
    for name in ("visual.conv1.weight", "transformer.resblocks.11.mlp.c_proj.bias", "logit_scale"):
        assert torch.all(state[name] == FILL), name
    assert state["visual.conv1.weight"].dtype == torch.float32  # fp16 file, fp32 model on the CPU


def test_clip_also_loads_a_plain_state_dict_file(tiny, tmp_path, monkeypatch):
    """A re-saved copy (``torch.save(model.state_dict())``) takes the weights-only loader."""
    state = TINY.build().state_dict()
    torch.save(state, tmp_path / ClipExtractor.weights.filename)
    monkeypatch.setattr(ClipExtractor, "weights", replace(ClipExtractor.weights, sha256=None))
    ex = extractors.create("clip")
    ex.setup("cpu", WeightsPolicy(directory=tmp_path))
    loaded = ex.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_weights_verify_reads_the_torchscript_archive(openai_clip):
    """torch's weights-only loader refuses TorchScript, so ``featbank weights verify --load`` must
    read OpenAI's file the way set-up does."""
    path = openai_clip.resolved_weights.path
    with pytest.raises(WeightsMissingError, match="is a TorchScript archive"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_checkpoint(path)
    ClipExtractor().verify_checkpoint(path)  # raises WeightsMissingError on any difference


def test_manifest_is_openai_clip_vit_b32():
    params = load_manifest(MANIFEST)["params"]
    assert params["visual.conv1.weight"] == [768, 3, 32, 32]  # 32x32 patches, no bias
    assert params["visual.positional_embedding"] == [50, 768]  # (224 / 32)^2 + class token
    assert params["token_embedding.weight"] == [49408, 512] and params["positional_embedding"] == [77, 512]
    assert params["text_projection"] == [512, 512] and params["logit_scale"] == []
    assert not set(params) & set(clip_module.OPENAI_NON_PARAMETERS)


@pytest.mark.parametrize("corruption", ["rename", "reshape"])
def test_corrupted_openai_checkpoint_names_the_key(openai_clip, official, corruption):
    state = dict(official)
    if corruption == "rename":
        state["visual.projection"] = state.pop("visual.proj")
        expected = "visual.proj"
    else:
        state["positional_embedding"] = torch.zeros(76, 512)
        expected = "positional_embedding [76, 512]"
    with pytest.raises(WeightsMissingError, match=expected.replace("[", r"\[")):
        load_strict(openai_clip.model, openai_clip.state_dict_from(state), "ViT-B-32.pt")


def test_liqe_state_dict_file_loads_strictly_then_encodes_its_captions(tmp_path, official, monkeypatch):
    """Encoding 495 captions with the full-size text tower takes half a minute on a small CPU, so
    here the encoder only records what it was asked; the tiny-model tests run it for real."""
    torch.save(official, tmp_path / "LIQE.pt")  # LIQE.pt is the fine-tuned model's state_dict
    asked = []

    def record(ex, texts):
        asked.append((list(texts), ex.model.visual.proj.detach().clone()))
        return torch.zeros(len(texts), 512)

    monkeypatch.setattr(Liqe, "encode_texts", record)
    ex = extractors.create("liqe")
    ex.setup("cpu", WeightsPolicy(directory=tmp_path))
    assert ex.resolved_weights.pinned_by == "unpinned"
    assert torch.all(ex.model.visual.proj == FILL) and torch.all(ex.model.ln_final.weight == FILL)
    ((texts, proj_then),) = asked
    assert texts == PROMPTS and torch.all(proj_then == FILL)  # captions encoded with the loaded weights


def test_corrupted_liqe_file_fails_setup_naming_the_key(tmp_path, official):
    state = dict(official)
    state["transformer.resblocks.3.attn.in_proj_weight"] = torch.zeros(1536, 500)
    torch.save({"model_state_dict": state}, tmp_path / "LIQE.pt")  # LIQE's training-script wrapper
    with pytest.raises(WeightsMissingError, match=r"transformer\.resblocks\.3\.attn\.in_proj_weight \[1536, 500\]"):
        extractors.create("liqe").setup("cpu", WeightsPolicy(directory=tmp_path))


# --- Specs, names, weights ---------------------------------------------------------------------


def test_specs_names_and_weights():
    plain, prompt, liqe = (extractors.create(s) for s in ("clip", "clip:prompt", "liqe"))
    assert type(plain) is ClipExtractor and type(prompt) is ClipPrompt and type(liqe) is Liqe
    assert plain.text_column is None and prompt.text_column == "prompt"
    assert (plain.step_dim, prompt.step_dim, liqe.step_dim) == (512, 1025, 495 + 25 + 1 + 512)
    for ex in (plain, prompt, liqe):
        assert len(set(ex.feature_names())) == ex.step_dim
    assert plain.key != prompt.key  # different features, different bank groups
    assert liqe.feature_names()[495:500] == [f"p_quality_{q}" for q in QUALITIES]
    assert liqe.feature_names()[520] == "quality_score"
    spec = ClipExtractor.weights
    assert spec.sha256 in spec.source and spec.source.endswith("/ViT-B-32.pt") and not spec.non_commercial
    assert Liqe.weights.sha256 is None and Liqe.weights.license == "MIT" and not Liqe.weights.non_commercial
    with pytest.raises(FeatbankError, match="unknown variant"):
        extractors.create("clip:text")


def test_liqe_captions_are_the_papers_in_product_order():
    assert len(PROMPTS) == len(QUALITIES) * len(SCENES) * len(DISTORTIONS) == 495
    assert PROMPTS[0] == "a photo of a animal with jpeg2000 compression artifacts, which is of bad quality"
    assert PROMPTS[-1] == "a photo of a others with other artifacts, which is of perfect quality"
    q, s, d = 3, 7, 2  # caption index = q * 99 + s * 11 + d, as LIQE's view(-1, 5, 9, 11) reads it
    assert PROMPTS[q * 99 + s * 11 + d] == "a photo of a still_life with noise artifacts, which is of good quality"


# --- Preprocessing against the reference transforms ---------------------------------------------


@pytest.mark.parametrize("hw", [(48, 64), (406, 720), (720, 406), (481, 853)])
def test_clip_preprocessing_matches_openais_pil_transform(hw):
    """OpenAI's ``_transform`` run by torchvision on PIL images is the reference; ours runs on
    tensors. They agree to PIL's 8-bit rounding (a few levels at most, well under one on average)."""
    reference = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                           T.ToTensor(), T.Normalize(clip_module.OPENAI_DATASET_MEAN, clip_module.OPENAI_DATASET_STD)])
    batch = frames(*hw, n=2)
    ours = clip_preprocess(torch.from_numpy(batch))
    assert ours.shape == (2, 3, 224, 224)
    for i in range(2):
        levels = ((ours[i] - reference(Image.fromarray(batch[i, 0]))) * STD * 255).abs()
        assert levels.max() <= 3.5 and levels.mean() < 0.3


def upstream_patches(image: np.ndarray) -> torch.Tensor:
    """LIQE's test-time patches, written after ImageDataset2.__getitem__ with utils._preprocess2
    (AdaptiveResize(768, image_size=224 for frames under 224), ToTensor, Normalize, unfold)."""
    pil = Image.fromarray(image)
    short = min(pil.size)
    if short < 224 or short >= 768:
        pil = T.Resize(224 if short < 224 else 768, interpolation=T.InterpolationMode.BILINEAR)(pil)
    x = T.Normalize(clip_module.OPENAI_DATASET_MEAN, clip_module.OPENAI_DATASET_STD)(T.ToTensor()(pil))[None]
    step = 48 if max(x.shape[-2:]) >= 1024 else 32
    patches = x.unfold(2, 224, step).unfold(3, 224, step).permute(2, 3, 0, 1, 4, 5).reshape(-1, 3, 224, 224)
    num = min(15, patches.shape[0])
    return patches[torch.arange(num) * max(1, patches.shape[0] // 15)]


@pytest.mark.parametrize("hw, count", [((144, 192), 3), ((406, 720), 15), ((720, 1280), 15), ((1080, 1920), 15)])
def test_liqe_patches_match_its_test_time_code(hw, count):
    batch = frames(*hw, n=1)
    ours = liqe_patches(torch.from_numpy(batch))[0]
    reference = upstream_patches(batch[0, 0])
    assert ours.shape == reference.shape == (count, 3, 224, 224)
    levels = ((ours - reference) * STD * 255).abs()
    assert levels.max() <= 3.5 and levels.mean() < 0.3


def test_liqe_patch_grid_by_hand():
    """406 x 720 stays native (short side < 768), stride 32: a 6 x 16 grid of 96 patches, every
    6th taken; 1920 x 1080 becomes 1365 x 768, stride 48: 12 x 24 = 288, every 19th."""
    stride, rows, cols = liqe_module.patch_grid(406, 720)
    assert stride == 32 and rows.tolist() == [(6 * i) // 16 for i in range(15)]
    assert cols.tolist() == [(6 * i) % 16 for i in range(15)]
    stride, rows, cols = liqe_module.patch_grid(768, 1365)
    assert stride == 48 and (rows * 24 + cols).tolist() == [19 * i for i in range(15)]
    batch = torch.from_numpy(frames(406, 720, n=1))
    x = (batch[0, 0].permute(2, 0, 1).float() / 255 - MEAN) / STD
    torch.testing.assert_close(liqe_patches(batch)[0, 7], x[:, 32 * 2:32 * 2 + 224, 32 * 10:32 * 10 + 224])


# --- Outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["clip", "clip:prompt", "liqe"])
def test_features_are_deterministic_across_setups_and_batch_splits(tiny, spec):
    batch = frames(48, 64)
    first, second = ready(spec), ready(spec)
    whole = run(first, batch)
    assert whole.dtype == np.float32 and whole.shape == (3, first.step_dim) and np.isfinite(whole).all()
    np.testing.assert_array_equal(whole, run(second, batch))
    split = np.concatenate([run(second, batch[:1]), run(second, batch[1:])])
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)


def test_clip_embedding_is_a_unit_vector_of_the_preprocessed_frame(tiny):
    ex = ready("clip")
    batch = frames(406, 720)
    out = ex.forward(batch)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        direct = ex.model.encode_image(clip_preprocess(torch.from_numpy(batch)))
    np.testing.assert_allclose(out, torch.nn.functional.normalize(direct, dim=-1).numpy(), atol=1e-6)


def test_clip_prompt_is_image_embedding_prompt_embedding_and_their_cosine(tiny):
    plain, prompt = ready("clip"), ready("clip:prompt")  # same seeded random weights
    batch = frames(406, 720)
    steps = np.arange(len(batch))
    with pytest.raises(TypeError, match="forward_item"):
        prompt.forward(batch)
    with pytest.raises(ValueError, match="prompt is empty"):
        prompt.forward_item(batch, steps, "  ")
    out = prompt.forward_item(batch, steps, "a red car on a wet road")
    image, text, cosine = out[:, :512], out[:, 512:1024], out[:, 1024]
    np.testing.assert_allclose(image, plain.forward(batch), atol=1e-6)
    assert (text == text[0]).all()
    np.testing.assert_allclose(np.linalg.norm(text[0]), 1.0, atol=1e-5)
    np.testing.assert_allclose(cosine, image @ text[0], atol=1e-5)
    other = prompt.forward_item(batch, steps, "a red car on a wet road at night")[:, 512:1024]
    assert not np.allclose(other, text)
    long_prompt = " ".join(["a very long prompt about a cat"] * 40)  # far beyond 77 tokens: truncated
    assert np.isfinite(prompt.forward_item(batch, steps, long_prompt)).all()


def test_liqe_marginals_and_score_follow_from_the_joint_logits(tiny):
    ex = ready("liqe")
    out = ex.forward(frames(406, 720)).astype(np.float64)
    logits, marginals, score, embedding = out[:, :495], out[:, 495:520], out[:, 520], out[:, 521:]
    joint = np.exp(logits - logits.max(1, keepdims=True))
    joint = (joint / joint.sum(1, keepdims=True)).reshape(-1, 5, 9, 11)
    np.testing.assert_allclose(marginals[:, :5], joint.sum((2, 3)), atol=1e-5)
    np.testing.assert_allclose(marginals[:, 5:14], joint.sum((1, 3)), atol=1e-5)
    np.testing.assert_allclose(marginals[:, 14:], joint.sum((1, 2)), atol=1e-5)
    np.testing.assert_allclose(score, joint.sum((2, 3)) @ np.arange(1, 6), atol=1e-5)
    assert ((score >= 1) & (score <= 5)).all()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_liqe_averages_patch_logits_as_its_code_does(tiny):
    ex = ready("liqe")
    batch = frames(406, 720, n=1)
    with torch.inference_mode():
        patches = liqe_patches(torch.from_numpy(batch))[0]
        unit = torch.nn.functional.normalize(ex.model.encode_image(patches), dim=-1)
        text = torch.nn.functional.normalize(ex.model.encode_text(clip_module.tokenizer()(PROMPTS)), dim=-1)
        logits = (ex.model.logit_scale.exp() * unit @ text.T).mean(0)
    np.testing.assert_allclose(ex.forward(batch)[0, :495], logits.numpy(), rtol=1e-4, atol=1e-4)


# --- Real videos through the manifest -----------------------------------------------------------


@pytest.mark.realdata
def test_real_videos_extract_end_to_end(tiny, realdata, tmp_path):
    """A 406x720 portrait clip and a 192x144 clip (below LIQE's 224 patch, so enlarged)."""
    files = {"dover_1724": "VQAssessment+DOVER/demo/1724.mp4",
             "dover_FEQ": "VQAssessment+DOVER/demo/FEQ-gdkTN4Q_000008_000018.mp4"}
    for vid, rel in files.items():
        (tmp_path / f"{vid}.mp4").symlink_to(realdata / rel)
    prompts = {"dover_1724": "a person talking to the camera", "dover_FEQ": "a street at dusk"}
    specs = ["clip", "clip:prompt", "liqe"]
    pd.DataFrame({"video_id": list(files), "path": [f"{v}.mp4" for v in files],
                  "prompt": [prompts[v] for v in files]}).to_csv(tmp_path / "manifest.csv", index=False)
    report = extract_manifest(tmp_path / "manifest.csv", tmp_path / "bank.zarr", specs, weights=RANDOM,
                              progress=False)
    assert report.n_failed == 0
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    keys = [random_key(s) for s in specs]
    reference = ready("clip:prompt")  # the same seeded random weights
    for vid in files:
        r = int(bank.rows_of([file_digest(tmp_path / f"{vid}.mp4")])[0])
        steps = {}
        for spec, key in zip(specs, keys):
            group = bank.group(key)
            assert bank.status(key)[r] == OK
            n = int(group["mask"][r].sum())
            steps[spec] = group["steps"][r][:n]
            assert n == round(bank.items["n_frames"][r] / bank.items["fps"][r]) and np.isfinite(steps[spec]).all()
        np.testing.assert_allclose(np.linalg.norm(steps["clip"], axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(steps["clip:prompt"][:, :512], steps["clip"], atol=1e-6)
        with torch.inference_mode():  # the item's own prompt reached it
            text = reference.encode_texts([prompts[vid]])[0].numpy()
        np.testing.assert_allclose(steps["clip:prompt"][:, 512:1024], np.tile(text, (n, 1)), atol=1e-6)
        marginals = steps["liqe"][:, 495:520]
        for part in (slice(0, 5), slice(5, 14), slice(14, 25)):
            np.testing.assert_allclose(marginals[:, part].sum(1), 1.0, atol=1e-5)


def random_key(spec: str) -> str:
    """The bank group of ``spec`` with random weights."""
    ex = extractors.create(spec)
    ex.adopt(RANDOM)
    return ex.key
