"""What every frozen deep extractor shares: build the architecture, load a checkpoint strictly, run
batches on a device at a measured precision, and the tensor preprocessing the papers use.

A deep extractor subclasses :class:`DeepExtractor` and supplies three things: ``build_model`` (the
architecture, with the official checkpoint's parameter names), ``embed`` (uint8 frames on the device
→ features) and, when the checkpoint file wraps or prefixes its state dict, ``state_dict_from``.
Loading is always strict: a checkpoint whose names or shapes differ from the architecture is a
different model, and features from it would be silently wrong.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors.base import Extractor
from featbank.errors import UsageError, WeightsMissingError

PRECISION_ENV = "FEATBANK_PRECISION"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RANDOM_SEED = 0
"""Seed of the random weights built on request (``--random-weights``), so dry runs repeat."""


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint without executing code from it: safetensors, or torch's weights-only pickle.

    Files in torch's zip format (``torch.save`` since 1.6) are memory-mapped, so checking a
    multi-GB file does not read it whole; the legacy format (before 1.6) cannot be mapped and is
    read whole, still weights-only. Anything else (a text file, a truncated download, a pickle of
    arbitrary objects) is a :class:`WeightsMissingError` that says which of these it is.
    """
    if path.stat().st_size == 0:
        raise WeightsMissingError(f"{path} is not a readable checkpoint: empty file (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path))
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise WeightsMissingError(_refusal(path, str(exc))) from exc
    except Exception as exc:  # torch/safetensors raise RuntimeError, OSError, SafetensorError... on damaged files
        if "TorchScript" in str(exc):
            raise WeightsMissingError(f"{path} is a TorchScript archive, which holds code as well as weights; "
                                      f"featbank reads weights only: save the model's state_dict with "
                                      f"`torch.save(model.state_dict(), PATH)`") from exc
        raise WeightsMissingError(f"{path} is not a readable checkpoint (damaged or truncated download?): "
                                  f"{(str(exc).strip() or type(exc).__name__).splitlines()[0].split('. ')[0][:200]}") from exc
    if not isinstance(checkpoint, Mapping):
        raise WeightsMissingError(f"{path} holds a {type(checkpoint).__name__}, not a state dict of named tensors")
    return checkpoint


_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*([^\n]*?)(?: was not an allowed global|\.?$)", re.M)


def _refusal(path: Path, message: str) -> str:
    """Why the weights-only unpickler refused ``path``, in words that say what to do."""
    found = _UNPICKLER_REASON.search(message)
    reason = found.group(1).strip() if found else message.strip().splitlines()[0][:200]
    if reason.startswith("Unsupported global"):
        return (f"{path} holds Python objects besides tensors ({reason}); featbank loads checkpoints "
                f"weights-only and never runs code from them: re-save it with "
                f"`torch.save(model.state_dict(), PATH)`")
    return f"{path} is not a PyTorch checkpoint (the weights-only unpickler stopped at: {reason})"


def unwrap(checkpoint: Mapping, containers: Sequence[str] = ("state_dict", "model_state", "model")) -> dict:
    """The state dict inside the usual training-script wrappers (``{"state_dict": ...}`` and kin)."""
    for name in containers:
        inner = checkpoint.get(name)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    return dict(checkpoint)


def parameter_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Names and shapes of every tensor in ``module``'s state dict: what a checkpoint must match."""
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)``, with shape mismatches reported with the missing and
    unexpected names in one message that says which file is not the expected model."""
    expected = parameter_shapes(model)
    state = dict(state)
    for name in set(expected) - set(state):
        if name.endswith("num_batches_tracked"):  # a training counter older files omit; unused at inference
            state[name] = model.state_dict()[name]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if list(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def few(names: list[str]) -> str:
            return ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "")

        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 "shape mismatch: " + few([f"{k} {list(state[k].shape)} vs {expected[k]}" for k in wrong])
                 if wrong else ""]
        raise WeightsMissingError(f"{source} does not match the architecture: "
                                  + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


def checked_device(name: str) -> torch.device:
    """``name`` as a torch device, or a :class:`UsageError` naming the devices this machine has,
    before any model is built (torch's own refusal comes later, as a RuntimeError mid-set-up)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r} is not a torch device ({exc}); use cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UsageError(f"--device {name}: this machine has {count} usable CUDA device(s); use "
                             f"--device cpu" + (f" or cuda:0..cuda:{count - 1}" if count else ""))
    return device


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, W, 3)`` uint8 → ``(B, T, 3, H, W)`` float32 in [0, 1], on the frames' device."""
    return frames.permute(0, 1, 4, 2, 3).float().div_(255.0)


