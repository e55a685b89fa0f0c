"""Q-Align's quality levels and its last hidden state per key frame: ``qalign`` (GPU, 7B model).

Q-Align (Wu et al., ICML 2024, "Q-Align: Teaching LMMs for Visual Scoring via Discrete Text-Defined
Levels", ``Q-Future/Q-Align``) fine-tunes the multimodal LLM mPLUG-Owl2 (a ViT-L/14 image encoder
at 448 px, a visual abstractor that condenses it to 64 tokens, and LLaMA-2-7B whose key/value
projections and norms have separate weights for image and text tokens) to answer "How would you
rate the quality of this image?" with one of five words. The released OneAlign checkpoint
(``q-future/one-align``) was trained on image quality, aesthetics and video quality together.

Per key frame (one per second, :class:`~featbank.extraction.sampling.KeyFrames`; Q-Align's video scorer also
reads one frame per second), as ``MPLUGOwl2LlamaForCausalLM.score`` in the snapshot's code does:

1. the frame is padded to a square with the image processor's mean colour (``expand2square``),
   resized to 448 x 448 (PIL bicubic) and normalised with the processor's mean and std;
2. the prompt ``USER: How would you rate the quality of this image?\\n<|image|>\\nASSISTANT: The
   quality of the image is`` is tokenised with the image's place marked (``tokenizer_image_token``);
3. the logits at the last position for the tokens of ``excellent, good, fair, poor, bad`` go
   through a softmax over those five, and the score is ``sum(p * [5, 4, 3, 2, 1])``.

The step vector is the five probabilities, the score, and the 4096-d final hidden state (after
LLaMA's last norm, what the language-model head reads) at that last position: ``5 + 1 + 4096``.

Weights and code come together: the model is a Hugging Face snapshot folder whose modelling code
ships with the weights (``trust_remote_code``), loaded with the pinned ``transformers==4.36.2`` of
the optional extra ``featbank[qalign]``. featbank looks for the folder as ``one-align/`` in the
weights directory or as the Hugging Face cache snapshot of ``q-future/one-align``; the spec names
its ``model.safetensors.index.json``. Before anything is imported from ``transformers`` the
index's tensor names, and the shapes in every shard's header, are checked against
:func:`expected_parameters` (the official names and shapes, see ``tests/keymanifests/qalign_keys.json``),
and the load itself is refused if ``transformers`` reports any missing, unexpected or mismatched
key. There is no random-weights mode: the architecture is the snapshot's code, and a randomly
initialised 7B model is no useful dry run.

``qalign:8bit`` and ``qalign:4bit`` load the LLM through bitsandbytes as Q-Align's
``load_pretrained_model`` does (4-bit: NF4, double quantisation, fp16 compute), for GPUs with less
than the ~17 GB that fp16 needs; they change the features, so they are part of the bank key.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from extractors import register
from extractors.deep import DTYPES, DeepExtractor, normalize
from featbank.errors import FeatbankError, WeightsMissingError
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsSpec

HF_REPO = "q-future/one-align"
SNAPSHOT_DIR = "one-align"
INDEX_NAME = "model.safetensors.index.json"
INSTALL_HINT = "pip install 'featbank[qalign]'"

PROMPT = ("USER: How would you rate the quality of this image?\n<|image|>\n"
          "ASSISTANT: The quality of the image is")
IMAGE_MARK = "<|image|>"
IMAGE_TOKEN_INDEX = -200
"""The id mPLUG-Owl2 puts where the image's tokens go (``IMAGE_TOKEN_INDEX`` in its code)."""
LEVELS = ("excellent", "good", "fair", "poor", "bad")
LEVEL_SCORES = (5.0, 4.0, 3.0, 2.0, 1.0)
"""OneAlign's ``score`` weights (the first Q-Align scorers used 1, 0.75, ..., 0: the same ranking on a 0-1 scale)."""
QUANTIZATIONS = ("8bit", "4bit")
MAX_HEADER_BYTES = 100 << 20
NO_RANDOM_WEIGHTS = (f"qalign has no random-weights mode: its architecture is the code inside the {HF_REPO} "
                     f"snapshot, and a randomly initialised 7B model is no useful dry run; leave qalign out of "
                     f"random-weights runs")


@dataclass(frozen=True)
class OneAlignArchitecture:
    """The sizes of mPLUG-Owl2 as OneAlign uses it (``MPLUGOwl2Config`` defaults)."""

    vocab_size: int = 32000
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    vision_width: int = 1024
    vision_mlp: int = 4096
    vision_layers: int = 24
    image_size: int = 448
    patch_size: int = 14
    abstractor_mlp: int = 2816
    abstractor_layers: int = 6
    queries: int = 64

    @property
    def vision_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


