"""Any timm image backbone as a frozen per-key-frame extractor: ``timm:<model_name>``.

Image backbones pretrained on ImageNet (ResNet, ConvNeXt, Swin, RegNet, EVA-02, ...) carry much of
the quality signal in today's VQA models: SimpleVQA (Sun et al., ACM MM 2022) and its successors
pool a frozen or fine-tuned 2-D backbone over one key frame per second. This extractor runs any
backbone from timm (Wightman, ``huggingface/pytorch-image-models``) on the first frame of each
second (:class:`~featbank.extraction.sampling.KeyFrames`, SimpleVQA's convention) in one of two forms:

``timm:<model_name>``
    The model's pooled pre-logits embedding: ``forward_features`` then
    ``forward_head(pre_logits=True)``, ``head_hidden_size`` values per frame (``num_features`` for
    most models). The frame is prepared as timm's own evaluation transform does for that checkpoint
    (``timm.data.resolve_data_config``: the short side resized to ``input_size / crop_pct`` with the
    checkpoint's interpolation, a centre crop to ``input_size``, its mean and std), done here on the
    device on the uint8 frame.

``timm:<model_name>/stages``
    SimpleVQA's spatial feature (``model/UGC_BVQA_model.py`` of ``sunwei925/SimpleVQA``): the
    global mean and standard deviation over positions of the feature maps of the backbone's last
    three stages, per stage ``[mean, std]`` in stage order. For ResNet-50 these are ``layer2``,
    ``layer3`` and ``layer4``: ``(512 + 1024 + 2048) * 2 = 7168`` values, the 7168 spatial inputs of
    SimpleVQA's regression head (SimpleVQA does not pool ``layer1``). The standard deviation is the
    unbiased one (``torch.std``), as there. The frame is prepared as SimpleVQA's ``test_demo.py`` and
    ``train.py`` test transform do, whatever the checkpoint's own configuration: short side resized
    to 520 (bilinear), centre crop 448, ImageNet mean and std. SimpleVQA starts from torchvision's
    ImageNet ResNet-50 weights, which timm serves as ``resnet50.tv_in1k``
    (``timm:resnet50.tv_in1k/stages``); SimpleVQA then fine-tunes them end to end, so the features of
    its released model differ from these frozen ones.

A name without a pretrained tag (``resnet50``) means timm's default tag for it (``resnet50.a1_in1k``
at timm 1.0.31); the full ``<architecture>.<tag>`` is what the bank key and the checkpoint file name
record, so a later timm release that changes the default cannot silently change a bank group.

The architecture is ``timm.create_model(name, pretrained=False)`` with the checkpoint's own
``num_classes`` (timm takes it from the pretrained configuration), so the checkpoint timm publishes
on the Hugging Face Hub (``timm/<name>``, ``model.safetensors``, saved from these same definitions)
loads with ``strict=True``, classifier included. Nothing is downloaded: the file is found in the
weights directory as ``timm/<name>.safetensors`` or in an existing Hugging Face cache snapshot.
timm publishes no checksums, so the file is pinned on import.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from extractors import register
from extractors.deep import DeepExtractor, center_crop, frames_to_float, normalize, resize_short_side
from featbank.errors import FeatbankError
from featbank.extraction.sampling import KeyFrames
from featbank.extraction.weights import WeightsSpec

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

# timm is imported inside the functions that need it: importing it takes about a second, which every
# featbank command would pay once this module is registered, timm specs or not.

STAGES = "stages"
VARIANTS = ("pooled", STAGES)

# SimpleVQA's spatial-branch transform (test_demo.py / train.py: Resize(520), CenterCrop(448),
# ImageNet normalisation); torchvision's Resize defaults to bilinear.
SIMPLEVQA_SHORT_SIDE = 520
SIMPLEVQA_CROP = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
N_STAGES = 3  # SimpleVQA pools ResNet-50's layer2, layer3 and layer4

HF_FILENAME = "model.safetensors"  # what timm's push_to_hub writes into every timm/<name> repo
HOWTO_NAMES = ("Find names with `python -c \"import timm; print(timm.list_pretrained('*convnext*'))\"` "
               "(any pattern) or at https://huggingface.co/timm")


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre crop and normalise, as timm's ``transforms_imagenet_eval`` does.

    ``squash`` resizes both sides to ``resize`` (timm's ``crop_mode='squash'``); otherwise the short
    side goes to ``resize`` and the aspect ratio is kept (``'center'``, timm's default).
    """

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    squash: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in [0, 1] → ``(B, 3, crop, crop)`` normalised."""
        if self.squash:
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.interpolation,
                              align_corners=False, antialias=True)
        else:
            x = resize_short_side(x, self.resize, self.interpolation)
        # PIL, which timm's transform resizes with, returns uint8: bicubic overshoot is clipped.
        x = center_crop(x.clamp_(0.0, 1.0), self.crop)
        return normalize(x, self.mean, self.std)


def parse_spec(arg: str | None) -> tuple[str, str]:
    """``"resnet50/stages"`` → ``("resnet50", "stages")``; a bare name is the pooled variant."""
    if not arg:
        raise FeatbankError(f"timm needs a model name: timm:<model_name>[/stages], e.g. timm:convnext_tiny. "
                            f"{HOWTO_NAMES}")
    model, _, variant = arg.strip().partition("/")
    variant = variant or "pooled"
    if variant not in VARIANTS:
        raise FeatbankError(f"timm:{arg}: unknown variant {variant!r}; use timm:<model_name> (pooled "
                            f"embedding) or timm:<model_name>/{STAGES} (SimpleVQA stage statistics)")
    return model, variant


def resolve_name(name: str) -> tuple[str, PretrainedCfg]:
    """The full ``architecture.tag`` name and its pretrained configuration, or a helpful error."""
    import timm

    if not timm.is_model(name.partition(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise FeatbankError(f"timm {timm.__version__} has no model {name!r}.{hint} {HOWTO_NAMES}")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:  # an unknown tag
        tags = timm.list_pretrained(f"{name.partition('.')[0]}.*")
        raise FeatbankError(f"timm: {error} Known: {', '.join(tags) or 'none'}") from None
    if cfg is None or not cfg.hf_hub_id:
        raise FeatbankError(f"timm {timm.__version__} names no published checkpoint for {name!r}, so there is "
                            f"no official file to load; choose a name from timm.list_pretrained()")
    if cfg.custom_load:
        raise FeatbankError(f"timm converts the checkpoint of {name!r} with custom code at load time; "
                            f"featbank loads timm-format state dicts only")
    return f"{cfg.architecture}.{cfg.tag}", cfg


def is_non_commercial(license_name: str) -> bool:
    """Creative Commons NC licences and licences that say non-commercial in their name."""
    lowered = license_name.lower()
    return lowered.startswith("cc-by-nc") or "noncommercial" in lowered or "non-commercial" in lowered


def weights_for(full_name: str, cfg: PretrainedCfg) -> WeightsSpec:
    """Where the official file lives (the Hub repository timm loads it from) and under what terms."""
    hf_filename = cfg.hf_hub_filename or HF_FILENAME
    license_name = cfg.license or "not stated by timm; see the model card"
    return WeightsSpec(
        filename=f"timm/{full_name}.safetensors",
        sha256=None,  # timm publishes none; pinned on `featbank weights import`
        source=f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{hf_filename}",
        license=license_name,
        non_commercial=is_non_commercial(license_name),
        hf_repo=cfg.hf_hub_id,
        hf_filename=hf_filename,
    )


def stage_levels(model: nn.Module, full_name: str) -> list[int]:
    """Indices (into ``feature_info``) of the last ``N_STAGES`` stages, each at a coarser scale."""
    info = getattr(model, "feature_info", None) or []
    levels = list(range(len(info)))[-N_STAGES:]
    reductions = [info[i]["reduction"] for i in levels]
    if len(levels) < N_STAGES or any(a >= b for a, b in zip(reductions, reductions[1:])):
        raise FeatbankError(f"timm:{full_name}/{STAGES} needs a hierarchical backbone whose last "
                            f"{N_STAGES} stages work at successively coarser scales (ResNet, ConvNeXt, "
                            f"RegNet, ...); {full_name} has stage strides {[f['reduction'] for f in info]}")
    return levels


def architecture_shell(full_name: str) -> nn.Module:
    """The architecture without weights, for its sizes: built on the meta device, which costs nothing
    even for billion-parameter models. A few constructors compute with tensors (RegNet's width
    schedule calls ``torch.unique``, which has no meta kernel in some torch releases); those are
    built on the CPU instead."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(full_name, pretrained=False)
    except NotImplementedError:
        return timm.create_model(full_name, pretrained=False)


