"""Offline weights: lookup, checksums, pins, licences, random-weights opt-in, strict loading, and
their trace in the bank — with a tiny deep extractor, so every path runs in milliseconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import extractors
from extractors.deep import DeepExtractor, center_crop, frames_to_float, normalize, resize_short_side
from featbank.bank.store import FeatureBank
from featbank.cli import main
from featbank.bank.matrix import lookup_rows
from featbank.io.manifest import load_manifest
from featbank.errors import BankError, ManifestError, WeightsMissingError
from featbank.extraction.item import extract_item
from featbank.extraction.orchestrate import extract_manifest
from featbank.extraction.weights import (LOCK_NAME, WeightsPolicy, WeightsSpec, candidates, import_weights, resolve,
                              sha256_of)
from featbank.extraction.sampling import KeyFrames

UNPINNED = WeightsSpec("tiny/tinynet.pt", None, "https://example.org/tinynet.pt", "MIT")


class TinyNet(DeepExtractor):
    """A 3→4 channel convolution and a mean: a deep extractor small enough to test every path."""

    name = "test-tinynet"
    version = "1"
    weights = UNPINNED
    batch_size = 2

    @property
    def sampling(self):
        return KeyFrames(max_steps=8)

    def feature_names(self) -> list[str]:
        return [f"c{i}" for i in range(4)]

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3))

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        x = center_crop(resize_short_side(frames_to_float(frames)[:, 0], 16), 16)
        x = normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        return self.model(x).mean((2, 3))


class PromptReader(TinyNet):
    """Reads what ``forward_item`` is given: features are the prompt's length and the step index."""

    name = "test-prompt"
    weights = None
    text_column = "prompt"

    def load_weights(self, path: Path | None) -> None:
        raise AssertionError("needs no weights")

    def forward_item(self, batch: np.ndarray, steps: np.ndarray, text: str | None) -> np.ndarray:
        out = np.full((batch.shape[0], 4), len(text or ""), dtype=np.float32)
        out[:, 1] = steps
        return out


for _cls in (TinyNet, PromptReader):
    extractors.register(_cls)


def save_tiny(path: Path, fill: float = 0.5, rename: str | None = None) -> Path:
    state = {k: torch.full_like(v, fill) for k, v in TinyNet().build_model().state_dict().items()}
    if rename:
        state[rename] = state.pop("0.weight")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)
    return path