ONE_ALIGN = OneAlignArchitecture()


def expected_parameters(arch: OneAlignArchitecture = ONE_ALIGN) -> dict[str, list[int]]:
    """Every tensor name and shape of the checkpoint, from the architecture's sizes.

    The names are mPLUG-Owl2's: the LLM under ``model.`` with two-way (``multiway.0`` text,
    ``multiway.1`` image) k/v projections and RMS norms, the ViT under ``model.vision_model``,
    the abstractor under ``model.visual_abstractor`` (its sin-cos position tables are persistent
    buffers, so they are in the file too), and ``lm_head``.
    """
    h, v = arch.hidden, arch.vision_width
    out: dict[str, list[int]] = {"model.embed_tokens.weight": [arch.vocab_size, h],
                                 "model.norm.weight": [h], "lm_head.weight": [arch.vocab_size, h]}
    for i in range(arch.layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "o_proj"):
            out[f"{p}self_attn.{name}.weight"] = [h, h]
        for way in (0, 1):
            out[f"{p}self_attn.k_proj.multiway.{way}.weight"] = [h, h]
            out[f"{p}self_attn.v_proj.multiway.{way}.weight"] = [h, h]
            out[f"{p}input_layernorm.multiway.{way}.weight"] = [h]
            out[f"{p}post_attention_layernorm.multiway.{way}.weight"] = [h]
        out[f"{p}mlp.gate_proj.weight"] = out[f"{p}mlp.up_proj.weight"] = [arch.intermediate, h]
        out[f"{p}mlp.down_proj.weight"] = [h, arch.intermediate]

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = [n_out, n_in], [n_out]

    def layer_norm(prefix: str, n: int) -> None:
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = [n], [n]

    vit = "model.vision_model."
    out[f"{vit}embeddings.cls_token"] = [1, 1, v]
    out[f"{vit}embeddings.position_embedding"] = [1, arch.vision_tokens, v]
    out[f"{vit}embeddings.patch_embed.weight"] = [v, 3, arch.patch_size, arch.patch_size]
    layer_norm(f"{vit}embeddings.pre_layernorm", v)
    layer_norm(f"{vit}post_layernorm", v)
    for i in range(arch.vision_layers):
        p = f"{vit}encoder.layers.{i}."
        linear(f"{p}self_attn.query_key_value", 3 * v, v)
        linear(f"{p}self_attn.dense", v, v)
        linear(f"{p}mlp.fc1", arch.vision_mlp, v)
        linear(f"{p}mlp.fc2", v, arch.vision_mlp)
        layer_norm(f"{p}input_layernorm", v)
        layer_norm(f"{p}post_attention_layernorm", v)

    abstractor = "model.visual_abstractor."
    out[f"{abstractor}query_embeds"] = [1, arch.queries, v]
    out[f"{abstractor}vit_eos"] = [1, 1, h]
    linear(f"{abstractor}visual_fc", h, v)
    for i in range(arch.abstractor_layers):
        p = f"{abstractor}encoder.layers.{i}.crossattention."
        out[f"{p}attention.q_pos_embed"] = [arch.queries, v]
        out[f"{p}attention.k_pos_embed"] = [arch.vision_tokens, v]
        for name in ("query", "key", "value"):
            linear(f"{p}attention.{name}", v, v)
        linear(f"{p}output.out_proj", v, v)
        linear(f"{p}output.mlp.w1", arch.abstractor_mlp, v)
        linear(f"{p}output.mlp.w2", v, arch.abstractor_mlp)
        linear(f"{p}output.mlp.w3", arch.abstractor_mlp, v)
        for norm, n in (("output.norm2", v), ("output.mlp.ffn_ln", arch.abstractor_mlp), ("norm1", v), ("normk", v)):
            layer_norm(f"{p}{norm}", n)
    return out


# --- The snapshot, checked without transformers -------------------------------------------------


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a ``.safetensors`` file's header (8-byte length + JSON), without
    reading the data: checking 15 GB of shards this way takes milliseconds."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size <= MAX_HEADER_BYTES:
            raise WeightsMissingError(f"{path} is not a safetensors file (no valid header)")
        try:
            header = json.loads(f.read(size))
        except ValueError as error:
            raise WeightsMissingError(f"{path} has a damaged safetensors header: {error}") from None
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _few(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "")


