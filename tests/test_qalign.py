"""Q-Align (``qalign``): everything that can be checked without the 7B model and without ``transformers``.

The model itself (15 GB of weights, GPU) cannot run here. What is tested is every piece around
it: the level → score maths, the prompt and level-token assembly, the preprocessing against a
PIL reference of the official ``expand2square`` + ``CLIPImageProcessor``, our tensor list against
the manifest derived from the official mPLUG-Owl2 definition, the snapshot check that runs before
any load, and the errors for a missing snapshot, a missing ``transformers`` and random weights.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import extractors
from extractors.qalign import (
    HF_REPO,
    IMAGE_TOKEN_INDEX,
    INSTALL_HINT,
    LEVELS,
    PROMPT,
    QAlign,
    check_snapshot,
    expected_parameters,
    level_features,
    level_token_ids,
    prompt_token_ids,
    qalign_preprocess,
    safetensors_shapes,
)
from featbank.errors import FeatbankError, WeightsMissingError
from featbank.extraction.weights import WeightsPolicy
from tests.conftest import moving_frames
from tests.keymanifest import load_manifest

MANIFEST = "qalign_keys"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, which one-align's image processor uses
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS = 1


def write_snapshot(folder: Path, params: dict[str, list[int]], shards: int = 2) -> Path:
    """A snapshot with the official container layout: an index and safetensors shards whose headers
    declare every tensor (dtype and shape); the data itself is left out, as the check reads headers only."""
    folder.mkdir(parents=True)
    names = list(params)
    weight_map = {}
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for name in names[s::shards]:
            nbytes = 2 * int(np.prod(params[name]))
            header[name] = {"dtype": "F16", "shape": params[name], "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = shard
        blob = json.dumps(header).encode()
        (folder / shard).write_bytes(struct.pack("<Q", len(blob)) + blob)
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


# --- Levels and score ------------------------------------------------------------------------------


def test_equal_logits_give_uniform_levels_and_the_middle_score() -> None:
    out = level_features(torch.zeros(2, 5))
    assert out.shape == (2, 6) and out.dtype == torch.float32
    np.testing.assert_allclose(out[:, :5].numpy(), 0.2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 5].numpy(), 3.0, rtol=1e-6)  # (5+4+3+2+1) / 5


def test_a_dominant_level_gives_its_score() -> None:
    logits = torch.full((5, 5), -30.0)
    logits[torch.arange(5), torch.arange(5)] = 30.0  # row i: level i (excellent..bad) certain
    np.testing.assert_allclose(level_features(logits)[:, 5].numpy(), [5, 4, 3, 2, 1], atol=1e-5)


def test_score_is_the_expectation_of_the_softmax() -> None:
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).half()  # the model's fp16 logits
    x = logits.double().numpy()
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    out = level_features(logits).numpy()
    np.testing.assert_allclose(out[:, :5], p, atol=1e-6)
    np.testing.assert_allclose(out[:, 5], p @ np.array([5, 4, 3, 2, 1.0]), atol=1e-5)


# --- Prompt and level tokens -----------------------------------------------------------------------


def char_tokenize(text: str) -> list[int]:
    """A stand-in tokenizer that, like LLaMA's, prefixes every call with BOS."""
    return [BOS] + [ord(c) for c in text]


def test_prompt_ids_keep_one_bos_and_mark_the_image() -> None:
    before = "USER: How would you rate the quality of this image?\n"
    after = "\nASSISTANT: The quality of the image is"
    assert PROMPT == before + "<|image|>" + after
    expected = [BOS] + [ord(c) for c in before] + [IMAGE_TOKEN_INDEX] + [ord(c) for c in after]
    assert prompt_token_ids(char_tokenize, BOS) == expected


def test_prompt_ids_without_bos_drop_nothing() -> None:
    assert prompt_token_ids(lambda t: [ord(c) for c in t], BOS, "ab<|image|>c") == [97, 98, IMAGE_TOKEN_INDEX, 99]


def test_level_tokens_are_the_token_after_bos() -> None:
    vocab = {word: 100 + i for i, word in enumerate(LEVELS)}
    assert level_token_ids(lambda w: [BOS, vocab[w]], BOS) == [100, 101, 102, 103, 104]


def test_a_level_word_split_into_pieces_is_refused() -> None:
    with pytest.raises(FeatbankError, match="'excellent'"):
        level_token_ids(lambda w: [BOS, 7, 8], BOS)