@pytest.fixture
def weights_home(tmp_path, monkeypatch) -> Path:
    """An empty weights dir, and the Hugging Face cache found through ``$HF_HOME`` (conftest points
    ``$HF_HUB_CACHE`` elsewhere, and that variable wins)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    d = tmp_path / "weights"
    d.mkdir()
    return d


def test_missing_file_names_it_its_checksum_source_and_the_places_searched(weights_home):
    spec = WeightsSpec("x.pth", "ab" * 32, "https://example.org/x.pth", "Apache-2.0")
    with pytest.raises(WeightsMissingError) as err:
        resolve(spec, weights_home)
    msg = str(err.value)
    assert "x.pth" in msg and "ab" * 32 in msg and "https://example.org/x.pth" in msg
    assert str(weights_home / "x.pth") in msg and "hub/checkpoints" in msg


def test_pinned_checksum_is_enforced_and_a_match_resolves(weights_home):
    f = weights_home / "x.pth"
    f.write_bytes(b"weights")
    good = WeightsSpec("x.pth", sha256_of(f), "src", "MIT")
    assert resolve(good, weights_home).pinned_by == "upstream"
    with pytest.raises(WeightsMissingError, match="expected " + "0" * 64):
        resolve(WeightsSpec("x.pth", "0" * 64, "src", "MIT"), weights_home)


def test_torch_hub_and_hugging_face_caches_are_searched(weights_home, tmp_path):
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "a.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"a")
    assert resolve(WeightsSpec("a.pth", None, "s", "MIT"), weights_home).path == hub
    snap = tmp_path / "hf" / "hub" / "models--org--net" / "snapshots" / "0123abc" / "model.safetensors"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"b")
    spec = WeightsSpec("net.safetensors", None, "s", "MIT", hf_repo="org/net", hf_filename="model.safetensors")
    assert resolve(spec, weights_home).path == snap


def test_a_file_in_the_upstream_tools_own_cache_is_found(weights_home):
    spec = WeightsSpec("net.pt", None, "s", "MIT", tool_cache="~/.cache/sometool")
    with pytest.raises(WeightsMissingError, match=".cache/sometool/net.pt"):  # named among the places searched
        resolve(spec, WeightsPolicy(weights_home))
    cached = Path.home() / ".cache" / "sometool" / "net.pt"  # conftest's $HOME: never the real one
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve(spec, WeightsPolicy(weights_home)).path == cached
    assert Path.home() / ".cache" / "clip" / "ViT-B-32.pt" in candidates(extractors.create("clip").weights, None)


def test_non_commercial_weights_need_the_explicit_opt_in(weights_home):
    (weights_home / "nc.pt").write_bytes(b"nc")
    spec = WeightsSpec("nc.pt", None, "s", "CC-BY-NC-4.0", non_commercial=True)
    with pytest.raises(WeightsMissingError, match="--accept-non-commercial"):
        resolve(spec, WeightsPolicy(weights_home))
    assert resolve(spec, WeightsPolicy(weights_home, accept_non_commercial=True)).sha256


def test_import_pins_an_unpinned_file_and_a_later_swap_is_caught(weights_home, tmp_path):
    src = save_tiny(tmp_path / "dl" / "tinynet.pt")
    done = import_weights(src, UNPINNED, weights_home)
    assert done.path == weights_home / "tiny" / "tinynet.pt" and done.pinned_by == "lock"
    assert json.loads((weights_home / LOCK_NAME).read_text()) == {"tiny/tinynet.pt": sha256_of(src)}
    assert resolve(UNPINNED, weights_home).pinned_by == "lock"
    save_tiny(done.path, fill=0.25)  # a different release dropped over the pinned one
    with pytest.raises(WeightsMissingError, match="lock"):
        resolve(UNPINNED, weights_home)
    with pytest.raises(WeightsMissingError, match="not the file featbank expects"):
        import_weights(save_tiny(tmp_path / "other.pt", fill=0.75), UNPINNED, weights_home)
    with pytest.raises(WeightsMissingError, match="is a folder"):  # only snapshot checkpoints are folders
        import_weights(src.parent, UNPINNED, weights_home)


def test_setup_loads_strictly_and_a_renamed_key_is_refused_by_name(weights_home):
    save_tiny(weights_home / "tiny" / "tinynet.pt", fill=0.5)
    ex = TinyNet()
    ex.setup("cpu", WeightsPolicy(weights_home))
    assert torch.all(ex.model[0].weight == 0.5)
    assert ex.weights_provenance()["sha256"] == sha256_of(weights_home / "tiny" / "tinynet.pt")
    save_tiny(weights_home / "tiny" / "tinynet.pt", rename="0.kernel")
    with pytest.raises(WeightsMissingError, match=r"missing \(0.weight\).*unexpected \(0.kernel\)"):
        TinyNet().setup("cpu", WeightsPolicy(weights_home))


def test_random_weights_only_on_request_seeded_and_in_a_group_of_their_own(weights_home):
    with pytest.raises(WeightsMissingError):
        TinyNet().setup("cpu", WeightsPolicy(weights_home))  # never a silent fall-back
    a, b = TinyNet(), TinyNet()
    a.setup("cpu", WeightsPolicy(random=True))
    b.setup("cpu", WeightsPolicy(random=True))
    frames = np.random.default_rng(0).integers(0, 255, (3, 1, 20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(a.forward(frames), b.forward(frames))
    assert a.key != TinyNet().key and a.weights_provenance() == {"filename": "tiny/tinynet.pt", "random": True}


def test_preprocessing_helpers_match_a_hand_computation():
    frames = torch.arange(2 * 4 * 6 * 3, dtype=torch.uint8).reshape(1, 2, 4, 6, 3)
    x = frames_to_float(frames)
    assert x.shape == (1, 2, 3, 4, 6) and x[0, 1, 2, 3, 5] == frames[0, 1, 3, 5, 2] / 255.0
    assert resize_short_side(x, 8).shape[-2:] == (8, 12)
    assert center_crop(torch.zeros(3, 8, 12), 8).shape == (3, 8, 8)
    crop = center_crop(torch.arange(36.0).reshape(1, 6, 6), 2)
    assert crop.tolist() == [[[14.0, 15.0], [20.0, 21.0]]]
    out = normalize(torch.ones(3, 2, 2), (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    assert out[:, 0, 0].tolist() == [1.0, 1.0, 0.0]


@pytest.fixture
def clips(make_video, tmp_path) -> Path:
    vids = [make_video(f"v{i}.mp4", n=20, fps=10, seed=i, audio=False) for i in range(2)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"video_id": ["a", "b"], "path": [v.name for v in vids],
                  "prompt": ["a cat", "a dog on a boat"]}).to_csv(manifest, index=False)
    return manifest


def test_extraction_records_random_weights_and_refuses_a_swapped_checkpoint(clips, tmp_path, weights_home):
    bank_dir = tmp_path / "bank.zarr"
    extract_manifest(clips, bank_dir, ["test-tinynet"], weights=WeightsPolicy(random=True), progress=False)
    save_tiny(weights_home / "tiny" / "tinynet.pt", fill=0.5)
    extract_manifest(clips, bank_dir, ["test-tinynet"], weights=WeightsPolicy(weights_home), progress=False)
    bank = FeatureBank(bank_dir, mode="r")
    groups = {bank.group(k).attrs["weights"]["random"]: k for k in bank.keys_for("test-tinynet")}
    assert set(groups) == {True, False}
    real = bank.group(groups[False]).attrs
    assert real["weights"]["sha256"] == sha256_of(weights_home / "tiny" / "tinynet.pt")
    assert real["runtime"] == {"device": "cpu", "precision": "fp32", "torch": torch.__version__}
    save_tiny(weights_home / "tiny" / "tinynet.pt", fill=0.25)
    with pytest.raises(BankError, match="sha256"):
        extract_manifest(clips, bank_dir, ["test-tinynet"], weights=WeightsPolicy(weights_home), progress=False)


def test_text_reading_extractors_get_each_items_prompt(clips, tmp_path):
    bank_dir = tmp_path / "bank.zarr"
    extract_manifest(clips, bank_dir, ["test-prompt"], progress=False)
    bank = FeatureBank(bank_dir, mode="r")
    rows = lookup_rows(bank, load_manifest(clips))
    pooled, _ = bank.pooled(bank.keys_for("test-prompt")[0], rows)
    assert pooled[:, 0].tolist() == [len("a cat"), len("a dog on a boat")]


def test_extraction_tells_each_batch_which_steps_it_holds(clips):
    reader = extractors.create("test-prompt")
    path = clips.parent / pd.read_csv(clips)["path"][0]
    _, results = extract_item(path, [reader], {"prompt": "a cat"})
    steps = results[reader.key].steps  # 2 s at 10 fps: two key frames
    assert steps[:, 1].tolist() == [0, 1] and steps[:, 0].tolist() == [len("a cat")] * 2


def test_text_column_missing_or_contradictory_is_a_manifest_error(clips, tmp_path):
    table = pd.read_csv(clips)
    table.drop(columns="prompt").to_csv(tmp_path / "noprompt.csv", index=False)
    with pytest.raises(ManifestError, match="prompt"):
        extract_manifest(tmp_path / "noprompt.csv", tmp_path / "b1.zarr", ["test-prompt"], progress=False)
    twice = pd.concat([table, table.iloc[[0]].assign(video_id="a2", prompt="another prompt")])
    twice.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(ManifestError, match="same file"):
        extract_manifest(tmp_path / "twice.csv", tmp_path / "b2.zarr", ["test-prompt"], progress=False)


def test_weights_cli_lists_imports_and_verifies(weights_home, tmp_path, capsys):
    args = ["--weights-dir", str(weights_home), "--extractor", "test-tinynet"]
    assert main(["weights", "list", *args]) == 0
    assert "MISSING" in capsys.readouterr().out
    assert main(["weights", "verify", *args]) == 4
    assert "tinynet.pt was not found" in capsys.readouterr().out
    src = save_tiny(tmp_path / "downloads" / "tinynet.pt")
    assert main(["weights", "import", str(src), "--weights-dir", str(weights_home)]) == 0
    assert f"sha256 {sha256_of(src)} (lock)" in capsys.readouterr().out
    assert main(["weights", "verify", "--load", *args]) == 0
    assert "loads strictly" in capsys.readouterr().out
    save_tiny(weights_home / "tiny" / "tinynet.pt", rename="0.kernel")
    assert main(["weights", "verify", *args]) == 4  # the pin catches the replaced file


def test_extract_cli_needs_weights_or_the_random_opt_in(clips, tmp_path, weights_home, capsys):
    base = ["extract", "--manifest", str(clips), "--bank", str(tmp_path / "b.zarr"),
            "--extractor", "test-tinynet", "--workers", "0", "--no-progress"]
    assert main([*base, "--weights-dir", str(weights_home)]) == 4
    assert "tinynet.pt was not found" in capsys.readouterr().err
    assert main([*base, "--random-weights"]) == 0


# --- Checkpoint files that are not what their name says ---------------------------------------------


def test_a_legacy_format_checkpoint_loads_weights_only(weights_home, capsys):
    """torch.save before 1.6 wrote a plain pickle, which cannot be memory-mapped: read whole instead."""
    path = weights_home / "tiny" / "tinynet.pt"
    path.parent.mkdir(parents=True)
    state = {k: torch.full_like(v, 0.25) for k, v in TinyNet().build_model().state_dict().items()}
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    ex = TinyNet()
    ex.setup("cpu", WeightsPolicy(weights_home))
    assert torch.all(ex.model[0].weight == 0.25)
    assert main(["weights", "verify", "--load", "--weights-dir", str(weights_home), "--extractor", "test-tinynet"]) == 0
    assert "loads strictly" in capsys.readouterr().out


class Opaque:
    """A training script's object pickled into its checkpoint: weights-only loading must refuse it."""


