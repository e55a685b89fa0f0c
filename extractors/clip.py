"""OpenAI CLIP ViT-B/32 image embeddings per key frame: ``clip``, and ``clip:prompt`` for AI-generated video.

CLIP (Radford et al., ICML 2021, "Learning Transferable Visual Models From Natural Language
Supervision", ``openai/CLIP``) embeds images and text in one space. Its image embedding carries
content and much of the perceptual quality signal, which is why CLIP-based quality models (CLIP-IQA,
LIQE, and the text-video alignment branch of AI-generated-video metrics) build on it.

``clip``
    One key frame per second (:class:`~featbank.extraction.sampling.KeyFrames`) → the 512-d image embedding,
    L2-normalised. The frame is prepared as OpenAI's ``clip.load`` transform does (``clip/clip.py``
    ``_transform``): torchvision ``Resize(224, BICUBIC)`` on the PIL image (short side to 224), a
    ``CenterCrop(224)``, and OpenAI's mean and std; see :func:`resize_short_side_like_pil` and
    :func:`center_crop_like_torchvision` for how that is reproduced on the device.
``clip:prompt``
    For AI-generated content, whose quality includes how well the video matches the prompt it was
    generated from: per step the image embedding, the embedding of the item's prompt (the
    manifest's ``prompt`` column; CLIP's tokenizer, truncated to its 77-token context) and
    their cosine, ``512 + 512 + 1`` values. The orchestrator passes the prompt to
    :meth:`ClipPrompt.forward_item`.

The architecture is open_clip's OpenAI-compatible ViT-B-32 with QuickGELU, whose parameter names
are OpenAI's own (``visual.conv1.weight``, ``transformer.resblocks.N...``, ``logit_scale``), so
OpenAI's file loads with ``strict=True``. That file, ``ViT-B-32.pt``, is a TorchScript archive with
fp16 weights and three non-parameter entries, handled as open_clip's
``build_model_from_openai_state_dict`` does (see :func:`read_openai_checkpoint`). OpenAI's download
URL embeds the file's SHA-256, so the spec is pinned to it.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from extractors import register
from extractors.deep import (DeepExtractor, center_crop, frames_to_float, load_checkpoint, normalize,
                             resize_short_side, unwrap)
from featbank.errors import FeatbankError
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsSpec

IMAGE_SIZE = 224
EMBED_DIM = 512
OPENAI_NON_PARAMETERS = ("input_resolution", "context_length", "vocab_size")
"""Entries of OpenAI's archive that are not model state; OpenAI's ``build_model`` and open_clip's
``build_model_from_openai_state_dict`` both drop them before the strict load."""

VIT_B_32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"


@dataclass(frozen=True)
class ClipArchitecture:
    """The sizes of an OpenAI CLIP ViT (heads are ``width // 64``, as in OpenAI's ``build_model``)."""

    embed_dim: int = EMBED_DIM
    image_size: int = IMAGE_SIZE
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12

    def build(self) -> CLIP:
        """open_clip's CLIP with QuickGELU, the activation OpenAI trained with (``force_quick_gelu``)."""
        vision = CLIPVisionCfg(layers=self.vision_layers, width=self.vision_width, head_width=64,
                               patch_size=self.patch_size, image_size=self.image_size)
        text = CLIPTextCfg(context_length=self.context_length, vocab_size=self.vocab_size,
                           width=self.text_width, heads=self.text_width // 64, layers=self.text_layers)
        return CLIP(self.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)


VIT_B_32 = ClipArchitecture()


@lru_cache(maxsize=1)
def tokenizer() -> SimpleTokenizer:
    """CLIP's byte-pair tokenizer (the vocabulary ships with open_clip): ``clip.tokenize``'s tokens,
    with text longer than 77 tokens truncated (and still closed by the end-of-text token)."""
    return SimpleTokenizer()


# --- Preprocessing -----------------------------------------------------------------------------


def clip_preprocess(frames: torch.Tensor) -> torch.Tensor:
    """Key frames ``(B, 1, H, W, 3)`` uint8 → ``(B, 3, 224, 224)`` as OpenAI's ``_transform`` makes them."""
    x = frames_to_float(frames)[:, 0]
    x = resize_short_side(x, IMAGE_SIZE, "bicubic", as_8bit=True)  # OpenAI resizes the 8-bit PIL image
    x = center_crop(x, IMAGE_SIZE)
    return normalize(x, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


# --- Checkpoints -------------------------------------------------------------------------------


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files with a top-level ``<name>/constants.pkl`` record."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in archive.namelist())


def read_openai_checkpoint(path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict in OpenAI's ``ViT-B-32.pt`` (TorchScript) or in a plain state-dict file.

    torch's weights-only loader refuses TorchScript archives, so OpenAI's file is read with
    ``torch.jit.load(...).state_dict()``, as ``clip.load(jit=False)`` and open_clip do. Set-up and
    ``featbank weights verify`` resolve the file first, so only a file with the pinned SHA-256
    (OpenAI's own) gets here; every other format goes through the weights-only loader.
    """
    if not is_torchscript_archive(path):
        return load_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").state_dict()


def openai_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The CLIP state dict: unwrapped from a training checkpoint's ``model_state_dict`` if needed,
    without OpenAI's non-parameter entries."""
    state = unwrap(checkpoint, containers=("model_state_dict", "state_dict"))
    return {k: v for k, v in state.items() if k not in OPENAI_NON_PARAMETERS}


# --- Extractors --------------------------------------------------------------------------------


class OpenAIClip(DeepExtractor):
    """What the CLIP-based extractors share: the model, its encoders and how they run.

    Both encoders run under the extractor's precision; the L2 normalisation and everything after it
    (similarities, softmax) run in fp32.
    """

    architecture: ClassVar[ClipArchitecture] = VIT_B_32

    @property
    def sampling(self) -> KeyFrames:
        return KeyFrames()

    def build_model(self) -> nn.Module:
        return self.architecture.build()

    def read_checkpoint(self, path: Path) -> Mapping:
        return read_openai_checkpoint(path)

    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        return openai_state_dict(checkpoint)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``(N, 3, 224, 224)`` → ``(N, embed_dim)`` unit vectors (fp32)."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → ``(N, embed_dim)`` unit vectors (fp32), from the end-of-text token as in CLIP."""
        tokens = tokenizer()(list(texts), context_length=self.architecture.context_length).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


EMBEDDING_NAMES = [f"emb_{i:03d}" for i in range(EMBED_DIM)]


@register
class ClipExtractor(OpenAIClip):
    """``clip``: the CLIP image embedding of each key frame; ``clip:prompt`` builds :class:`ClipPrompt`."""

    name = "clip"
    version = "1"
    batch_size = 32
    weights = WeightsSpec(
        filename="ViT-B-32.pt",
        sha256=VIT_B_32_SHA256,
        source=f"https://openaipublic.azureedge.net/clip/models/{VIT_B_32_SHA256}/ViT-B-32.pt",
        license="MIT",
        tool_cache="~/.cache/clip",
    )

    def __new__(cls, variant: str = "") -> ClipExtractor:
        if variant not in ("", "prompt"):
            raise FeatbankError(f"clip:{variant}: unknown variant; use clip (image embedding) or clip:prompt "
                                f"(image and prompt embeddings and their cosine, for AI-generated content)")
        return super().__new__(ClipPrompt if variant == "prompt" else cls)

    def __init__(self, variant: str = "") -> None:  # the variant picked the class in __new__
        super().__init__()

    def feature_names(self) -> list[str]:
        return list(EMBEDDING_NAMES)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode_images(clip_preprocess(frames))


class ClipPrompt(ClipExtractor):
    """``clip:prompt``: image embedding, prompt embedding and their cosine per key frame."""

    text_column = "prompt"

    def __init__(self, variant: str = "prompt") -> None:
        super().__init__()
        self._prompt: tuple[str, torch.Tensor] | None = None

    def options(self) -> dict:
        return {"variant": "prompt"}

    def feature_names(self) -> list[str]:
        return EMBEDDING_NAMES + [f"prompt_{n}" for n in EMBEDDING_NAMES] + ["prompt_cosine"]

    def load_weights(self, path: Path | None) -> None:
        self._prompt = None  # an embedding from the previous weights
        super().load_weights(path)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise TypeError("clip:prompt needs each video's prompt: it is run through forward_item(batch, steps, "
                        "prompt), with the prompt from the manifest's 'prompt' column")

    def prompt_embedding(self, text: str) -> torch.Tensor:
        """The prompt's unit embedding; every batch of one video has the same prompt, so the last
        one is kept."""
        cached = self._prompt  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != text:
            cached = self._prompt = (text, self.encode_texts([text])[0])
        return cached[1]

    def forward_item(self, batch: np.ndarray, steps: np.ndarray, text: str | None) -> np.ndarray:
        if not (text or "").strip():
            raise ValueError("clip:prompt: this item's prompt is empty; fill the manifest's 'prompt' column")

        def with_prompt(frames: torch.Tensor) -> torch.Tensor:
            image = self.embed(frames)
            prompt = self.prompt_embedding(text).expand_as(image)
            return torch.cat([image, prompt, (image * prompt).sum(-1, keepdim=True)], dim=1)

        return self.on_device(batch, with_prompt)
