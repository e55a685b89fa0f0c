"""Template scoring (``templates:MODEL[@SET]``): specs, template files, official checkpoint structure, outputs.

Official structure: every model is checked at full size against its key manifest on the meta device
(no memory, no time, even for ViT-L/14's 428M parameters), and a checkpoint of exactly those names
and shapes (meta tensors, in the file's own layout) is loaded strictly through the extractor's
``state_dict_from``. How each manifest was derived is in its ``how``: ``clip_vit_b32.json`` (shared
with ``clip``/``liqe``) and ``clip_vit_l14.json`` from open_clip 3.3.0's OpenAI-compatible build,
cross-checked against the sizes OpenAI's ``build_model`` reads off its files (L/14: width 1024,
24 layers, 257 positions; text width 768); the SigLIP ones (``siglip_vit_b16``,
``siglip_vit_b16_512``, ``siglip2_vit_b16``) from open_clip 3.3.0's built-in configurations with
timm 1.0.31's ViT, the model the Hub's ``open_clip_model.safetensors`` was converted into and is
loaded strictly by open_clip. No real checkpoint was available here.

Behaviour runs on tiny models of the same families (a one-layer 64-wide OpenAI CLIP; timm's
``test_vit`` trunk with SigLIP's attention pooling and a one-layer text tower), with seeded random
weights. ``transformers`` is not installed here, so the SigLIP tokenizer is replaced by a stand-in
that records what it was asked; the real one is open_clip's ``HFTokenizer`` on the snapshot folder.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.model import CLIP
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import save_file

import extractors
from extractors import templates as tm
from extractors.clip import ClipArchitecture
from extractors.deep import load_strict
from extractors.templates import BUILT_IN, MODELS, Templates, read_template_file
from featbank.bank.store import FeatureBank
from featbank.errors import FeatbankError, UsageError, WeightsMissingError
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.weights import WeightsPolicy
from tests.keymanifest import load_manifest, shape_differences

RANDOM = WeightsPolicy(random=True)
MANIFESTS = {"clip-b32": "clip_vit_b32", "clip-l14": "clip_vit_l14", "siglip-b16": "siglip_vit_b16",
             "siglip-b16-512": "siglip_vit_b16_512", "siglip2-b16": "siglip2_vit_b16"}
TINY_CLIP = ClipArchitecture(vision_width=64, vision_layers=1, text_width=64, text_layers=1)
TINY_SIGLIP = {
    "embed_dim": 64, "init_logit_bias": -10, "custom_text": True,
    "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 64, "heads": 2, "layers": 1,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
}


def frames(h: int, w: int, n: int = 3, seed: int = 0) -> np.ndarray:
    """Key-frame batches ``(n, 1, h, w, 3)``: smooth colour regions plus grain."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
        out.append(np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)[None])
    return np.stack(out)


class StandInTokenizer:
    """The SigLIP tokenizer's place in tests (``transformers`` is not installed): records what it was
    built from and asked, and hashes words as the dry-run tokenizer does."""

    def __init__(self, folder: Path, context_length: int, options: dict) -> None:
        self.folder, self.context_length, self.options, self.asked = folder, context_length, options, []
        self.tokenize = tm.hashed_words(context_length, TINY_SIGLIP["text_cfg"]["vocab_size"])

    def __call__(self, texts):
        self.asked.append(list(texts))
        return self.tokenize(texts)


@pytest.fixture
def tiny(monkeypatch):
    """Tiny models under the real names; the SigLIP tokenizer is the stand-in (made ones are kept)."""
    made: list[StandInTokenizer] = []

    def make(folder, context_length, options):
        made.append(StandInTokenizer(folder, context_length, options))
        return made[-1]

    monkeypatch.setitem(MODELS, "clip-b32", replace(MODELS["clip-b32"], architecture=TINY_CLIP))
    monkeypatch.setitem(MODELS, "siglip-b16", replace(MODELS["siglip-b16"], config=TINY_SIGLIP))
    monkeypatch.setattr(tm, "hf_tokenizer", make)
    return made


def tokenizer_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in tm.SIGLIP_TOKENIZER_FILES:
        (folder / name).write_text("{}")
    return folder


def ready(spec: str, policy: WeightsPolicy = RANDOM) -> Templates:
    ex = extractors.create(spec)
    ex.setup("cpu", policy)
    return ex


# --- Registry, specs, template sets ---------------------------------------------------------------