@register
class TimmBackbone(DeepExtractor):
    """A timm backbone on one key frame per second; see the module docstring for the two variants."""

    name = "timm"
    version = "1"
    batch_size = 16
    # fp16 on CUDA, measured on an H100 with random weights against fp32 (16 frames of 540x960):
    # worst relative L2 error 1e-4..8e-4 for resnet50 (and /stages), convnext_base/large, swin_base,
    # regnety_040 and eva02_base/large, against 2e-3..6e-3 for bf16; eva02_large at 448 ran 2.2x faster.
    cuda_precision = "fp16"

    def __init__(self, spec: str | None = None) -> None:
        from timm.data import resolve_data_config

        requested, self.variant = parse_spec(spec)
        self.model_name, cfg = resolve_name(requested)
        self.weights = weights_for(self.model_name, cfg)
        shell = architecture_shell(self.model_name)
        if self.variant == STAGES:
            if cfg.fixed_input_size:
                raise FeatbankError(f"timm:{self.model_name}/{STAGES} runs at SimpleVQA's {SIMPLEVQA_CROP}x"
                                    f"{SIMPLEVQA_CROP} crop, but {self.model_name} only accepts its fixed "
                                    f"input size {cfg.input_size[1:]}")
            self.levels = stage_levels(shell, self.model_name)
            self._names = [f"{shell.feature_info[i]['module'].replace('.', '_')}_{stat}_{c}"
                           for i in self.levels for stat in ("mean", "std")
                           for c in range(shell.feature_info[i]["num_chs"])]
            self.preprocess = Preprocess(SIMPLEVQA_SHORT_SIDE, SIMPLEVQA_CROP, "bilinear",
                                         IMAGENET_MEAN, IMAGENET_STD)
        else:
            self._names = [f"pre_logits_{i}" for i in range(shell.head_hidden_size)]
            self.preprocess = self.timm_preprocess(resolve_data_config({}, model=shell))

    def timm_preprocess(self, data: dict) -> Preprocess:
        """timm's evaluation transform for this checkpoint, for the cases its configurations use."""
        _, height, width = data["input_size"]
        mode = data.get("crop_mode") or "center"
        if height != width or mode not in ("center", "squash") or data["interpolation"] not in ("bilinear",
                                                                                                 "bicubic"):
            raise FeatbankError(f"timm:{self.model_name}: its evaluation transform (input {height}x{width}, "
                                f"crop_mode {mode}, {data['interpolation']}) is not one featbank reproduces "
                                f"(square input, centre or squash crop, bilinear or bicubic)")
        return Preprocess(resize=int(height / data["crop_pct"]), crop=height, interpolation=data["interpolation"],
                          mean=tuple(data["mean"]), std=tuple(data["std"]), squash=mode == "squash")

    @property
    def sampling(self) -> KeyFrames:
        return KeyFrames()

    def feature_names(self) -> list[str]:
        return list(self._names)

    def options(self) -> dict:
        return {"model": self.model_name, "variant": self.variant}

    def build_model(self) -> nn.Module:
        import timm

        return timm.create_model(self.model_name, pretrained=False)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(frames_to_float(frames)[:, 0])  # one key frame per step
        if self.variant == STAGES:
            maps = self.model.forward_intermediates(x, indices=self.levels, stop_early=True,
                                                    intermediates_only=True)
            stats = []
            for fmap in maps:
                flat = fmap.float().flatten(2)  # (B, C, positions)
                stats += [flat.mean(-1), flat.std(-1)]
            return torch.cat(stats, 1)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
