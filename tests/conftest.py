"""Shared fixtures: tiny real media files and small test extractors registered for the session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import extractors
from extractors.base import Extractor
from featbank.extraction.sampling import Clips, KeyFrames

REALDATA = Path(os.environ.get("FEATBANK_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))


@pytest.fixture(autouse=True)
def no_user_weights(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test looks for checkpoints only where it puts them: a real file in this machine's
    weights directory, torch-hub, Hugging Face or CLIP cache would turn a missing-weights test into
    a load. The caches point into the test's ``tmp_path`` (``torch/``, ``hf/``); ``$HOME`` (for
    ``~/.cache/clip``) into a fresh directory beside it, so ``tmp_path`` holds only what a test writes."""
    monkeypatch.delenv("FEATBANK_WEIGHTS", raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture(scope="session", autouse=True)
def sigint_as_at_a_terminal() -> None:
    """Children that tests stop with Ctrl-C get SIGINT at its default, as a terminal's foreground job has it.

    A suite started in the background by a non-interactive shell (``./run.sh test &``, some CI
    runners) inherits SIGINT *ignored*, its children too, and Python keeps an ignored SIGINT
    ignored: a Ctrl-C test then saw the run complete (the "lost Ctrl-C" of earlier full-suite runs).
    With a handler here, every child starts with SIGINT at its default disposition.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real data not present at {REALDATA}")
    return REALDATA


def moving_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A textured pattern drifting right by one pixel per frame: every frame differs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h, w + n, 3), dtype=np.uint8)
    return np.stack([base[:, i:i + w] for i in range(n)])


@pytest.fixture
def make_video(tmp_path: Path):
    from featbank.demo.synth import write_video

    def make(name: str = "clip.mp4", n: int = 30, fps: float = 15.0, audio: bool = True,
             h: int = 48, w: int = 64, seed: int = 0) -> Path:
        sound = None
        if audio:
            t = np.arange(int(16000 * n / fps)) / 16000
            sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        return write_video(tmp_path / name, moving_frames(n, h, w, seed), fps, audio=sound)

    return make


class MeanColour(Extractor):
    """Test extractor: mean RGB of the key frame. Cheap and exactly predictable."""

    name = "test-mean"
    version = "1"
    batch_size = 3

    @property
    def sampling(self):
        return KeyFrames(max_steps=8)

    def feature_names(self) -> list[str]:
        return ["r", "g", "b"]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return batch[:, 0].reshape(batch.shape[0], -1, 3).mean(1).astype(np.float32)


class ClipSpread(Extractor):
    """Test extractor over 4-frame clips: records which frames it saw (via mean intensity)."""

    name = "test-clip"
    version = "1"

    @property
    def sampling(self):
        return Clips(frames=4, max_steps=8)

    def feature_names(self) -> list[str]:
        return ["mean", "spread"]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        m = batch.reshape(batch.shape[0], batch.shape[1], -1).mean(-1)
        return np.stack([m.mean(1), m.std(1)], 1).astype(np.float32)


class Exploding(MeanColour):
    """Test extractor that always raises: its failures must stay its own."""

    name = "test-boom"

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("kaboom")


for _cls in (MeanColour, ClipSpread, Exploding):
    extractors.register(_cls)
