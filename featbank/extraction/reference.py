"""Reference cases: featbank's deep extractors against the worked examples their authors publish.

``featbank weights verify`` shows that a checkpoint is the expected file and that it loads strictly
into the architecture. It cannot show that the architecture, preprocessing and scoring around the
checkpoint compute what the authors' code computes; a first real load would otherwise go unchecked.
Where the authors publish an example (an input file and the number their code prints for it), a
reference case closes that gap: the published input goes through featbank's model the way the
authors' example runs, and the result is compared with the published number
(``featbank weights verify --reference``).

A case is data (:class:`ReferenceCase`): the extractor whose checkpoint it checks, the input file,
the published values, a tolerance with its reason, and where the numbers come from.
:func:`run_case` runs one case on an extractor that is already set up and returns a
:class:`ReferenceResult`. featbank ships no media, so the user supplies the inputs
(:class:`ReferenceInput` says which file of which repository each one is).

Cases exist only where the published number could be read: FAST-VQA and FasterVQA (the
VQAssessment/FAST-VQA-and-FasterVQA README) and OpenAI CLIP ViT-B/32 (the openai/CLIP README). The
other deep extractors (LIQE, SlowFast, Q-Align, timm backbones) have no published example number
in the material this was written from, and none is made up for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from featbank.extraction.decode import open_media
from featbank.extraction.sampling import FragmentClips

if TYPE_CHECKING:
    import torch

    from extractors.base import Extractor


@dataclass(frozen=True)
class ReferenceInput:
    """A published example's input file, which the user downloads from the upstream repository.

    It is looked up in each reference folder by its name and by its path in the upstream
    repository, so either a folder holding the file or a clone of the repository works.
    """

    filename: str
    upstream_path: str
    repository: str

    def find(self, directories: Sequence[Path]) -> Path | None:
        """The first existing file among ``directory/filename`` and ``directory/upstream_path``."""
        for directory in directories:
            for path in (directory / self.filename, directory / self.upstream_path):
                if path.is_file():
                    return path
        return None

    def missing(self, directories: Sequence[Path]) -> str:
        """Why the file was not found and where it comes from."""
        where = ", ".join(str(d) for d in directories) or "nowhere: no --reference-dir and no weights directory"
        return (f"{self.filename} was not found (looked in {where}, by name and as {self.upstream_path}); it is "
                f"the file {self.upstream_path} of {self.repository}: download it and pass its folder with "
                f"--reference-dir")


class Measure(Protocol):
    """How a case computes its values from a set-up extractor and the input file: the values and a
    note on how they were obtained."""

    def __call__(self, extractor: Extractor, path: Path) -> tuple[tuple[float, ...], str]: ...


@dataclass(frozen=True)
class ReferenceCase:
    """One published example: run ``measure`` on ``extractor`` (a registry spec) with ``input`` and
    compare with ``expected``; every value must be within ``tolerance`` (absolute)."""

    extractor: str
    input: ReferenceInput
    expected: tuple[float, ...]
    tolerance: float
    measure: Measure
    provenance: str

    @property
    def name(self) -> str:
        return self.input.filename


@dataclass(frozen=True)
class ReferenceResult:
    """What one case measured, against what was published."""

    case: ReferenceCase
    measured: tuple[float, ...]
    note: str = ""

    @property
    def expected(self) -> tuple[float, ...]:
        return self.case.expected

    @property
    def tolerance(self) -> float:
        return self.case.tolerance

    @property
    def diff(self) -> float:
        """The largest absolute difference (NaN when a measured value is NaN)."""
        return float(np.max(np.abs(np.subtract(self.measured, self.expected))))

    @property
    def passed(self) -> bool:
        return self.diff <= self.tolerance  # False for NaN


def run_case(case: ReferenceCase, extractor: Extractor, path: Path) -> ReferenceResult:
    """Run ``case`` on ``extractor`` (already set up, real or random weights) with the input at ``path``."""
    measured, note = case.measure(extractor, path)
    if len(measured) != len(case.expected):
        raise ValueError(f"{case.extractor}: measured {len(measured)} values, the case expects {len(case.expected)}")
    return ReferenceResult(case, tuple(float(v) for v in measured), note)


# --- FAST-VQA / FasterVQA ----------------------------------------------------------------------

FASTVQA_REPOSITORY = "github.com/VQAssessment/FAST-VQA-and-FasterVQA"
FASTVQA_DEMO = ReferenceInput("10053703034.mp4", "demos/10053703034.mp4", FASTVQA_REPOSITORY)

FASTVQA_TOLERANCE = 0.02
"""On the [0, 1] score ``vqa.py`` prints. ``vqa.py`` draws its fragment offsets from an unseeded RNG,
so the published number is one draw, and its own sampling noise is in it: averaging our draws
(:attr:`VqaPyScore.draws`) removes ours, not theirs, and the README gives no per-run spread. The
tolerance is therefore set from the rescaling, not from a measured spread: near 0.45 the sigmoid's
slope is 0.25, so 0.02 is a raw-score difference of 0.08 of the rescaling's std (0.0034 for
FAST-VQA, 0.0029 for FasterVQA), where the std is (by its role in ``vqa.py``; the script does not
say) the spread of raw scores over the videos the constants were fitted on. A difference from other fragment offsets of the same video must stay
well inside that for the model to rank videos at its published correlations; a wrong checkpoint,
head or preprocessing moves the score by whole stds. The spread of our draws is reported with each
result, so a user sees when sampling noise itself approaches the tolerance."""


@dataclass(frozen=True)
class VqaPyScore:
    """The score FAST-VQA's ``vqa.py`` prints, computed with featbank's FAST-VQA model.

    ``vqa.py`` (the README's "upgraded" inference script, as carried by the repository's forks) reads
    the ``val-kv1k`` entry of the model's option file and:

    * samples frames with ``SampleFrames(clip_len, num_clips)`` and no ``frame_interval``, whose
      default is 1: ``num_clips`` runs of ``clip_len`` *consecutive* frames at MMAction2's test-mode
      positions (:class:`~featbank.extraction.sampling.FragmentClips` with ``frame_interval=1``).
      FasterVQA too: the script asks for temporal fragments only when the data arguments *outside*
      ``sample_types`` carry ``t_frag``, and ``f3dvqa-b.yml`` keeps ``t_frag`` inside, so its
      FasterVQA run is one clip of 32 consecutive frames, not 8 temporal fragments;
    * cuts spatial fragments as ``get_spatial_fragments`` does, ``aligned`` frames per offset draw
      (32 for FAST-VQA-B, 8 for FasterVQA: the extractor's own :meth:`~extractors.fastvqa.FastVQA.fragments`);
    * runs the evaluator, whose backbone uses its default ``resized_window_size=(4, 7, 7)``
      attention windows for both models (featbank's FAST-VQA-B extractor keeps 8x7x7, see
      :mod:`extractors.fastvqa`), and averages the head's local quality maps over every clip;
    * prints ``sigmoid((score - mean) / std)`` with the model's constants from its ``mean_stds``.

    Each of ``draws`` runs takes other fragment offsets (steps ``draw * num_clips + k``); the
    measured value is the mean of the draws' printed scores. A draw costs ``num_clips`` Video
    Swin-T passes (about 16 s each on two busy CPU cores, measured here).
    """

    num_clips: int
    mean: float
    std: float
    clip_len: int = 32
    window: tuple[int, int, int] = (4, 7, 7)
    draws: int = 4

    def rescale(self, raw: float) -> float:
        """``vqa.py``'s ``sigmoid_rescale``."""
        return 1.0 / (1.0 + math.exp(-(raw - self.mean) / self.std))

    def __call__(self, extractor: Extractor, path: Path) -> tuple[tuple[float, ...], str]:
        source = open_media(path)
        plan = FragmentClips(clip_len=self.clip_len, frame_interval=1, num_clips=self.num_clips).plan(source.info)
        wanted, where = np.unique(plan.frame_indices, return_inverse=True)
        clips = source.frames(wanted)[where.reshape(plan.frame_indices.shape)]  # (clips, T, H, W, 3)
        scores = [self.rescale(self.raw_score(extractor, clips, draw)) for draw in range(self.draws)]
        note = (f"mean of {self.draws} fragment draws (min {min(scores):.5f}, max {max(scores):.5f}), "
                f"{self.num_clips} clip(s) of {self.clip_len} frames from {plan.frame_indices[:, 0].tolist()}")
        return (float(np.mean(scores)),), note

    def raw_score(self, extractor: Extractor, clips: np.ndarray, draw: int) -> float:
        """The head's mean quality over every clip, with draw ``draw``'s fragment offsets."""
        steps = draw * self.num_clips + np.arange(self.num_clips)

        def quality(frames: torch.Tensor) -> torch.Tensor:
            return extractor.model(extractor.fragments(frames, steps), self.window)[1]

        return float(extractor.on_device(clips, quality).mean())


FASTVQA_CASES = (
    ReferenceCase(
        "fastvqa", FASTVQA_DEMO, (0.44953,), FASTVQA_TOLERANCE,
        VqaPyScore(num_clips=4, mean=-0.110198185, std=0.04178565, draws=2),  # a draw averages 4 clips already
        f"{FASTVQA_REPOSITORY} README ('Infer for a single MP4 video'): `python vqa.py -m FAST-VQA` prints 0.44953"),
    ReferenceCase(
        "fastvqa:faster", FASTVQA_DEMO, (0.42326,), FASTVQA_TOLERANCE,
        VqaPyScore(num_clips=1, mean=0.14759505, std=0.03613452),
        f"{FASTVQA_REPOSITORY} README ('Infer for a single MP4 video'): `python vqa.py` (FasterVQA) prints 0.42326"),
)


# --- OpenAI CLIP -------------------------------------------------------------------------------

CLIP_REPOSITORY = "github.com/openai/CLIP"

CLIP_TOLERANCE = 0.002
"""Absolute, on each probability. OpenAI's example ran their fp16 model (``clip.load`` on a GPU)
with PIL's resize; featbank runs fp32 on the CPU and reproduces the resize on tensors. fp16 keeps
about three significant digits, so a cosine moves by about 1e-3 and a logit (100 x cosine) by about
0.1 (an estimate: no checkpoint was at hand to measure it), which moves a probability ``p`` by about
``p * (1 - p) * 0.1``: under 0.001 for every value here. 0.002 leaves that margin twice over; random or
wrong weights give about 1/3 each, and a model that still ranks "a diagram" first but is
mis-preprocessed shifts the small probabilities by far more than their own size (0.004, 0.003)."""


@dataclass(frozen=True)
class ClipProbabilities:
    """OpenAI's README example: ``softmax(logit_scale.exp() * cos(image, text))`` over ``texts``,
    with the image prepared as ``clip.load``'s transform does (the extractor's own preprocessing,
    after Pillow's ``convert("RGB")`` as in that transform)."""

    texts: tuple[str, ...]

    def __call__(self, extractor: Extractor, path: Path) -> tuple[tuple[float, ...], str]:
        image = open_media(path).frames(np.zeros(1, dtype=np.int64))[None]  # (1, 1, H, W, 3)

        def probabilities(frames: torch.Tensor) -> torch.Tensor:
            # elementwise product and sum, not a matmul, so the cosines stay fp32 under autocast
            cosines = (extractor.embed(frames)[:, None, :] * extractor.encode_texts(self.texts)[None]).sum(-1)
            return (extractor.model.logit_scale.exp().float() * cosines).softmax(-1)

        probs = extractor.on_device(image, probabilities)[0]
        return tuple(float(p) for p in probs), "probabilities of " + ", ".join(repr(t) for t in self.texts)


CLIP_CASES = (
    ReferenceCase(
        "clip", ReferenceInput("CLIP.png", "CLIP.png", CLIP_REPOSITORY), (0.9927937, 0.00421068, 0.00299572),
        CLIP_TOLERANCE, ClipProbabilities(("a diagram", "a dog", "a cat")),
        f"{CLIP_REPOSITORY} README ('Usage'): clip.load('ViT-B/32') on CLIP.png prints "
        f"Label probs [[0.9927937 0.00421068 0.00299572]]"),
)

CASES: tuple[ReferenceCase, ...] = FASTVQA_CASES + CLIP_CASES
"""Every reference case, in the order ``featbank weights verify --reference`` reports them."""