def resize_short_side(x: torch.Tensor, size: int, mode: str = "bilinear", as_8bit: bool = False) -> torch.Tensor:
    """``torchvision.transforms.Resize(size)`` on ``(..., 3, H, W)`` in [0, 1]: short side ``size``,
    long side ``int(size * long / short)`` (truncated, as torchvision does), antialiased (PIL's
    kernels, also when enlarging). ``as_8bit`` rounds the result to 8 bits, as resizing a PIL image
    does, for recipes whose official pipeline resizes 8-bit images."""
    *lead, c, h, w = x.shape
    out_hw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if (h, w) == out_hw:
        return x
    flat = F.interpolate(x.reshape(-1, c, h, w), size=out_hw, mode=mode, align_corners=False,
                         antialias=mode != "nearest")
    if as_8bit:
        flat = flat.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)
    return flat.reshape(*lead, c, *out_hw)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``torchvision.transforms.CenterCrop(size)``: offsets ``int(round(excess / 2))`` (half to even)."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel normalisation of ``(..., 3, H, W)``."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


class DeepExtractor(Extractor):
    """A frozen network. Subclasses declare ``weights`` and implement ``build_model`` and ``embed``.

    ``cuda_precision`` is the reduced precision the extractor runs at on a GPU; it is chosen per
    extractor after measuring that it moves features by less than the tolerance the tests allow
    (``benchmarks/bench_deep.py --precision``). On the CPU everything runs in fp32.
    ``$FEATBANK_PRECISION=fp32`` forces full precision everywhere.
    """

    cuda_precision: ClassVar[str] = "fp16"
    autocast: ClassVar[bool] = True
    """Run ``embed`` under autocast at :attr:`precision`; off for models whose weights are already
    stored at the run's precision (or quantised)."""
    model: nn.Module | None = None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The architecture, randomly initialised, with the official checkpoint's parameter names."""

    @abstractmethod
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, frames_per_step, H, W, 3)`` uint8 on :attr:`device` → ``(B, step_dim)`` features."""

    def read_checkpoint(self, path: Path) -> Mapping:
        """The checkpoint file's contents (override for formats the weights-only loader refuses)."""
        return load_checkpoint(path)

    def state_dict_from(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        """The model's state dict inside the official checkpoint file's structure."""
        return unwrap(checkpoint)

    @property
    def precision(self) -> str:
        forced = os.environ.get(PRECISION_ENV)
        if forced:
            if forced not in DTYPES:
                raise UsageError(f"${PRECISION_ENV} must be one of {', '.join(DTYPES)}, not {forced!r}")
            return forced
        return self.cuda_precision if self.device.startswith("cuda") else "fp32"

    def runtime(self) -> dict:
        return {"device": self.device, "precision": self.precision, "torch": torch.__version__}

    def load_weights(self, path: Path | None) -> None:
        checked_device(self.device)
        torch.manual_seed(RANDOM_SEED)
        model = self.build_model()
        if path is not None:
            load_strict(model, self.state_dict_from(self.read_checkpoint(path)), str(path))
        self.model = model.eval().requires_grad_(False).to(self.device)

    def verify_checkpoint(self, path: Path) -> None:
        """Strict names-and-shapes check on the CPU, without moving anything to a device. The file is
        read first, so one that is not a checkpoint at all fails before the model is built."""
        state = self.state_dict_from(self.read_checkpoint(path))
        load_strict(self.build_model(), state, str(path))

    def check_checkpoint(self, path: Path) -> None:
        """The quick check ``weights verify`` runs without ``--load``: the file reads, weights-only, as
        a checkpoint with named tensors where this extractor looks for its state dict. Names and
        shapes against the architecture are :meth:`verify_checkpoint`'s job."""
        state = self.state_dict_from(self.read_checkpoint(path))
        if not any(isinstance(value, torch.Tensor) for value in state.values()):
            raise WeightsMissingError(f"{path} reads as a checkpoint but holds no named tensors where "
                                      f"{self.name} looks for its state dict ({len(state)} entries: "
                                      f"{', '.join(map(str, list(state)[:5]))})")

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Inference mode, under autocast at :attr:`precision` when that is reduced."""
        dtype = DTYPES[self.precision]
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        enabled = self.autocast and dtype != torch.float32
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            yield

    def on_device(self, batch: np.ndarray, compute: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """``compute`` on the uint8 batch moved to :attr:`device`, under :meth:`inference`, returned
        as float32 numpy: the one path every deep ``forward`` / ``forward_item`` takes."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: call setup() before forward()")
        frames = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        with self.inference():
            out = compute(frames)
        return out.float().cpu().numpy()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.on_device(batch, self.embed)
