"""Prompt-template quality scoring with a CLIP-family model per key frame: ``templates:MODEL[@SET]``.

LIQE's test-time mechanism, without its fine-tuned weights and with any template set: each level of
a quality scale is written into a sentence ("a photo with {d} {q} quality"), every sentence is
embedded once with the model's text encoder, and a frame's unit image embedding is compared with
them. Per dimension ``d`` the cosine logits ``exp(logit_scale) * cos(image, text(d, q))`` over the
levels ``q`` go through a softmax, and the dimension's score is the expected level
``sum_k k * p_k`` with levels numbered 1 (worst) to n (best). SJTU-MOE-AI scored NTIRE 2025 XGC
(FineVD, AIGV, talking heads) this way with SigLIP/SigLIP2, and the NTIRE 2024 AIGC winners with
CLIP; here the model is frozen, so the probabilities are zero-shot features for a regressor.

``MODEL`` (:data:`MODELS`)
    ``clip-b32`` / ``clip-l14``: OpenAI CLIP ViT-B/32 and ViT-L/14 (224 px), OpenAI's files and
    preprocessing (:func:`extractors.clip.clip_preprocess`), OpenAI's byte-pair tokenizer.
    ``siglip-b16`` / ``siglip-b16-512`` / ``siglip2-b16``: open_clip's ``ViT-B-16-SigLIP``,
    ``ViT-B-16-SigLIP-512`` and ``ViT-B-16-SigLIP2`` (timm ViT with attention pooling), as open_clip
    prepares images for them: squashed to the model's square size (PIL bicubic, no crop), mean and
    std 0.5. SigLIP's logit bias is the same for every sentence, so it cancels in the softmax and
    is left out. (The SigLIP2 ``naflex`` models the teams fine-tuned are not in open_clip.)
``SET`` (:data:`BUILT_IN`, default ``finevd``)
    ``finevd``: "a photo with {d} {q} quality" for the six FineVD dimensions x five levels;
    ``quality``: "a photo with {q} quality." (SJTU-MOE-AI's talking-head scorer); ``aigc``: "a photo
    with {q} quality, which matches prompt" (their AIGV scorer; the words, not the item's prompt);
    or the path of a TOML file (:func:`read_template_file`).

Per step: the level probabilities per dimension (``p_<d>_<q>``, dimensions x levels), the expected
level per dimension (``score_<d>``), and the L2-normalised image embedding (``emb_NNN``). A set
without ``{d}`` has one dimension and names them ``p_<q>`` and ``score``. The template text, levels
and dimensions are part of the bank key (:meth:`Templates.options`), so a changed template file
makes a new group; the same templates reached through a file or a built-in name share one.

Weights are local files only. The OpenAI files are pinned to the SHA-256 in OpenAI's URLs. A SigLIP
model is its Hugging Face snapshot folder (``timm/<name>/``: ``open_clip_model.safetensors`` plus the
tokenizer files), whose checkpoint is the state dict of open_clip's model (loaded strictly,
``tests/keymanifests/siglip*.json``) and whose tokenizer is read through ``transformers`` from that
folder, never from the hub; with random weights and no tokenizer files, a word-hashing stand-in
(:func:`hashed_words`) embeds the templates, so a dry run needs no download.
"""

from __future__ import annotations

import copy
import re
import string
import tomllib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from open_clip import get_model_config
from open_clip.constants import INCEPTION_MEAN, INCEPTION_STD
from open_clip.model import CustomTextCLIP
from torch import nn

from extractors import register
from extractors.clip import (
    VIT_B_32,
    ClipArchitecture,
    ClipExtractor,
    clip_preprocess,
    openai_state_dict,
    read_openai_checkpoint,
    tokenizer,
)
from extractors.deep import DeepExtractor, load_checkpoint, normalize, unwrap
from extractors.qalign import resize_square_like_pil
from featbank.errors import FeatbankError, UsageError, WeightsMissingError
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsPolicy, WeightsSpec, candidates

Tokenize = Callable[[Sequence[str]], torch.Tensor]
"""Texts → ``(N, context_length)`` token ids, as the model's text encoder reads them."""

# --- Template sets ---------------------------------------------------------------------------------

