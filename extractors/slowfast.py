"""SlowFast R50 motion features per second: the motion stream of SimpleVQA and its NTIRE/KVQ descendants.

SimpleVQA (Sun et al., ACM MM 2022; sunwei925/SimpleVQA, ``extracted_SlowFast_features_VQA.py``)
pairs a trained spatial network with frozen motion features, a design later NTIRE and KVQ
short-form-video systems reuse: a Kinetics-400 SlowFast R50 (pytorchvideo's
``slowfast_r50``, checkpoint ``SLOWFAST_8x8_R50.pyth``) run on a 32-frame clip per second of video,
keeping the globally average-pooled output of the last residual stage of each pathway. The slow
pathway gives 2048 values, the fast pathway 256, together 2304 per second.

What this extractor does, and why:

* Sampling: ``Clips(frames=32)``, 32 frames spread evenly over each second. SimpleVQA takes 32
  consecutive frames from the start of each second, which spans ~1.1 s at 30 fps but ~1.3 s at
  24 fps and 2+ s at 15 fps; spreading them makes every clip cover exactly its own second whatever
  the frame rate, so the step is the same 1-s step as the other per-second extractors.
* Spatial: short side resized to 224 (antialiased bilinear) and a 224x224 centre crop: the
  Kinetics evaluation transform (pytorchvideo's ``ShortSideScale`` + ``CenterCrop``) at the 224
  crop the network was trained on and SimpleVQA runs it at. Unlike SimpleVQA's square resize this
  keeps the aspect ratio, so motion is not anisotropically distorted on portrait video.
* Normalisation: Kinetics mean 0.45 and std 0.225 per channel on [0, 1] RGB, as in SimpleVQA and
  pytorchvideo's model-zoo transforms.
* Pathways: the fast pathway sees all 32 frames; the slow pathway sees 8 of them (alpha = 4),
  chosen as ``linspace(0, 31, 8)`` truncated to integers, i.e. frames 0, 4, 8, 13, 17, 22, 26, 31:
  the ``pack_pathway_output`` rule of PySlowFast that pytorchvideo's tutorial and SimpleVQA copy,
  so the slow pathway spans the whole clip as in training.
* Features: SimpleVQA runs ``blocks[0:5]`` (stem and the four stages with their fast-to-slow
  fusions), then the head's ``AvgPool3d`` ((8, 7, 7) slow, (32, 7, 7) fast) followed by an adaptive
  average pool; for the 8/32 x 224 x 224 input that is the mean over all of time and space, which
  is what we take. The classification head stays in the model so the official checkpoint loads
  strictly, but it is never run.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from extractors import register
from extractors.deep import DeepExtractor, center_crop, frames_to_float, normalize, resize_short_side
from featbank.extraction.sampling import Clips
from featbank.extraction.weights import WeightsSpec

CLIP_FRAMES = 32
ALPHA = 4  # frame-rate ratio between the fast and the slow pathway
CROP = 224
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
SLOW_DIM, FAST_DIM = 2048, 256
BACKBONE_BLOCKS = 5  # stem + res2..res5 (each with its fusion); blocks 5 and 6 are the head
RESIZE_CHUNK = 8
"""Frames converted to float and resized at a time: bounds the float copy of 4K input to ~0.8 GB."""


def slow_indices(n_frames: int, alpha: int = ALPHA) -> torch.Tensor:
    """Frames the slow pathway sees: ``n_frames // alpha`` spread from the first to the last frame.

    PySlowFast's ``pack_pathway_output`` (copied by SimpleVQA and pytorchvideo's tutorial) takes
    ``linspace(0, T - 1, T // alpha)`` truncated to integers rather than every ``alpha``-th frame,
    so the slow pathway covers the whole clip, last frame included.
    """
    return torch.linspace(0, n_frames - 1, n_frames // alpha).long()


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, W, 3)`` uint8 → ``(B, 3, T, 224, 224)`` Kinetics-normalised float32 clips."""
    b, t = frames.shape[:2]
    flat = frames.reshape(b * t, 1, *frames.shape[2:])
    chunks = [center_crop(resize_short_side(frames_to_float(chunk), CROP), CROP)
              for chunk in flat.split(RESIZE_CHUNK)]
    clips = normalize(torch.cat(chunks), KINETICS_MEAN, KINETICS_STD).reshape(b, t, 3, CROP, CROP)
    return clips.permute(0, 2, 1, 3, 4)


@register
class SlowFast(DeepExtractor):
    """Frozen Kinetics-400 SlowFast R50: 2304 motion features (slow 2048 + fast 256) per second."""

    name = "slowfast"
    version = "1"
    batch_size = 4  # a step is a 32x224x224 clip (~50 GFLOPs): 4 keep CPU memory and latency modest
    weights: ClassVar[WeightsSpec] = WeightsSpec(
        filename="SLOWFAST_8x8_R50.pyth",
        sha256=None,  # the pytorchvideo model zoo publishes no checksum
        source="https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth "
               "(pytorchvideo model zoo, slowfast_r50)",
        license="Apache-2.0",
    )

    @property
    def sampling(self) -> Clips:
        return Clips(frames=CLIP_FRAMES)

    def feature_names(self) -> list[str]:
        return [f"slow_{i}" for i in range(SLOW_DIM)] + [f"fast_{i}" for i in range(FAST_DIM)]

    def build_model(self) -> nn.Module:
        """pytorchvideo's ``slowfast_r50`` architecture: the model-zoo checkpoint was saved from
        ``create_slowfast`` with exactly these arguments (see ``pytorchvideo.models.hub.slowfast``)."""
        from pytorchvideo.models.slowfast import create_slowfast

        return create_slowfast(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1))

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        clips = preprocess(frames)
        pathways = [clips.index_select(2, slow_indices(clips.shape[2]).to(clips.device)), clips]
        for block in self.model.blocks[:BACKBONE_BLOCKS]:
            pathways = block(pathways)
        slow, fast = (x.float().mean(dim=(2, 3, 4)) for x in pathways)
        return torch.cat([slow, fast], dim=1)