def check_snapshot(index_path: Path, expected: Mapping[str, Sequence[int]] | None = None) -> None:
    """Refuse a snapshot whose tensors are not OneAlign's, before loading 15 GB into a GPU.

    The index's ``weight_map`` must name exactly the expected tensors; every shard it lists must
    exist, and its header must give each tensor the expected shape. One error lists all
    differences, naming the file.
    """
    expected = {k: list(v) for k, v in (expected or expected_parameters()).items()}
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsMissingError(f"{index_path} is not a safetensors index ({error!r})") from None
    folder = index_path.parent
    missing_shards = sorted({s for s in weight_map.values() if not (folder / s).is_file()})
    if missing_shards:
        raise WeightsMissingError(f"{folder} is an incomplete {HF_REPO} snapshot: {_few(missing_shards)} "
                                  f"listed in {index_path.name} not found; download the whole folder")
    found: dict[str, list[int] | None] = dict.fromkeys(weight_map)
    for shard in sorted(set(weight_map.values())):
        shapes = safetensors_shapes(folder / shard)
        for name in (n for n, s in weight_map.items() if s == shard):
            found[name] = shapes.get(name)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(f"{k} {found[k]} vs {expected[k]}" for k in set(expected) & set(found) if found[k] != expected[k])
    parts = [f"{len(missing)} missing ({_few(missing)})" if missing else "",
             f"{len(unexpected)} unexpected ({_few(unexpected)})" if unexpected else "",
             f"shape mismatch: {_few(wrong)}" if wrong else ""]
    if any(parts):
        raise WeightsMissingError(f"{index_path} does not describe {HF_REPO}: " + "; ".join(p for p in parts if p))


# --- Prompt, levels and preprocessing --------------------------------------------------------------


def prompt_token_ids(tokenize: Callable[[str], list[int]], bos_id: int, prompt: str = PROMPT) -> list[int]:
    """The prompt's token ids with :data:`IMAGE_TOKEN_INDEX` where ``<|image|>`` stands.

    As mPLUG-Owl2's ``tokenizer_image_token``: the text on each side of the mark is tokenised on
    its own; when the first piece starts with BOS, that BOS is kept once and the leading token of
    every piece is dropped (the tokenizer prefixes each piece with BOS).
    """
    pieces = [tokenize(text) if text else [] for text in prompt.split(IMAGE_MARK)]
    offset = 1 if pieces[0][:1] == [bos_id] else 0
    ids = [bos_id] if offset else []
    for i, piece in enumerate(pieces):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(piece[offset:])
    return ids


def level_token_ids(tokenize: Callable[[str], list[int]], bos_id: int) -> list[int]:
    """The token of each level word: the one after BOS, as the official scorer takes ``ids[1]``;
    a word that is not exactly one token would make that silently wrong, so it is refused."""
    out = []
    for word in LEVELS:
        ids = tokenize(word)
        if len(ids) != 2 or ids[0] != bos_id:
            raise FeatbankError(f"the {HF_REPO} tokenizer encodes {word!r} as {ids}, not BOS + one token; "
                                f"it is not the tokenizer Q-Align was trained with")
        out.append(ids[1])
    return out