# --- Preprocessing -------------------------------------------------------------------------------


def reference_preprocess(frame: np.ndarray) -> np.ndarray:
    """The official path on one frame: ``expand2square`` with PIL, then ``CLIPImageProcessor``'s
    PIL bicubic resize to 448 (8 bits to 8 bits), ``/ 255`` and normalisation."""
    image = Image.fromarray(frame)
    w, h = image.size
    fill = tuple(int(m * 255) for m in CLIP_MEAN)
    if w != h:
        square = Image.new("RGB", (max(w, h),) * 2, fill)
        square.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
        image = square
    x = np.asarray(image.resize((448, 448), Image.BICUBIC), dtype=np.float32) / 255.0
    return ((x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)).transpose(2, 0, 1)


@pytest.mark.parametrize(("h", "w"), [(48, 64), (720, 406), (300, 300)])
def test_preprocessing_matches_the_official_pil_path(h: int, w: int) -> None:
    frames = moving_frames(2, h, w)
    ours = qalign_preprocess(torch.from_numpy(frames), CLIP_MEAN, CLIP_STD, 448).numpy()
    assert ours.shape == (2, 3, 448, 448)
    std = np.array(CLIP_STD, np.float32)[:, None, None]
    for frame, out in zip(frames, ours):
        grey_levels = np.abs(out - reference_preprocess(frame)) * 255 * std
        assert grey_levels.max() <= 1 + 1e-3  # PIL's fixed-point weights round a few pixels the other way
        assert (grey_levels > 0.5).mean() < 2e-3


def test_padding_is_the_mean_colour_and_the_image_is_centred() -> None:
    """A 10 x 20 frame becomes a 20 x 20 square: rows 0-4 and 15-19 are the pad (int(255 m)), the
    frame fills rows 5-14; at 20 px no resize happens, so the values are exact."""
    frames = torch.full((1, 10, 20, 3), 200, dtype=torch.uint8)
    out = qalign_preprocess(frames, CLIP_MEAN, CLIP_STD, 20)
    pad = [(int(m * 255) / 255 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]
    image = [(200 / 255 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]
    for c in range(3):
        np.testing.assert_allclose(out[0, c, :5].numpy(), pad[c], atol=1e-6)
        np.testing.assert_allclose(out[0, c, 15:].numpy(), pad[c], atol=1e-6)
        np.testing.assert_allclose(out[0, c, 5:15].numpy(), image[c], atol=1e-6)


# --- Official names and shapes, and the snapshot check -----------------------------------------------


def test_expected_parameters_match_the_official_manifest() -> None:
    official = load_manifest(MANIFEST)["params"]
    ours = expected_parameters()
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_a_snapshot_built_from_the_manifest_passes(tmp_path: Path) -> None:
    check_snapshot(write_snapshot(tmp_path / "one-align", load_manifest(MANIFEST)["params"]))


def test_a_renamed_tensor_is_refused_by_name(tmp_path: Path) -> None:
    params = dict(load_manifest(MANIFEST)["params"])
    params["model.layers.3.self_attn.k_proj.weight"] = params.pop("model.layers.3.self_attn.k_proj.multiway.1.weight")
    with pytest.raises(WeightsMissingError) as error:
        check_snapshot(write_snapshot(tmp_path / "one-align", params))
    message = str(error.value)
    assert "1 missing (model.layers.3.self_attn.k_proj.multiway.1.weight)" in message
    assert "1 unexpected (model.layers.3.self_attn.k_proj.weight)" in message


def test_a_changed_shape_in_a_shard_header_is_refused(tmp_path: Path) -> None:
    params = dict(load_manifest(MANIFEST)["params"])
    params["model.visual_abstractor.query_embeds"] = [1, 32, 1024]
    expected = re.escape("shape mismatch: model.visual_abstractor.query_embeds [1, 32, 1024] vs [1, 64, 1024]")
    with pytest.raises(WeightsMissingError, match=expected):
        check_snapshot(write_snapshot(tmp_path / "one-align", params))


def test_shapes_are_read_from_real_safetensors_headers(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"a.weight": torch.zeros(3, 4, dtype=torch.float16), "b": torch.zeros(5)}, tmp_path / "x.safetensors")
    assert safetensors_shapes(tmp_path / "x.safetensors") == {"a.weight": [3, 4], "b": [5]}
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 40) + b"{not json")
    with pytest.raises(WeightsMissingError, match="bad.safetensors has a damaged safetensors header"):
        safetensors_shapes(tmp_path / "bad.safetensors")


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    index = write_snapshot(tmp_path / "one-align", load_manifest(MANIFEST)["params"])
    (index.parent / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsMissingError, match="incomplete.*model-00002-of-00002.safetensors"):
        check_snapshot(index)