def readme(path: Path) -> None:
    path.write_text("# featbank\n\nDecode each video once, bank frozen features in Zarr.\n" * 20)


def truncated_zip(path: Path) -> None:
    save_tiny(path)
    path.write_bytes(path.read_bytes()[:300])


NOT_CHECKPOINTS = [
    ("readme", readme, r"is not a PyTorch checkpoint \(the weights-only unpickler stopped at: Unsupported operand"),
    ("truncated_download", truncated_zip, r"is not a readable checkpoint \(damaged or truncated download\?\)"),
    ("pickled_object", lambda p: torch.save({"model": Opaque()}, p),
     r"holds Python objects besides tensors \(Unsupported global: .*Opaque\).*torch.save\(model.state_dict"),
    ("bare_tensor", lambda p: torch.save(torch.zeros(3), p), r"holds a Tensor, not a state dict of named tensors"),
    ("no_tensors", lambda p: torch.save({"epoch": 3, "lr": 0.1}, p),  # without --load / with a strict load:
     r"holds no named tensors .*epoch, lr|does not match the architecture: 2 missing .* unexpected \(epoch, lr\)"),
    ("empty_file", lambda p: p.write_bytes(b""), r"is not a readable checkpoint: empty file \(0 bytes\)"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in NOT_CHECKPOINTS], ids=[c[0] for c in NOT_CHECKPOINTS])