def test_specs_pick_model_and_template_set():
    ex = extractors.create("templates:clip-b32")
    assert type(ex) is Templates and ex.templates == BUILT_IN["finevd"] and ex.weights == MODELS["clip-b32"].weights
    names = ex.feature_names()
    assert ex.step_dim == 30 + 6 + 512 and len(set(names)) == ex.step_dim
    assert names[:5] == [f"p_color_{q}" for q in tm.LEVELS] and names[30:36] == [
        f"score_{d}" for d in tm.FINEVD_DIMENSIONS] and names[36] == "emb_000"
    aigc = extractors.create("templates:clip-l14@aigc")
    assert aigc.feature_names()[:6] == [f"p_{q}" for q in tm.LEVELS] + ["score"] and aigc.step_dim == 6 + 768
    assert extractors.create("templates:siglip2-b16@quality").step_dim == 6 + 768
    assert BUILT_IN["finevd"].sentences[:2] == ["a photo with color bad quality", "a photo with color poor quality"]
    assert BUILT_IN["aigc"].sentences[-1] == "a photo with perfect quality, which matches prompt"


@pytest.mark.parametrize("spec, message", [
    ("templates", "needs a model"),
    ("templates:vit-h14", "unknown model 'vit-h14'.*clip-b32, clip-l14, siglip-b16"),
    ("templates:clip-b32@nonesuch", "'nonesuch' is neither a built-in template set"),
])
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        extractors.create(spec)


