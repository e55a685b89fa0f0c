"""``featbank weights verify --reference``: the authors' published examples run through featbank's models.

No checkpoint is available to the test suite, so the comparison logic runs on random weights (a
one-layer CLIP and a random FasterVQA, with the published expected values swapped for what that
model produces, or for something far off), the command line is tested with weights absent and with
a tiny random CLIP saved under OpenAI's file name, and the real comparison runs only where real
checkpoints are present in ``$FEATBANK_WEIGHTS``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REALDATA
from PIL import Image

import extractors
from extractors.clip import ClipArchitecture, ClipExtractor, OpenAIClip
from extractors.fastvqa import FastVQA
from featbank.cli import main
from featbank.extraction import reference
from featbank.extraction.decode import open_media
from featbank.extraction.reference import (
    CASES,
    CLIP_CASES,
    FASTVQA_CASES,
    FASTVQA_DEMO,
    ReferenceResult,
    run_case,
)
from featbank.extraction.sampling import FragmentClips
from featbank.extraction.weights import WeightsPolicy

REAL_WEIGHTS = os.environ.get("FEATBANK_WEIGHTS")  # read at import: conftest clears it for every test
TINY = ClipArchitecture(vision_width=64, vision_layers=1, text_width=64, text_layers=1)
CLIP_CASE = CLIP_CASES[0]
FASTER_CASE = next(c for c in FASTVQA_CASES if c.extractor == "fastvqa:faster")
RANDOM = WeightsPolicy(random=True)


def write_png(path: Path, seed: int = 0) -> Path:
    """A 300x200 picture of smooth colour regions, saved as PNG (stands in for CLIP.png)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((300, 200), Image.BILINEAR).save(path)
    return path


@pytest.fixture
def tiny_clip(monkeypatch, tmp_path) -> Path:
    """A weights directory holding a random one-layer CLIP under OpenAI's file name, its checksum pin
    relaxed, so `verify --reference` resolves, loads and runs a real model in a fraction of a second."""
    monkeypatch.setattr(OpenAIClip, "architecture", TINY)
    monkeypatch.setattr(ClipExtractor, "weights", replace(ClipExtractor.weights, sha256=None))
    directory = tmp_path / "weights"
    directory.mkdir()
    torch.manual_seed(1)
    torch.save(TINY.build().state_dict(), directory / ClipExtractor.weights.filename)
    return directory


# --- The result and its verdict ------------------------------------------------------------------


def test_the_verdict_is_the_largest_difference_against_the_tolerance():
    case = replace(CLIP_CASE, expected=(0.5, 0.3, 0.2), tolerance=0.01)
    within = ReferenceResult(case, (0.505, 0.3, 0.195))
    assert math.isclose(within.diff, 0.005) and within.passed
    assert within.expected == (0.5, 0.3, 0.2) and within.tolerance == 0.01
    outside = ReferenceResult(case, (0.5, 0.32, 0.18))
    assert math.isclose(outside.diff, 0.02) and not outside.passed
    broken = ReferenceResult(case, (0.5, float("nan"), 0.2))  # a NaN never passes, wherever it is
    assert math.isnan(broken.diff) and not broken.passed


# --- Cases on random weights ---------------------------------------------------------------------


def test_clip_case_computes_the_readmes_probabilities_and_judges_them(tiny_clip, tmp_path):
    image = write_png(tmp_path / "CLIP.png")
    ex = extractors.create("clip")
    ex.setup("cpu", RANDOM)
    result = run_case(CLIP_CASE, ex, image)
    probs = np.array(result.measured)
    assert probs.shape == (3,) and math.isclose(probs.sum(), 1.0, rel_tol=1e-6)
    # the same probabilities from the extractor's own image feature (its stored embedding) and texts
    frames = np.array(Image.open(image).convert("RGB"))[None, None]
    embedding = torch.from_numpy(ex.forward(frames))
    with torch.inference_mode():
        texts = ex.encode_texts(["a diagram", "a dog", "a cat"])
        by_hand = (ex.model.logit_scale.exp() * embedding @ texts.T).softmax(-1)[0].numpy()
    np.testing.assert_allclose(probs, by_hand, rtol=1e-5, atol=1e-7)
    assert not result.passed  # random weights are not OpenAI's model
    assert run_case(replace(CLIP_CASE, expected=result.measured), ex, image).diff == 0.0
    far = tuple(p + 10 * CLIP_CASE.tolerance for p in result.measured)
    assert not run_case(replace(CLIP_CASE, expected=far), ex, image).passed


