"""The contract every extractor fulfils, from hand-crafted statistics to frozen deep networks.

An extractor is one file: a subclass of :class:`Extractor` that declares its temporal sampling, the
size and names of its per-step features, its weights (if any), and a batched ``forward``. The
orchestrator decodes each video once, cuts it into the steps each extractor's sampling asks for,
calls ``forward`` (through ``forward_item``, which also hands it the step indices and any
manifest text) on batches of steps, and stores both the per-step matrix and the pooled vector.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from featbank.extraction.pixels import RGB_FRAMES, Pixels
from featbank.extraction.sampling import Sampling
from featbank.extraction.weights import ResolvedWeights, WeightsPolicy, WeightsSpec, resolve


class Extractor(ABC):
    """Base class. Subclasses set ``name`` and ``version`` and implement the abstract members.

    ``forward`` receives, for video samplings, ``(B, frames_per_step, H, W, 3)`` uint8 RGB frames at
    the video's native resolution (each extractor resizes as its model needs, on its own device),
    or, when :attr:`pixels` asks for luma or fewer RGB frames, a list of
    :class:`~featbank.extraction.pixels.StepPixels`, one per step; for
    :class:`~featbank.extraction.sampling.AudioSeconds`, ``(B, sample_rate)`` float32 mono audio,
    one second per row. It returns ``(B, step_dim)`` float32.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    weights: ClassVar[WeightsSpec | None] = None
    batch_size: ClassVar[int] = 8
    weight_variants: ClassVar[tuple[str, ...]] = ()
    """Registry specs of variants that read another checkpoint than the default (``fastvqa:faster``),
    so ``featbank weights list|verify|import`` cover their files too."""
    pixels: ClassVar[Pixels] = RGB_FRAMES
    """What the decoder converts each sampled frame into (see :mod:`featbank.extraction.pixels`)."""
    text_column: ClassVar[str | None] = None
    """Manifest column whose text this extractor also reads (the generation prompt of AI-generated
    content); it arrives in :meth:`forward_item`."""

    device: str = "cpu"
    random_weights: bool = False
    resolved_weights: ResolvedWeights | None = None

    @property
    @abstractmethod
    def sampling(self) -> Sampling: ...

    @abstractmethod
    def feature_names(self) -> list[str]:
        """Names of the per-step features, ``step_dim`` of them."""

    @abstractmethod
    def forward(self, batch: np.ndarray) -> np.ndarray: ...

    def forward_item(self, batch: np.ndarray, steps: np.ndarray, text: str | None) -> np.ndarray:
        """``forward`` with where the batch comes from: ``steps`` are the rows' step indices in the
        item's plan and ``text`` the item's :attr:`text_column` text (``None`` without one).

        Extraction always calls this. Most features depend on the frames alone, so by default it is
        :meth:`forward`; an extractor whose output also depends on the prompt (``clip:prompt``) or
        on the step (FAST-VQA draws each clip's fragment offsets afresh) overrides it."""
        return self.forward(batch)

    @property
    def step_dim(self) -> int:
        return len(self.feature_names())

    def pooled_names(self) -> list[str]:
        names = self.feature_names()
        return [f"{n}_mean" for n in names] + [f"{n}_std" for n in names]

    @property
    def pooled_dim(self) -> int:
        return len(self.pooled_names())

    def pool(self, steps: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean and standard deviation over the valid steps: the pooling most VQA heads start from."""
        valid = steps[mask.astype(bool)]
        if valid.shape[0] == 0:
            return np.full(self.pooled_dim, np.nan, dtype=np.float32)
        return np.concatenate([valid.mean(0), valid.std(0)]).astype(np.float32)

    def options(self) -> dict:
        """Constructor options that change the features; part of the bank key."""
        return {}

    def config(self) -> dict:
        config = {
            "name": self.name,
            "version": self.version,
            "options": self.options(),
            "sampling": self.sampling.config(),
        }
        if self.random_weights:  # random features get their own group, never mixed with real ones
            config["weights"] = "random"
        return config

    def runtime(self) -> dict:
        """How this run computes (device, precision): recorded in provenance, not part of the key,
        because the features agree across them within the tolerance the tests check."""
        return {"device": self.device}

    def weights_provenance(self) -> dict | None:
        """What the bank records about the weights behind a group: file and checksum, or 'random'."""
        if self.weights is None:
            return None
        if self.random_weights:
            return {"filename": self.weights.filename, "random": True}
        found = self.resolved_weights
        return {"filename": self.weights.filename, "random": False,
                "sha256": found.sha256 if found else self.weights.sha256,
                "pinned_by": found.pinned_by if found else None}

    @property
    def key(self) -> str:
        """Bank group name: same name, version, options and sampling ⇒ same features ⇒ same group."""
        digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}@{digest[:10]}"

    def setup(self, device: str = "cpu", weights: WeightsPolicy | None = None) -> None:
        """Load models onto ``device``. Extractors with a :attr:`weights` spec resolve it here, so a
        missing checkpoint fails the run before any video is decoded."""
        policy = weights or WeightsPolicy()
        self.device = device
        self.adopt(policy)
        if self.weights is None:
            return
        self.resolved_weights = None if policy.random else resolve(self.weights, policy)
        self.load_weights(self.resolved_weights.path if self.resolved_weights else None)

    def adopt(self, policy: WeightsPolicy) -> None:
        """Take the run's weights policy; with random weights the bank key changes (see config)."""
        self.random_weights = policy.random and self.weights is not None

    def load_weights(self, path: Path | None) -> None:
        """Build the model and load ``path`` into it; ``None`` means seeded random weights."""
        raise NotImplementedError(f"{self.name} declares weights but does not load them")

    def verify_checkpoint(self, path: Path) -> None:
        """Check that ``path`` holds exactly this architecture's parameters (``weights verify --load``);
        raises :class:`~featbank.errors.WeightsMissingError` naming what differs."""
        self.load_weights(path)
