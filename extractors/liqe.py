"""LIQE per key frame: quality, scene and distortion as a joint distribution over 495 captions.

LIQE (Zhang, Zhai, Wei, Yang & Ma, CVPR 2023, "Blind Image Quality Assessment via Vision-Language
Correspondence: A Multitask Learning Perspective", ``zwx8981/LIQE``) fine-tunes all of CLIP
ViT-B/32 so that an image matches the caption "a photo of a {scene} with {distortion} artifacts,
which is of {quality} quality" for its 5 x 9 x 11 = 495 label combinations. The softmax over the
495 image-caption similarities is a joint distribution; summing it gives the quality, scene and
distortion marginals, and the quality score is the expected quality level, sum_k k * p(quality_k),
between 1 (bad) and 5 (perfect).

What this extractor computes on one key frame per second follows LIQE's test-time code (``LIQE.py``,
``demo.py``, and ``utils.py``/``ImageDataset2.py`` used by ``BIQA_benchmark.py``):

1. ``AdaptiveResize(768)``: a frame whose short side is 768 or more is resized (bilinear) to a
   short side of 768; smaller frames keep their native resolution. LIQE cannot cut a 224 x 224
   patch from a frame with a side under 224 (its code asserts); such frames are enlarged to a
   short side of 224, the floor ``AdaptiveResize`` offers for this (its ``image_size`` argument).
2. OpenAI's mean and std, then every 224 x 224 patch on a grid with stride 48 if either side of
   the (resized) frame is 1024 or more, else 32, in row-major order; of those ``n`` patches,
   the 15 at indices ``0, s, 2s, ... 14s`` with ``s = n // 15``. With fewer than 15 patches all are
   used (pyiqa's ``liqe_arch.py`` does this; LIQE's own code asserts there are 15).
3. Each patch's unit image embedding against the 495 unit caption embeddings, times
   ``exp(logit_scale)``: the joint logits, averaged over the patches, then the softmax.

Per step: the 495 patch-averaged joint logits (caption order: quality, then scene, then
distortion, as ``itertools.product`` in LIQE), the 5 + 9 + 11 marginal probabilities, the quality
score, and the 512-d image embedding (the mean of the patches' unit embeddings, re-normalised):
1033 values. The caption embeddings are computed once, at set-up, with the loaded weights.

``LIQE.pt`` (linked from the repository's README) is the ``state_dict`` of the fine-tuned CLIP model:
LIQE's code builds ``clip.load("ViT-B/32", jit=False)`` and calls ``load_state_dict`` on it, so its
names are OpenAI CLIP's (:mod:`extractors.clip`). The repository is MIT-licensed and publishes no
checksum.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from extractors import register
from extractors.clip import EMBEDDING_NAMES, IMAGE_SIZE, OpenAIClip
from extractors.deep import frames_to_float, normalize, resize_short_side
from featbank.extraction.weights import WeightsSpec

QUALITIES = ("bad", "poor", "fair", "good", "perfect")
SCENES = ("animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others")
DISTORTIONS = ("jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast",
               "overexposure", "underexposure", "spatial", "quantization", "other")
PROMPTS = [f"a photo of a {scene} with {distortion} artifacts, which is of {quality} quality"
           for quality, scene, distortion in product(QUALITIES, SCENES, DISTORTIONS)]
"""LIQE's captions, word for word (including "a animal"): the model was fine-tuned on these."""

ADAPTIVE_SHORT_SIDE = 768
LARGE_SIDE = 1024
STRIDE, LARGE_STRIDE = 32, 48
N_PATCHES = 15


def liqe_resize(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → the frame LIQE cuts patches from (step 1 of the module docstring)."""
    short = min(x.shape[-2:])
    if short < IMAGE_SIZE:
        return resize_short_side(x, IMAGE_SIZE, "bilinear", as_8bit=True)
    if short >= ADAPTIVE_SHORT_SIDE:
        return resize_short_side(x, ADAPTIVE_SHORT_SIDE, "bilinear", as_8bit=True)
    return x


def patch_grid(height: int, width: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The stride, and the grid rows and columns of the patches LIQE selects (step 2)."""
    stride = LARGE_STRIDE if max(height, width) >= LARGE_SIDE else STRIDE
    rows, cols = (height - IMAGE_SIZE) // stride + 1, (width - IMAGE_SIZE) // stride + 1
    n = rows * cols
    index = torch.arange(min(n, N_PATCHES)) * max(1, n // N_PATCHES)
    return stride, index // cols, index % cols


def liqe_patches(frames: torch.Tensor) -> torch.Tensor:
    """Key frames ``(B, 1, H, W, 3)`` uint8 → normalised patches ``(B, P, 3, 224, 224)``."""
    x = normalize(liqe_resize(frames_to_float(frames)[:, 0]), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    stride, rows, cols = patch_grid(*x.shape[-2:])
    grid = x.unfold(2, IMAGE_SIZE, stride).unfold(3, IMAGE_SIZE, stride)  # (B, 3, rows, cols, 224, 224), a view
    return grid[:, :, rows.to(x.device), cols.to(x.device)].permute(0, 2, 1, 3, 4)


def label(text: str) -> str:
    return text.replace(" ", "_")


@register
class Liqe(OpenAIClip):
    """LIQE's joint caption logits, marginals, quality score and image embedding per key frame."""

    name = "liqe"
    version = "1"
    batch_size = 8  # frames; each is 15 patches through the image encoder
    weights = WeightsSpec(
        filename="LIQE.pt",
        sha256=None,  # not published upstream; pinned on `featbank weights import`
        source="https://github.com/zwx8981/LIQE (README, 'Pre-trained weights': "
               "https://drive.google.com/file/d/1GoKwUKNR-rvX11QbKRN8MuBZw2hXKHGh/view)",
        license="MIT",
    )

    text_features: torch.Tensor | None = None

    def feature_names(self) -> list[str]:
        return ([f"logit_{q}_{label(s)}_{label(d)}" for q, s, d in product(QUALITIES, SCENES, DISTORTIONS)]
                + [f"p_quality_{q}" for q in QUALITIES]
                + [f"p_scene_{label(s)}" for s in SCENES]
                + [f"p_distortion_{label(d)}" for d in DISTORTIONS]
                + ["quality_score"] + EMBEDDING_NAMES)

    def load_weights(self, path: Path | None) -> None:
        super().load_weights(path)
        with self.inference():
            self.text_features = self.encode_texts(PROMPTS)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        patches = liqe_patches(frames)
        b, p = patches.shape[:2]
        features = self.encode_images(patches.reshape(b * p, *patches.shape[2:])).view(b, p, -1)
        with torch.autocast(features.device.type, enabled=False):  # the head in fp32
            logits = (self.model.logit_scale.exp().float() * features @ self.text_features.T).mean(1)
            joint = logits.softmax(-1).view(b, len(QUALITIES), len(SCENES), len(DISTORTIONS))
            quality = joint.sum((2, 3))
            levels = torch.arange(1, len(QUALITIES) + 1, dtype=quality.dtype, device=quality.device)
            return torch.cat([logits, quality, joint.sum((1, 3)), joint.sum((1, 2)),
                              (quality * levels).sum(-1, keepdim=True),
                              F.normalize(features.mean(1), dim=-1)], dim=1)