def test_fastvqa_case_is_the_rescaled_quality_of_the_vqa_py_clip(make_video, monkeypatch):
    """One short draw on a small video, recorded at the model: the case feeds it the fragments of
    the clip ``vqa.py`` samples (consecutive frames from the middle) with 4x7x7 windows, and scores
    ``vqa.py``'s sigmoid rescaling of the quality the model returns. One Video Swin-T forward pass."""
    video = make_video(FASTVQA_DEMO.filename, n=40, audio=False)
    ex = FastVQA("faster")
    ex.setup("cpu", RANDOM)
    calls = []

    def recording(fragments: torch.Tensor, window: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, quality = model(fragments, window)
        calls.append((fragments.clone(), window, quality.clone()))
        return pooled, quality

    model = ex.model
    monkeypatch.setattr(ex, "model", recording)
    measure = replace(FASTER_CASE.measure, clip_len=8, draws=1)  # 8 frames: a quarter of the cost
    result = run_case(replace(FASTER_CASE, measure=measure), ex, video)
    (fragments, window, quality), = calls
    start = (40 - 8 + 1) // 2  # MMAction2's test-mode offset for one clip of 8 consecutive frames
    clip = torch.from_numpy(open_media(video).frames(np.arange(start, start + 8)))[None]
    assert torch.equal(fragments, ex.fragments(clip, steps=[0])) and window == (4, 7, 7)
    by_hand = 1 / (1 + math.exp(-(float(quality.mean()) - measure.mean) / measure.std))
    assert math.isclose(result.measured[0], by_hand, rel_tol=1e-6)
    assert f"1 clip(s) of 8 frames from [{start}]" in result.note
    assert not result.passed  # random weights are not the published model


@pytest.mark.realdata
def test_vqa_py_frames_of_the_published_demo_and_its_lookup_in_a_clone(realdata):
    """The demo is 240 frames: FAST-VQA-B's four 32-frame clips start at 26, 78, 130 and 182, and
    FasterVQA's one clip at 104 (``vqa.py``'s ``SampleFrames`` with its default frame interval 1)."""
    clone = realdata / "VQAssessment+FAST-VQA-and-FasterVQA"
    path = FASTVQA_DEMO.find([clone])
    assert path == clone / "demos" / "10053703034.mp4"  # found by its path in the repository
    info = open_media(path).info
    for case, starts in [(FASTVQA_CASES[0], [26, 78, 130, 182]), (FASTER_CASE, [104])]:
        plan = FragmentClips(clip_len=32, frame_interval=1, num_clips=case.measure.num_clips).plan(info)
        assert plan.frame_indices[:, 0].tolist() == starts
        assert (np.diff(plan.frame_indices, axis=1) == 1).all()


# --- The command line ----------------------------------------------------------------------------


def test_absent_weights_skip_every_case_without_running_one(tmp_path, monkeypatch, capsys):
    def never(*args):
        raise AssertionError("a reference case ran without its weights")

    monkeypatch.setattr(reference, "run_case", never)
    empty = tmp_path / "weights"
    empty.mkdir()
    args = ["weights", "verify", "--reference", "--weights-dir", str(empty)]
    assert main([*args, "--extractor", "fastvqa,fastvqa:faster,clip,slowfast"]) == 4  # verify's own code
    out = capsys.readouterr().out
    assert "FAST_VQA_B_1_4.pth was not found" in out
    for spec in ("fastvqa", "fastvqa:faster", "clip"):
        assert any(line.split()[:1] == [spec] and line.endswith("skipped: weights absent")
                   for line in out.splitlines()), out
    assert "no published reference example for: slowfast" in out
    assert main(["weights", "list", "--reference", "--weights-dir", str(empty)]) == 2
    assert "go with `featbank weights verify`" in capsys.readouterr().err


def test_a_missing_reference_input_is_skipped_and_named_not_failed(tiny_clip, capsys):
    assert main(["weights", "verify", "--reference", "--weights-dir", str(tiny_clip), "--extractor", "clip"]) == 0
    out = capsys.readouterr().out
    assert "skipped: reference input missing" in out
    assert f"CLIP.png was not found (looked in {tiny_clip}" in out and "github.com/openai/CLIP" in out


def test_the_cli_runs_the_case_and_exits_4_on_a_mismatch_0_on_a_match(tiny_clip, tmp_path, monkeypatch, capsys):
    """The tiny random CLIP is not OpenAI's model: the published probabilities fail (exit 4). With the
    case's expected values set to what that model gives, the same command passes (exit 0); the
    input is then found in the weights directory, the default reference folder."""
    inputs = tmp_path / "inputs"
    write_png(inputs / "CLIP.png")
    base = ["weights", "verify", "--reference", "--weights-dir", str(tiny_clip), "--extractor", "clip"]
    assert main([*base, "--reference-dir", str(inputs)]) == 4
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("clip "))
    assert row.split()[-1] == "FAIL" and "0.99279 / 0.00421 / 0.00300" in row

    ex = extractors.create("clip")
    ex.setup("cpu", WeightsPolicy(tiny_clip))
    measured = run_case(CLIP_CASE, ex, inputs / "CLIP.png").measured
    monkeypatch.setattr(reference, "CASES", (*FASTVQA_CASES, replace(CLIP_CASE, expected=measured)))
    write_png(tiny_clip / "CLIP.png")
    assert main(base) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("clip "))
    assert row.split()[-1] == "PASS" and row.split()[-3] == "0.00000"
    assert "expected: github.com/openai/CLIP README" in out


# --- Real checkpoints ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not REAL_WEIGHTS, reason="real checkpoints needed: $FEATBANK_WEIGHTS is not set, so the "
                                             "published examples cannot be reproduced")
def test_published_examples_with_the_real_checkpoints(capsys):
    directory = Path(REAL_WEIGHTS)
    present = [case.extractor for case in CASES
               if (directory / extractors.create(case.extractor).weights.filename).is_file()]
    if not present:
        pytest.skip(f"no checkpoint with a published example in $FEATBANK_WEIGHTS ({directory})")
    folders = [directory] + ([REALDATA / "VQAssessment+FAST-VQA-and-FasterVQA"] if REALDATA.is_dir() else [])
    code = main(["weights", "verify", "--reference", "--weights-dir", str(directory), "--extractor", ",".join(present),
                 *[arg for folder in folders for arg in ("--reference-dir", str(folder))]])
    out = capsys.readouterr().out
    if " PASS" not in out and " FAIL" not in out:
        pytest.skip(f"the reference inputs are missing (see below); nothing was compared\n{out}")
    assert code == 0, out