def level_features(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 5)`` level logits → ``(B, 6)``: the softmax over the five levels, then the score
    ``sum(p * [5, 4, 3, 2, 1])`` (in fp32; the official code does the same maths in fp16)."""
    p = torch.softmax(logits.float(), dim=-1)
    weights = torch.tensor(LEVEL_SCORES, dtype=p.dtype, device=p.device)
    return torch.cat([p, (p @ weights)[:, None]], dim=1)


def expand_to_square(x: torch.Tensor, fill: Sequence[float]) -> torch.Tensor:
    """``expand2square``: pad ``(B, 3, H, W)`` to a square of side ``max(H, W)`` filled with
    ``fill``, the image placed at ``((side - H) // 2, (side - W) // 2)`` as PIL's paste puts it."""
    h, w = x.shape[-2:]
    side = max(h, w)
    if h == w:
        return x
    out = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, 3, 1, 1).repeat(x.shape[0], 1, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[..., top:top + h, left:left + w] = x
    return out


def qalign_preprocess(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: int) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 → ``(B, 3, size, size)``, as ``score`` prepares an image.

    The pad colour is ``int(m * 255)`` per channel, as in ``expand2square``'s call. The resize is
    ``CLIPImageProcessor``'s, PIL bicubic (:func:`resize_square_like_pil`). The processor's centre
    crop is a no-op on a square; then ``/ 255`` and the mean/std normalisation.
    """
    x = frames.permute(0, 3, 1, 2).float()
    x = expand_to_square(x, [float(int(m * 255)) for m in mean])
    return normalize(resize_square_like_pil(x, size) / 255.0, mean, std)


def resize_square_like_pil(x: torch.Tensor, size: int) -> torch.Tensor:
    """PIL's bicubic ``resize`` of an 8-bit ``(B, 3, S, S)`` image (values 0-255) to ``size``.

    PIL resamples horizontally, then vertically, each pass rounded and clipped to 8 bits; doing
    the same with the antialiased bicubic of ``F.interpolate`` (PIL's kernel, a = -0.5, also when
    enlarging) matters on detailed content, where a pass overshoots past 0 or 255 and PIL's
    intermediate clip changes the second pass. What remains is PIL's fixed-point weights: at
    most one grey level.
    """
    for out in ((x.shape[-2], size), (size, size)):
        if tuple(x.shape[-2:]) != out:
            x = F.interpolate(x, size=out, mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0).round_()
    return x


# --- Loading (transformers, GPU) -----------------------------------------------------------------


def require_transformers() -> Any:
    """``transformers``, or one clear error: it is an optional extra pinned to the version OneAlign's code runs on."""
    try:
        import transformers
    except ImportError:
        raise FeatbankError(f"the qalign extractor needs transformers==4.36.2 and its companions: "
                            f"{INSTALL_HINT}") from None
    return transformers


class _FromSnapshot:
    """Stands in for a ``transformers`` loader inside the snapshot's modelling code, whose
    ``__init__`` loads its tokenizer and image processor by hub id: featbank never reaches a hub,
    so that id is answered from the local snapshot folder."""

    def __init__(self, loader: Any, folder: Path) -> None:
        self.loader, self.folder = getattr(loader, "loader", loader), folder

    def from_pretrained(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == HF_REPO:
            name, kwargs["local_files_only"] = str(self.folder), True
        return self.loader.from_pretrained(name, *args, **kwargs)


def load_one_align(folder: Path, device: str, dtype: torch.dtype,
                   quantization: str | None) -> tuple[nn.Module, Any, Any]:
    """The model, its tokenizer and its image processor from a local snapshot, loaded strictly.

    The model class comes from the snapshot's own code (``auto_map``; what
    ``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)`` resolves), with its hub
    look-ups redirected to ``folder``. For a local folder, transformers 4.36 copies only the files
    the entry module imports directly into its module cache, not what those import in turn
    (``modeling_llama2`` imports ``modeling_attn_mask_utils``), so every code file of the snapshot
    is staged first. Attention runs "eager": the same maths as the other implementations, and the
    one this code supports everywhere (its ``sdpa`` branch calls a mask helper the module does not
    import, and ``flash_attention_2`` needs flash-attn, which the extra does not install). It is
    set on the config, because transformers 4.36 ignores ``attn_implementation="eager"`` passed
    with a config that does not name one and then picks ``sdpa``. The tokenizer and image
    processor are the ones the snapshot's ``score`` uses (the model's own attributes).
    """
    transformers = require_transformers()
    from transformers.dynamic_module_utils import get_cached_module_file, get_class_from_dynamic_module

    local = {"local_files_only": True}
    try:
        for code in sorted(folder.glob("*.py")):
            get_cached_module_file(str(folder), code.name, **local)
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=True,
                                                         attn_implementation="eager", **local)
        reference = getattr(config, "auto_map", {}).get("AutoModelForCausalLM")
        if reference is None:
            raise FeatbankError(f"{folder}/config.json names no AutoModelForCausalLM code; "
                                f"it is not the {HF_REPO} snapshot")
        model_class = get_class_from_dynamic_module(reference, str(folder), **local)
    except ImportError as error:  # the snapshot's code names a package the environment lacks
        raise FeatbankError(f"the {HF_REPO} code cannot be imported: {error}") from None
    module = sys.modules[model_class.__module__]
    for loader in ("AutoTokenizer", "CLIPImageProcessor"):
        if hasattr(module, loader):
            setattr(module, loader, _FromSnapshot(getattr(module, loader), folder))

    kwargs: dict[str, Any] = {"config": config, "device_map": {"": device}, "torch_dtype": dtype,
                              "output_loading_info": True, **local}
    if quantization:
        kwargs["torch_dtype"] = torch.float16
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_8bit=quantization == "8bit", load_in_4bit=quantization == "4bit",
            bnb_4bit_compute_dtype=torch.float16, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    model, info = model_class.from_pretrained(str(folder), **kwargs)
    problems = [f"{k}: {_few([str(x) for x in info[k]])}"
                for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") if info.get(k)]
    if problems:
        raise WeightsMissingError(f"{folder} did not load strictly: " + "; ".join(problems))
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **local)
    processor = getattr(model, "image_processor", None)
    if processor is None:
        processor = transformers.CLIPImageProcessor.from_pretrained(str(folder), **local)
    return model, tokenizer, processor


# --- The extractor -------------------------------------------------------------------------------


@register
class QAlign(DeepExtractor):
    """OneAlign's five level probabilities, its 1-5 score and its last hidden state per key frame."""

    name = "qalign"
    version = "1"
    batch_size = 8
    weights = WeightsSpec(
        filename=f"{SNAPSHOT_DIR}/{INDEX_NAME}", sha256=None,
        source=(f"https://huggingface.co/{HF_REPO} (the whole snapshot folder, saved as '{SNAPSHOT_DIR}/' in the "
                f"weights directory: config, modelling code, tokenizer, image processor, safetensors shards)"),
        license="MIT (model card); derived from LLaMA-2-7B, so the Llama 2 Community License applies too",
        hf_repo=HF_REPO, hf_filename=INDEX_NAME, snapshot=True)
    architecture: ClassVar[OneAlignArchitecture] = ONE_ALIGN
    autocast = False  # weights load at the run's precision or quantised; the official scorer has no autocast

    def __init__(self, quantization: str | None = None) -> None:
        if quantization is not None and quantization not in QUANTIZATIONS:
            raise FeatbankError(f"qalign takes {' or '.join(QUANTIZATIONS)} (qalign:8bit), not {quantization!r}")
        self.quantization = quantization

    @property
    def sampling(self) -> KeyFrames:
        return KeyFrames()

    def options(self) -> dict:
        return {"quantization": self.quantization} if self.quantization else {}

    def feature_names(self) -> list[str]:
        return ([f"p_{level}" for level in LEVELS] + ["score"]
                + [f"hidden_{i:04d}" for i in range(self.architecture.hidden)])

    def runtime(self) -> dict:
        """Also the transformers version, which the snapshot's code runs on."""
        return {**super().runtime(), "transformers": getattr(sys.modules.get("transformers"), "__version__", None)}

    def build_model(self) -> nn.Module:
        raise FeatbankError(NO_RANDOM_WEIGHTS)

    def verify_checkpoint(self, path: Path) -> None:
        """The index's names and every shard header's shapes against the official definition:
        the strict check, without materialising 8.2e9 parameters."""
        check_snapshot(path)

    def check_checkpoint(self, path: Path) -> None:
        """Headers only already: ``weights verify`` without ``--load`` runs the same check."""
        check_snapshot(path)

    def load_weights(self, path: Path | None) -> None:
        if path is None:
            raise FeatbankError(NO_RANDOM_WEIGHTS)
        check_snapshot(path)
        if self.quantization and not self.device.startswith("cuda"):
            raise FeatbankError(f"qalign:{self.quantization} needs a CUDA device (bitsandbytes), not {self.device}")
        dtype = DTYPES[self.precision]
        model, tokenizer, processor = load_one_align(path.parent, self.device, dtype, self.quantization)
        crop = processor.crop_size
        if crop["height"] != crop["width"] or processor.size.get("shortest_edge") != crop["height"]:
            raise FeatbankError(f"{path.parent}: unexpected image processor sizes {processor.size} / {crop}; "
                                f"Q-Align resizes the squared image to one side")
        self.mean, self.std, self.image_size = list(processor.image_mean), list(processor.image_std), crop["height"]

        def tokenize(text: str) -> list[int]:
            return tokenizer(text).input_ids

        ids = prompt_token_ids(tokenize, tokenizer.bos_token_id)
        self.input_ids = torch.tensor([ids], device=self.device)
        self.level_ids = level_token_ids(tokenize, tokenizer.bos_token_id)
        self.model = model.eval().requires_grad_(False)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        pixels = qalign_preprocess(frames[:, 0], self.mean, self.std, self.image_size).to(self.model.dtype)
        out = self.model(input_ids=self.input_ids.expand(frames.shape[0], -1), images=pixels,
                         output_hidden_states=True, use_cache=False, return_dict=True)
        levels = level_features(out.logits[:, -1, self.level_ids])
        return torch.cat([levels, out.hidden_states[-1][:, -1].float()], dim=1)