def test_weights_of_every_model_are_declared_and_listed():
    l14 = MODELS["clip-l14"].weights
    assert l14.filename == "ViT-L-14.pt" and l14.sha256 in l14.source and l14.source.endswith("/ViT-L-14.pt")
    siglip = MODELS["siglip-b16"].weights
    assert siglip.snapshot and siglip.filename == "timm/ViT-B-16-SigLIP/open_clip_model.safetensors"
    assert siglip.hf_repo == "timm/ViT-B-16-SigLIP" and siglip.license == "Apache-2.0" and len(siglip.sha256) == 64
    assert MODELS["siglip2-b16"].weights.sha256 is None  # none published: pinned on import
    # clip-b32 reads clip's file, listed there; every other model is listed as a variant
    assert set(Templates.weight_variants) == {f"templates:{m}" for m in MODELS} - {"templates:clip-b32"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "set.toml"
    path.write_text(text)
    return path


BAD_FILES = [
    ("not_toml", "template = 'a {q} photo", "is not valid TOML"),
    ("unknown_key", "template = 'a {q} photo'\nlevels = ['low', 'high']\nweights = [1, 2]", "unknown keys weights"),
    ("no_q", "template = 'a photo of {d}'\nlevels = ['low', 'high']\ndimensions = ['blur']", "has no {q}"),
    ("other_field", "template = 'a {q} photo of {scene}'\nlevels = ['low', 'high']", r"not \{scene\}"),
    ("format_spec", "template = 'a {q:>5} photo'\nlevels = ['low', 'high']", r"not \{q:>5\}"),
    ("bad_brace", "template = 'a {q} photo }'\nlevels = ['low', 'high']", "not a valid template"),
    ("one_level", "template = 'a {q} photo'\nlevels = ['good']", "'levels' needs at least 2"),
    ("levels_not_words", "template = 'a {q} photo'\nlevels = ['low', 3]", "'levels' must be a list of words"),
    ("same_feature_name", "template = 'a {q} photo'\nlevels = ['very good', 'very-good']", "'levels' must be distinct"),
    ("dimensions_missing", "template = 'a {q} {d} photo'\nlevels = ['low', 'high']", "'dimensions' must be a list"),
    ("dimensions_without_d", "template = 'a {q} photo'\nlevels = ['low', 'high']\ndimensions = ['blur']",
     "has no {d}"),
    ("no_template", "levels = ['low', 'high']", "'template' must be a non-empty string"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_template_files_are_refused_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=re.escape(str(path)) + ".*" + message):
        extractors.create(f"templates:clip-b32@{path}")


def test_template_file_sets_features_and_the_bank_key(tmp_path):
    """The key holds the template text: a file with the built-in text shares the built-in's group,
    any changed word makes a new one (and random weights keep theirs apart)."""
    same = write(tmp_path, 'template = "a photo with {d} {q} quality"\nlevels = ["bad", "poor", "fair", "good", '
                           '"perfect"]\ndimensions = ["color", "noise", "artifact", "blur", "temporal", "overall"]')
    assert extractors.create(f"templates:clip-b32@{same}").key == extractors.create("templates:clip-b32").key
    custom = tmp_path / "adverbs.toml"
    custom.write_text('template = "a {q} image matching the prompt"\n'
                      'levels = ["badly", "poorly", "fairly", "well", "perfectly"]\n')
    ex = extractors.create(f"templates:clip-b32@{custom}")
    assert ex.templates == read_template_file(custom) and ex.feature_names()[:6] == [
        "p_badly", "p_poorly", "p_fairly", "p_well", "p_perfectly", "score"]
    keys = {extractors.create(s).key for s in ("templates:clip-b32", "templates:clip-b32@quality",
                                               "templates:clip-b32@aigc", f"templates:clip-b32@{custom}",
                                               "templates:clip-l14", "templates:siglip-b16")}
    assert len(keys) == 6
    custom.write_text(custom.read_text().replace("matching", "that matches"))
    assert extractors.create(f"templates:clip-b32@{custom}").key != ex.key
    random = extractors.create("templates:clip-b32")
    random.adopt(RANDOM)
    assert random.key != extractors.create("templates:clip-b32").key


# --- Official checkpoint structure (full size, meta device) ---------------------------------------


def meta_checkpoint(manifest: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in load_manifest(manifest)["params"].items()}


@pytest.mark.parametrize("model", sorted(MANIFESTS))
def test_architecture_matches_the_official_checkpoint_and_loads_it_strictly(model):
    ex = extractors.create(f"templates:{model}")
    with torch.device("meta"):
        net = ex.build_model()
    assert shape_differences(net, MANIFESTS[model]) == []
    state = meta_checkpoint(MANIFESTS[model])
    if model.startswith("clip"):  # OpenAI's archives also hold three non-parameter entries
        state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                     vocab_size=torch.tensor(49408))
    else:  # some open_clip files store the scalars as [1]: open_clip's loader reshapes them, so do we
        state["logit_scale"] = torch.empty(1, device="meta")
    load_strict(net, ex.state_dict_from(state), model)
    assert load_manifest(MANIFESTS[model])["params"]["logit_scale"] == []


@pytest.mark.parametrize("model, key", [("clip-l14", "transformer.resblocks.11.attn.in_proj_weight"),
                                        ("siglip2-b16", "text.token_embedding.weight")])
def test_a_checkpoint_of_another_size_is_refused_naming_the_key(model, key):
    ex = extractors.create(f"templates:{model}")
    with torch.device("meta"):
        net = ex.build_model()
    state = meta_checkpoint(MANIFESTS[model])
    state[key] = torch.empty(7, 7, device="meta")
    with pytest.raises(WeightsMissingError, match=re.escape(f"{key} [7, 7]")):
        load_strict(net, ex.state_dict_from(state), model)


def test_manifests_have_the_published_sizes():
    l14 = load_manifest("clip_vit_l14")["params"]
    assert l14["visual.conv1.weight"] == [1024, 3, 14, 14] and l14["visual.positional_embedding"] == [257, 1024]
    assert l14["visual.proj"] == [1024, 768] and l14["token_embedding.weight"] == [49408, 768]
    assert sum(k.startswith("visual.transformer.resblocks.") and k.endswith(".ln_1.weight") for k in l14) == 24
    siglip, siglip2, s512 = (load_manifest(n)["params"] for n in ("siglip_vit_b16", "siglip2_vit_b16",
                                                                   "siglip_vit_b16_512"))
    assert siglip["visual.trunk.pos_embed"] == [1, 196, 768] and s512["visual.trunk.pos_embed"] == [1, 1024, 768]
    assert siglip["text.token_embedding.weight"] == [32000, 768]  # T5 sentencepiece vocabulary
    assert siglip2["text.token_embedding.weight"] == [256000, 768]  # Gemma vocabulary
    assert siglip["logit_bias"] == [] and siglip["text.text_projection.bias"] == [768]


# --- Weights and tokenizer on disk -----------------------------------------------------------------


@pytest.mark.parametrize("model, filename", [("clip-l14", "ViT-L-14.pt"),
                                             ("siglip-b16", "timm/ViT-B-16-SigLIP/open_clip_model.safetensors")])
def test_missing_weights_name_file_checksum_and_source(model, filename, tmp_path):
    spec = MODELS[model].weights
    with pytest.raises(WeightsMissingError) as error:
        ready(f"templates:{model}", WeightsPolicy(directory=tmp_path))
    message = str(error.value)
    assert f"{filename} was not found" in message and spec.sha256 in message and spec.source in message


def test_openai_file_loads_through_setup_and_templates_are_embedded_once(tiny, tmp_path, monkeypatch):
    state = {k: torch.full_like(v, 0.01) for k, v in TINY_CLIP.build().state_dict().items()}
    torch.save(state, tmp_path / "ViT-B-32.pt")  # a re-saved state dict; OpenAI's archive is tested in test_clip_liqe
    monkeypatch.setitem(MODELS, "clip-b32", replace(MODELS["clip-b32"], weights=replace(
        MODELS["clip-b32"].weights, sha256=None)))
    calls = []
    encode_text = CLIP.encode_text
    monkeypatch.setattr(CLIP, "encode_text", lambda model, tokens: calls.append(tokens) or encode_text(model, tokens))
    ex = ready("templates:clip-b32", WeightsPolicy(directory=tmp_path))
    assert not ex.random_weights and torch.all(ex.model.visual.proj == 0.01)
    ex.forward(frames(48, 64))
    ex.forward(frames(48, 64))
    assert len(calls) == 1 and calls[0].shape == (30, 77)  # 6 x 5 sentences, once per set-up
    assert ex.text_features.shape == (30, 512)


def test_siglip_snapshot_loads_strictly_with_its_own_tokenizer(tiny, tmp_path, monkeypatch):
    backbone = MODELS["siglip-b16"]
    monkeypatch.setitem(MODELS, "siglip-b16", replace(backbone, sha256=None))
    folder = tokenizer_files(tmp_path / "timm" / "ViT-B-16-SigLIP")
    state = {k: torch.full_like(v, 0.02) for k, v in backbone.build().state_dict().items()}
    state["logit_scale"] = state["logit_scale"].reshape(1)
    save_file(state, str(folder / "open_clip_model.safetensors"))
    ex = ready("templates:siglip-b16@quality", WeightsPolicy(directory=tmp_path))
    assert torch.all(ex.model.text.text_projection.weight == 0.02)
    (made,) = tiny
    assert made.folder == folder and made.context_length == 16 and made.options == {"clean": "canonicalize"}
    assert made.asked == [BUILT_IN["quality"].sentences]
    bad = dict(state, **{"visual.trunk.attn_pool.latent": torch.zeros(1, 2, 64)})
    save_file(bad, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(WeightsMissingError, match=r"visual\.trunk\.attn_pool\.latent \[1, 2, 64\] vs \[1, 1, 64\]"):
        ready("templates:siglip-b16", WeightsPolicy(directory=tmp_path))


def test_siglip_without_tokenizer_files_says_which_and_where(tiny, tmp_path, monkeypatch):
    """Real weights need the real tokenizer; a random-weights dry run hashes words instead (and
    uses the real tokenizer when its files are there)."""
    monkeypatch.setitem(MODELS, "siglip-b16", replace(MODELS["siglip-b16"], sha256=None))
    folder = tmp_path / "timm" / "ViT-B-16-SigLIP"
    folder.mkdir(parents=True)
    save_file(MODELS["siglip-b16"].build().state_dict(), str(folder / "open_clip_model.safetensors"))
    with pytest.raises(WeightsMissingError, match=r"tokenizer \(tokenizer\.json, tokenizer_config\.json\) is "
                                                  r"needed.*real weights.*" + re.escape(str(folder))):
        ready("templates:siglip-b16", WeightsPolicy(directory=tmp_path))
    dry = ready("templates:siglip-b16", WeightsPolicy(directory=tmp_path / "empty", random=True))
    assert dry.random_weights and not tiny  # the stand-in, not the snapshot's tokenizer
    out = dry.forward(frames(40, 48, n=2))
    assert np.isfinite(out).all()
    tokenizer_files(tmp_path / "timm" / "ViT-B-16-SigLIP")
    assert ready("templates:siglip-b16", WeightsPolicy(directory=tmp_path, random=True)).random_weights and tiny


def test_the_dry_run_tokenizer_hashes_words_into_the_vocabulary():
    tokens = tm.hashed_words(8, 50)(["a photo with bad quality", "a photo with good quality"])
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert (tokens[:, 5:] == 1).all() and (tokens[:, :5] >= 2).all() and (tokens < 50).all()
    assert (tokens[0, :3] == tokens[1, :3]).all() and tokens[0, 3] != tokens[1, 3]


def test_real_siglip_tokenizer_needs_transformers(tmp_path, monkeypatch):
    """Without ``transformers`` (as here) the error says what to install, not an ImportError trace."""
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(FeatbankError, match="read with transformers, which is not installed"):
        tm.hf_tokenizer(tokenizer_files(tmp_path), 64, {"clean": "canonicalize"})


# --- Preprocessing and outputs ---------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(48, 64), (406, 720), (720, 406)])
def test_siglip_preprocessing_matches_open_clips_pil_transform(hw):
    """open_clip's eval transform for SigLIP (squash to 224, bicubic, mean/std 0.5) on PIL images is
    the reference; ours runs on tensors and agrees to PIL's fixed-point weights (two grey levels
    at most, well under one on average)."""
    reference = image_transform_v2(PreprocessCfg(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic",
                                                 resize_mode="squash"), is_train=False)
    batch = frames(*hw, n=2)
    ours = MODELS["siglip-b16"].preprocess(torch.from_numpy(batch))
    assert ours.shape == (2, 3, 224, 224)
    for i in range(2):
        levels = ((ours[i] - reference(Image.fromarray(batch[i, 0]))) * 0.5 * 255).abs()
        assert levels.max() <= 2.01 and levels.mean() < 0.3


@pytest.mark.parametrize("spec", ["templates:clip-b32", "templates:clip-b32@aigc", "templates:siglip-b16"])
def test_probabilities_scores_and_embedding_follow_from_the_cosine_logits(tiny, tmp_path, spec):
    ex = ready(spec, WeightsPolicy(directory=tokenizer_files(tmp_path / "timm" / "ViT-B-16-SigLIP").parents[1],
                                   random=True))
    batch = frames(90, 120)
    out = ex.forward(batch).astype(np.float64)
    n_dims, n_levels = ex.templates.n_dimensions, len(ex.templates.levels)
    assert out.shape == (3, ex.step_dim) and np.isfinite(out).all()
    p = out[:, :n_dims * n_levels].reshape(3, n_dims, n_levels)
    score, embedding = out[:, n_dims * n_levels:n_dims * (n_levels + 1)], out[:, n_dims * (n_levels + 1):]
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(score, p @ np.arange(1, n_levels + 1), atol=1e-5)
    assert ((score >= 1) & (score <= n_levels)).all()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():  # the same numbers computed directly from the model
        image = torch.nn.functional.normalize(ex.model.encode_image(ex.backbone.preprocess(torch.from_numpy(batch))),
                                              dim=-1)
        logits = ex.model.logit_scale.exp() * image @ ex.text_features.T
    np.testing.assert_allclose(embedding, image.numpy(), atol=1e-5)
    np.testing.assert_allclose(p, logits.view(3, n_dims, n_levels).softmax(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(ex.forward(batch[1:2]), out[1:2], rtol=1e-5, atol=1e-6)  # batch-independent


# --- Through the extraction pipeline ---------------------------------------------------------------


def test_two_template_sets_extract_into_two_bank_groups(tiny, make_video, tmp_path):
    videos = [make_video(f"v{i}.mp4", n=20, fps=10, seed=i, audio=False) for i in range(2)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"video_id": ["a", "b"], "path": [v.name for v in videos]}).to_csv(manifest, index=False)
    specs = ["templates:clip-b32", "templates:clip-b32@aigc"]
    report = extract_manifest(manifest, tmp_path / "bank.zarr", specs, weights=RANDOM, progress=False)
    assert report.n_failed == 0
    bank = FeatureBank(tmp_path / "bank.zarr", mode="r")
    keys = bank.keys_for("templates")
    assert len(keys) == 2
    for spec in specs:
        ex = extractors.create(spec)
        ex.adopt(RANDOM)
        group = bank.group(ex.key)
        assert group.attrs["config"]["options"]["templates"]["template"] == ex.templates.template
        steps = group["steps"][:]
        assert steps.shape[-1] == ex.step_dim and group["mask"][:].sum() == 4  # 2 videos x 2 s, one key frame each
        n = ex.templates.n_dimensions * len(ex.templates.levels)
        valid = steps[group["mask"][:].astype(bool)]
        np.testing.assert_allclose(valid[:, :n].reshape(len(valid), -1, len(ex.templates.levels)).sum(-1), 1.0,
                                   atol=1e-5)