LEVELS = ("bad", "poor", "fair", "good", "perfect")
FINEVD_DIMENSIONS = ("color", "noise", "artifact", "blur", "temporal", "overall")
FIELDS = {"q", "d"}
FILE_KEYS = {"template", "levels", "dimensions"}


def label(text: str) -> str:
    """A level or dimension as it appears in a feature name (runs of non-word characters → ``_``)."""
    return re.sub(r"\W+", "_", text.strip()).strip("_").lower()


@dataclass(frozen=True)
class TemplateSet:
    """A sentence with ``{q}`` (the level) and optionally ``{d}`` (the dimension), the levels from
    worst to best, and the dimensions (only with ``{d}``). Build it with :meth:`checked`."""

    template: str
    levels: tuple[str, ...]
    dimensions: tuple[str, ...] = ()

    @classmethod
    def checked(cls, template: object, levels: object, dimensions: object, source: str) -> TemplateSet:
        """The set, or one :class:`UsageError` naming ``source`` and everything wrong with it."""
        problems: list[str] = []
        fields: set[str] = set()
        if not isinstance(template, str) or not template.strip():
            problems.append("'template' must be a non-empty string")
        else:
            try:
                parsed = list(string.Formatter().parse(template))
            except ValueError as error:
                problems.append(f"'template' {template!r} is not a valid template ({error}; write a literal "
                                f"brace as {{{{ or }}}})")
                parsed = []
            for _, name, spec, conversion in parsed:
                if name is None:
                    continue
                if name not in FIELDS or spec or conversion:
                    written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                    problems.append(f"'template' may hold only {{q}} and {{d}}, not {{{written}}}")
                fields.add(name)
            if parsed and "q" not in fields:
                problems.append(f"'template' {template!r} has no {{q}}: the level must appear in the sentence")
        level_names = cls._names("levels", levels, 2, problems)
        if "d" in fields:
            dimension_names = cls._names("dimensions", dimensions, 1, problems)
        else:
            dimension_names = ()
            if dimensions is not None and not problems:
                problems.append("'dimensions' is given but 'template' has no {d} to put them in")
        if problems:
            raise UsageError(f"template set {source}: " + "; ".join(problems))
        return cls(template, level_names, dimension_names)

    @staticmethod
    def _names(key: str, value: object, minimum: int, problems: list[str]) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and label(v) for v in value):
            problems.append(f"'{key}' must be a list of words (strings with letters or digits)")
            return ()
        if len(value) < minimum:
            problems.append(f"'{key}' needs at least {minimum} entries, got {len(value)}")
        labels = [label(v) for v in value]
        if len(set(labels)) != len(labels):
            problems.append(f"'{key}' must be distinct (as feature names: {labels})")
        return tuple(value)

    @property
    def sentences(self) -> list[str]:
        """Every sentence, dimension-major: row ``d * n_levels + k`` is dimension ``d``, level ``k``."""
        return [self.template.format(d=d, q=q) for d in (self.dimensions or ("",)) for q in self.levels]

    @property
    def n_dimensions(self) -> int:
        return max(1, len(self.dimensions))

    def feature_names(self) -> list[str]:
        if not self.dimensions:
            return [f"p_{label(q)}" for q in self.levels] + ["score"]
        return ([f"p_{label(d)}_{label(q)}" for d in self.dimensions for q in self.levels]
                + [f"score_{label(d)}" for d in self.dimensions])

    def config(self) -> dict:
        """What the features depend on: the text itself, not the name or path it came from."""
        return {"template": self.template, "levels": list(self.levels), "dimensions": list(self.dimensions)}


BUILT_IN: dict[str, TemplateSet] = {
    "finevd": TemplateSet("a photo with {d} {q} quality", LEVELS, FINEVD_DIMENSIONS),
    "quality": TemplateSet("a photo with {q} quality.", LEVELS),
    "aigc": TemplateSet("a photo with {q} quality, which matches prompt", LEVELS),
}
DEFAULT_SET = "finevd"