def test_files_that_are_not_checkpoints_are_refused_by_every_check(make, message, weights_home, tmp_path, capsys):
    """Set-up, `verify` (with and without --load) and `import` each refuse the file, saying why, and
    import pins nothing."""
    path = weights_home / "tiny" / "tinynet.pt"
    path.parent.mkdir(parents=True)
    make(path)
    with pytest.raises(WeightsMissingError, match=message):
        TinyNet().setup("cpu", WeightsPolicy(weights_home))
    args = ["--weights-dir", str(weights_home), "--extractor", "test-tinynet"]
    for load in ([], ["--load"]):
        assert main(["weights", "verify", *load, *args]) == 4
        out = capsys.readouterr().out
        assert out.startswith("PROBLEM  test-tinynet:") and re.search(message, out), out
    source = tmp_path / "downloads" / "tinynet.pt"
    source.parent.mkdir()
    source.write_bytes(path.read_bytes())
    path.unlink()
    assert main(["weights", "import", str(source), *args]) == 4
    err = capsys.readouterr().err
    assert re.search(message, err) and "Nothing was imported or pinned" in err and "Traceback" not in err
    assert not path.exists() and not (weights_home / LOCK_NAME).exists()


def test_import_refuses_a_checkpoint_of_another_architecture_and_pins_the_right_one(weights_home, tmp_path, capsys):
    args = ["--weights-dir", str(weights_home), "--extractor", "test-tinynet"]
    wrong = tmp_path / "wrong" / "tinynet.pt"
    wrong.parent.mkdir()
    torch.save({"state_dict": nn.Sequential(nn.Conv2d(3, 8, 3)).state_dict()}, wrong)
    assert main(["weights", "import", str(wrong), *args]) == 4
    assert "shape mismatch: 0.bias [8] vs [4], 0.weight [8, 3, 3, 3] vs [4, 3, 3, 3]" in capsys.readouterr().err
    assert not (weights_home / LOCK_NAME).exists()
    right = save_tiny(tmp_path / "right" / "tinynet.pt")
    assert main(["weights", "import", str(right), *args]) == 0
    assert json.loads((weights_home / LOCK_NAME).read_text()) == {"tiny/tinynet.pt": sha256_of(right)}
    assert main(["weights", "verify", *args]) == 0
    assert "reads as a checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["slowfast", "timm:resnet18"])
def test_a_readme_is_never_imported_as_a_real_extractors_checkpoint(spec, weights_home, tmp_path, capsys):
    """The case from issue #13: README.md imported as the SlowFast checkpoint and pinned."""
    name = Path(extractors.create(spec).weights.filename).name
    source = tmp_path / name
    readme(source)
    assert main(["weights", "import", str(source), "--weights-dir", str(weights_home), "--extractor", spec]) == 4
    err = capsys.readouterr().err
    assert f"{source} is not a" in err and "Nothing was imported or pinned" in err
    assert not (weights_home / LOCK_NAME).exists() and not any(weights_home.rglob(name))