# --- The extractor's set-up ------------------------------------------------------------------------


def test_names_options_and_registry() -> None:
    ex = extractors.create("qalign")
    assert isinstance(ex, QAlign) and ex.step_dim == 5 + 1 + 4096 == len(set(ex.feature_names()))
    assert ex.feature_names()[:6] == ["p_excellent", "p_good", "p_fair", "p_poor", "p_bad", "score"]
    assert ex.sampling.frames_per_step == 1
    assert extractors.create("qalign:4bit").options() == {"quantization": "4bit"}
    assert extractors.create("qalign:8bit").key != ex.key != extractors.create("qalign:4bit").key
    with pytest.raises(FeatbankError, match="8bit or 4bit"):
        extractors.create("qalign:3bit")


def test_missing_snapshot_names_the_file_and_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError) as error:
        QAlign().setup("cpu", WeightsPolicy(directory=tmp_path))
    message = str(error.value)
    assert str(tmp_path / "one-align" / "model.safetensors.index.json") in message
    assert f"https://huggingface.co/{HF_REPO}" in message


def test_missing_transformers_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete, correct snapshot passes the checks; then the missing extra is named."""
    write_snapshot(tmp_path / "one-align", load_manifest(MANIFEST)["params"])
    monkeypatch.setitem(sys.modules, "transformers", None)  # absent, even where the extra is installed
    expected = re.escape(f"needs transformers==4.36.2 and its companions: {INSTALL_HINT}")
    with pytest.raises(FeatbankError, match=expected):
        QAlign().setup("cpu", WeightsPolicy(directory=tmp_path))


def test_a_wrong_snapshot_fails_before_transformers_is_needed(tmp_path: Path) -> None:
    params = dict(load_manifest(MANIFEST)["params"])
    del params["lm_head.weight"]
    write_snapshot(tmp_path / "one-align", params)
    with pytest.raises(WeightsMissingError, match=r"1 missing \(lm_head\.weight\)"):
        QAlign().setup("cpu", WeightsPolicy(directory=tmp_path))


def test_random_weights_are_refused_with_the_reason() -> None:
    with pytest.raises(FeatbankError, match="no random-weights mode"):
        QAlign().setup("cpu", WeightsPolicy(random=True))


def test_a_snapshot_folder_imports_whole_and_its_index_is_pinned(tmp_path: Path, capsys) -> None:
    from featbank.cli import main

    weights = tmp_path / "weights"
    params = load_manifest(MANIFEST)["params"]
    download = write_snapshot(tmp_path / "downloads" / "one-align", params).parent
    (download / "tokenizer.model").write_bytes(b"tokenizer")  # the rest of a snapshot comes along
    (weights / "one-align.partial").mkdir(parents=True)  # left by an interrupted import
    assert main(["weights", "import", str(download), "--weights-dir", str(weights)]) == 0
    assert "for qalign" in capsys.readouterr().out
    copied = weights / "one-align"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in download.iterdir())
    assert not (weights / "one-align.partial").exists()
    lock = json.loads((weights / "featbank-weights.lock.json").read_text())
    assert set(lock) == {"one-align/model.safetensors.index.json"}
    assert main(["weights", "verify", "--load", "--extractor", "qalign", "--weights-dir", str(weights)]) == 0
    (copied / "stale.json").write_text("{}")
    assert main(["weights", "import", str(download), "--weights-dir", str(weights)]) == 0  # again: replaced whole
    assert not (copied / "stale.json").exists() and not (weights / "one-align.replaced").exists()

    other = dict(params)
    other.pop("lm_head.weight")
    changed = write_snapshot(tmp_path / "another" / "one-align", other).parent
    assert main(["weights", "import", str(changed), "--weights-dir", str(weights)]) == 4
    assert "not the file featbank expects" in capsys.readouterr().err
    assert (copied / "tokenizer.model").read_bytes() == b"tokenizer"  # the refused import touched nothing