def read_template_file(path: Path) -> TemplateSet:
    """A TOML file with ``template`` (with ``{q}``, optionally ``{d}``), ``levels`` (worst to best, at
    least two) and, when the template has ``{d}``, ``dimensions``; nothing else."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"template file {path}: cannot be read ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"template file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise UsageError(f"template file {path}: unknown keys {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(FILE_KEYS))})")
    return TemplateSet.checked(data.get("template"), data.get("levels"), data.get("dimensions"), str(path))


# --- Models ----------------------------------------------------------------------------------------


class Backbone(ABC):
    """One CLIP-family model: its architecture, checkpoint format, preprocessing and tokenizer."""

    weights: WeightsSpec

    @property
    @abstractmethod
    def embed_dim(self) -> int: ...

    @abstractmethod
    def build(self) -> nn.Module:
        """The architecture with the official checkpoint's names, randomly initialised."""

    @abstractmethod
    def read_checkpoint(self, path: Path) -> Mapping: ...

    @abstractmethod
    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Key frames ``(B, 1, H, W, 3)`` uint8 → the normalised images the model takes."""

    @abstractmethod
    def tokenizer(self, folders: Sequence[Path], random_weights: bool = False) -> Tokenize:
        """The tokenizer; ``folders`` are where the weights' snapshot folder is or would be."""


@dataclass(frozen=True)
class OpenAIBackbone(Backbone):
    """An OpenAI CLIP ViT at 224 px, exactly as :mod:`extractors.clip` runs ViT-B/32."""

    architecture: ClipArchitecture
    weights: WeightsSpec

    @property
    def embed_dim(self) -> int:
        return self.architecture.embed_dim

    def build(self) -> nn.Module:
        return self.architecture.build()

    def read_checkpoint(self, path: Path) -> Mapping:
        return read_openai_checkpoint(path)

    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        return openai_state_dict(checkpoint)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(frames)

    def tokenizer(self, folders: Sequence[Path], random_weights: bool = False) -> Tokenize:
        """OpenAI's byte-pair tokenizer, which ships with open_clip: no folder needed."""
        context = self.architecture.context_length
        return lambda texts: tokenizer()(list(texts), context_length=context)


SIGLIP_CHECKPOINT = "open_clip_model.safetensors"
SIGLIP_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What the ``timm/ViT-*-SigLIP*`` snapshots hold for ``transformers.AutoTokenizer`` (fast tokenizers)."""


def hf_tokenizer(folder: Path, context_length: int, options: Mapping) -> Tokenize:
    """open_clip's ``HFTokenizer`` (what ``open_clip.get_tokenizer`` builds for SigLIP: cleaning,
    padding to ``context_length``, truncation) on the snapshot folder, with ``local_files_only``."""
    try:
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(str(folder), context_length=context_length, local_files_only=True, **options)
    except ImportError as error:
        raise FeatbankError(f"the SigLIP tokenizer in {folder} is read with transformers, which is not installed "
                            f"({error}); `pip install transformers` (SigLIP2's Gemma tokenizer needs a release "
                            f"that has it, 4.38 or later)") from None
    except (OSError, ValueError) as error:
        raise WeightsMissingError(f"{folder}: transformers cannot load the tokenizer there: "
                                  f"{str(error).splitlines()[0][:300]}") from None


@dataclass(frozen=True)
class SigLIPBackbone(Backbone):
    """An open_clip SigLIP model from its Hugging Face snapshot (``hf_repo``). ``config`` replaces
    open_clip's configuration of ``open_clip_name`` (tests use a small one)."""

    open_clip_name: str
    hf_repo: str
    sha256: str | None
    config: Mapping | None = field(default=None, compare=False)

    @property
    def model_config(self) -> dict:
        config = copy.deepcopy(dict(self.config or get_model_config(self.open_clip_name)))
        config.pop("custom_text", None)  # how open_clip's factory picks CustomTextCLIP, not an argument of it
        return config

    @property
    def weights(self) -> WeightsSpec:
        return WeightsSpec(
            filename=f"{self.hf_repo}/{SIGLIP_CHECKPOINT}", sha256=self.sha256,
            source=(f"https://huggingface.co/{self.hf_repo} (the snapshot folder, saved as '{self.hf_repo}/' in the "
                    f"weights directory: {SIGLIP_CHECKPOINT} and the tokenizer files "
                    f"{', '.join(SIGLIP_TOKENIZER_FILES)})"),
            license="Apache-2.0", hf_repo=self.hf_repo, hf_filename=SIGLIP_CHECKPOINT, snapshot=True)

    @property
    def embed_dim(self) -> int:
        return self.model_config["embed_dim"]

    @property
    def image_size(self) -> int:
        return self.model_config["vision_cfg"]["image_size"]

    def build(self) -> nn.Module:
        return CustomTextCLIP(**self.model_config)

    def read_checkpoint(self, path: Path) -> Mapping:
        return load_checkpoint(path)

    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        """The file's state dict, with ``logit_scale``/``logit_bias`` made scalars where a file stores
        them as one-element vectors (open_clip's ``load_checkpoint`` makes the same correction)."""
        state = unwrap(checkpoint)
        for name in ("logit_scale", "logit_bias"):
            if name in state and state[name].numel() == 1:
                state[name] = state[name].reshape(())
        return state

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """open_clip's ``resize_mode='squash'``: both sides to the model's size, PIL bicubic on the
        8-bit image, then mean and std 0.5 (``INCEPTION_MEAN``/``_STD``)."""
        x = resize_square_like_pil(frames[:, 0].permute(0, 3, 1, 2).float(), self.image_size) / 255.0
        return normalize(x, INCEPTION_MEAN, INCEPTION_STD)

    def tokenizer(self, folders: Sequence[Path], random_weights: bool = False) -> Tokenize:
        """The snapshot's tokenizer, from the first of ``folders`` that holds its files.

        With random weights and no tokenizer files, :func:`hashed_words` stands in: the text
        embeddings of a random network mean nothing whatever the token ids, and a dry run (a recipe
        with ``--random-weights``) should not need a download. Real weights always need the real one.
        """
        found = next((f for f in folders if all((f / n).is_file() for n in SIGLIP_TOKENIZER_FILES)), None)
        text = self.model_config["text_cfg"]
        if found is None and random_weights:
            return hashed_words(text["context_length"], text["vocab_size"])
        if found is None:
            where = ", ".join(map(str, folders)) or "nowhere (no weights directory is set)"
            raise WeightsMissingError(f"the {self.hf_repo} tokenizer ({', '.join(SIGLIP_TOKENIZER_FILES)}) is needed "
                                      f"to embed the templates with the real weights, but no folder holds it "
                                      f"(looked in {where}); copy the whole snapshot folder from "
                                      f"https://huggingface.co/{self.hf_repo} (featbank never downloads it)")
        return hf_tokenizer(found, text["context_length"], text.get("tokenizer_kwargs", {}))


def hashed_words(context_length: int, vocab_size: int) -> Tokenize:
    """A deterministic stand-in tokenizer for random-weights dry runs: each word's CRC-32 as its id.

    Ids 0 and 1 are left free (padding and end), every other id is below ``vocab_size``, and the
    sequence is padded with 1 to ``context_length``: the shapes and ranges the SigLIP text tower
    takes, with no tokenizer file and no download.
    """
    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        out = torch.ones(len(texts), context_length, dtype=torch.long)
        for i, sentence in enumerate(texts):
            ids = [zlib.crc32(word.encode()) % (vocab_size - 2) + 2 for word in sentence.lower().split()]
            out[i, : min(len(ids), context_length)] = torch.tensor(ids[:context_length], dtype=torch.long)
        return out
    return tokenize


CLIP_L14_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
VIT_L_14 = ClipArchitecture(embed_dim=768, patch_size=14, vision_width=1024, vision_layers=24,
                            text_width=768, text_layers=12)
"""OpenAI's ViT-L/14 (``clip/model.py`` ``build_model`` reads these sizes off the file)."""

MODELS: dict[str, Backbone] = {
    "clip-b32": OpenAIBackbone(VIT_B_32, ClipExtractor.weights),
    "clip-l14": OpenAIBackbone(VIT_L_14, WeightsSpec(
        filename="ViT-L-14.pt", sha256=CLIP_L14_SHA256,
        source=f"https://openaipublic.azureedge.net/clip/models/{CLIP_L14_SHA256}/ViT-L-14.pt",
        license="MIT", tool_cache="~/.cache/clip")),
    # SHA-256 of open_clip_model.safetensors as the Hub's Git LFS pointers publish it; none found for SigLIP2
    "siglip-b16": SigLIPBackbone("ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP",
                                 "81942ea8c09b9e41963357cca5d2682118bf7eb7491c2ae51a28bc4f4f95b194"),
    "siglip-b16-512": SigLIPBackbone("ViT-B-16-SigLIP-512", "timm/ViT-B-16-SigLIP-512",
                                     "d5d17ef569f2a8d1552f97d55a56bdfd1148144f8e702e19c20dd9f9c9c0e68b"),
    "siglip2-b16": SigLIPBackbone("ViT-B-16-SigLIP2", "timm/ViT-B-16-SigLIP2", None),
}

SPEC_HELP = (f"templates:MODEL[@SET] with MODEL one of {', '.join(MODELS)} and SET one of "
             f"{', '.join(BUILT_IN)} (default {DEFAULT_SET}) or the path of a TOML template file")


def parse_spec(arg: str | None) -> tuple[str, TemplateSet]:
    """``"siglip-b16@aigc"`` → the model name and its template set (a built-in one or a file's)."""
    model, _, chosen = (arg or "").strip().partition("@")
    if not model:
        raise UsageError(f"templates needs a model: {SPEC_HELP}")
    if model not in MODELS:
        raise UsageError(f"templates:{arg}: unknown model {model!r}; {SPEC_HELP}")
    chosen = chosen.strip() or DEFAULT_SET
    if chosen in BUILT_IN:
        return model, BUILT_IN[chosen]
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise UsageError(f"templates:{arg}: {chosen!r} is neither a built-in template set "
                         f"({', '.join(BUILT_IN)}) nor a file")
    return model, read_template_file(path)


# --- The extractor ---------------------------------------------------------------------------------


@register
class Templates(DeepExtractor):
    """Level probabilities, expected level per dimension and the image embedding per key frame."""

    name = "templates"
    version = "1"
    batch_size = 32
    weight_variants: ClassVar[tuple[str, ...]] = tuple(f"templates:{m}" for m in MODELS if m != "clip-b32")
    """clip-b32 reads the ``clip`` extractor's file, which ``featbank weights`` already lists under ``clip``
    (listing it twice would make ``weights import ViT-B-32.pt`` ambiguous)."""

    text_features: torch.Tensor | None = None

    def __init__(self, spec: str | None = None) -> None:
        self.model_name, self.templates = parse_spec(spec)
        self.backbone = MODELS[self.model_name]
        self.weights = self.backbone.weights
        self._weights_dir: Path | None = None

    @property
    def sampling(self) -> KeyFrames:
        return KeyFrames()

    def options(self) -> dict:
        return {"model": self.model_name, "templates": self.templates.config()}

    def feature_names(self) -> list[str]:
        return self.templates.feature_names() + [f"emb_{i:03d}" for i in range(self.backbone.embed_dim)]

    def build_model(self) -> nn.Module:
        return self.backbone.build()

    def read_checkpoint(self, path: Path) -> Mapping:
        return self.backbone.read_checkpoint(path)

    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        return self.backbone.state_dict_from(checkpoint)

    def setup(self, device: str = "cpu", weights: WeightsPolicy | None = None) -> None:
        """As every deep extractor; the weights directory is kept because a SigLIP model built with
        random weights reads its tokenizer from the snapshot folder there when it is present."""
        self._weights_dir = (weights or WeightsPolicy()).directory
        super().setup(device, weights)

    def load_weights(self, path: Path | None) -> None:
        """Build (and load) the model, then embed every template sentence once with it. The tokenizer
        comes first, so a missing one fails before a large model is built; it is read from the
        checkpoint's folder, or with random weights from where the checkpoint would be looked for
        (and stood in for by :func:`hashed_words` when absent)."""
        self.text_features = None
        folders = [path.parent] if path else [p.parent for p in candidates(self.weights, self._weights_dir)]
        tokenize = self.backbone.tokenizer(folders, random_weights=path is None)
        super().load_weights(path)
        with self.inference():
            tokens = tokenize(self.templates.sentences).to(self.device)
            self.text_features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(self.backbone.preprocess(frames)).float(), dim=-1)
        with torch.autocast(image.device.type, enabled=False):  # the head in fp32
            logits = self.model.logit_scale.exp().float() * image @ self.text_features.T
            n_levels = len(self.templates.levels)
            p = logits.view(len(image), self.templates.n_dimensions, n_levels).softmax(-1)
            levels = torch.arange(1, n_levels + 1, dtype=p.dtype, device=p.device)
            return torch.cat([p.flatten(1), p @ levels, image], dim=1)
