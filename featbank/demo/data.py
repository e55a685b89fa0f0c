"""A synthetic VQA dataset with known ground truth, for the demo and end-to-end tests.

Real datasets need downloads and licences; this one is made on the spot, yet its labels carry
real signal: each label follows from distortions that are actually applied to the pixels and the
audio, and that the demo's hand-crafted and audio statistics can see (sharpness and structure for
blur, grain and MSCN statistics for noise, blocking for compression, repeated frames for stutter,
saturation and colourfulness for colour, the high-frequency noise floor for audio hiss).

Pipeline, one clip at a time (memory stays at one clip): procedural **sources** → graded
**distortions** → **labels** → **writing** (H.264/AAC MP4 via :mod:`featbank.demo.synth`) →
:func:`synthesize`, which also writes ``manifest.csv``.

A **source** is one piece of content: a pattern family (gratings, spinning checkerboard, moving
shapes, scrolling texture, zone plate, plasma under a grid) with its own drawn parameters and
hues, plus its own sound (chord, chirp or arpeggio). Sources are brought to the same exposure,
contrast and colourfulness, as professionally shot sources are (see ``_well_exposed``), so that a
no-reference statistic can tell a washed-out clip from a merely dull one. Every variant of a
source shares its ``group``, so grouped cross-validation tests on content it never trained on.

Distortion levels run from 0 (none) to 4 (strong). Every distortion of every variant draws its
level independently with probabilities ``LEVEL_PROBS = (0.30, 0.20, 0.20, 0.15, 0.15)``: pristine is
the likeliest level, yet every label spreads over its range, and no two distortions are correlated
by construction:

============  ==========================================  ======================================
distortion    what levels 0 … 4 do                         label it drives
============  ==========================================  ======================================
blur          Gaussian, sigma 0, 0.7, 1.4, 2.4, 3.6 px     ``blur``
noise         additive Gaussian, sd 0 … 0.13 (of 0..1)     ``noise``
compression   x264 crf 18, 27, 33, 39, 45; levels 3 and    ``artifact`` (and ``blur``, ``noise``:
              4 also downscale to 3/4 and 1/2 first        see below)
stutter       every kept frame held for 1, 2, 3, 4, 6      ``temporal``
color         saturation 1, 0.75, 0.55, 0.35, 0.15         ``color``
audio_noise   white noise on the audio, sd 0 … 0.07        ``audio``
============  ==========================================  ======================================

Labels (FineVD's six dimensions plus an audio-quality score, 1–5) come from the *perceived*
severity ``e`` of each dimension (:func:`perceived_levels`): the level of its distortion, except
that the encoder's downscale softens the picture like blur (``e_blur = min(4, hypot(l_blur, r))``
with ``r`` = 0, 0, 0, 1, 2 for compression levels 0..4) and strong compression smooths grain away
(``e_noise = l_noise * (1 - 0.15 * l_compression)``)::

    q(e; s)  = 1 + 3.8 * exp(-(e / s) ** 1.5)        # 4.8 when pristine, saturating at both ends
    color    = q(e_color; 3.0)     noise    = q(e_noise; 2.5)     artifact = q(e_artifact; 2.2)
    blur     = q(e_blur; 2.5)      temporal = q(e_temporal; 2.8)  audio    = q(e_audio; 2.5)
    overall  = -0.8 * log(sum_d w_d * exp(-dim_d / 0.8))           # weighted soft-min
               w = color 0.12, noise 0.16, artifact 0.20, blur 0.20, temporal 0.14, audio 0.18

``overall`` is computed from the noise-free dimension scores ``dim_d`` above. Raters do not score
a dimension in isolation: their overall impression colours every dimension they are asked about
(the halo effect), and what they see colours what they hear (Beerends & De Caluwe, "The influence
of video quality on perceived audio quality and vice versa", JAES 1999). So each dimension's
label, the audio one included, is mostly that impression::

    label_d  = (1 - HALO) * dim_d + HALO * overall                  # HALO = 0.75

That reproduces what real fine-grained labels look like: on FineVD-GC each dimension correlates
0.87-0.94 with the overall score (``../shared/docs/challenges.md``, dimension correlations); here
0.85-0.92 over the distribution of levels (0.84-0.90 on the demo's 144 training labels, rater
noise included), against 0.11-0.59 for the dimensions judged on their own. Then every label gets
independent rater noise N(0, 0.15²) and is clipped to [1, 5]. The soft-min makes the worst
dimension dominate, as in human ratings, while the weights keep it from being a plain minimum.
Every label falls with its own distortion whatever the other levels, and that distortion stays
its strongest cause (correlation -0.66 to -0.84 with its level, at most -0.44 with any other);
``overall`` falls with every distortion, except that compression may lift a noisy clip a little
by hiding its grain.

The halo is why the demo needs both feature groups for every label, as real systems need several
extractors: the picture's statistics cannot see the sound's share of a colour score, nor the
audio statistics the picture's share of an audio score. With ``HALO = 0`` each label but
``overall`` is seen by one group only, one good learner is as close as the data allow, and a stack
has nothing to add (it then matches or beats the best single model on about 3 of 7 targets).

The manifest holds ``video_id``, ``path`` (``videos/<video_id>.mp4``), ``group`` (the source,
``srcNN``), the seven labels, and each level as ``meta_level_<distortion>``: the ``meta_`` prefix
makes :mod:`featbank.io.manifest` treat them as information, never as labels to fit.

Determinism: every random draw comes from a generator keyed by ``(seed, purpose, source,
variant)``, so a seed fixes every label and every pixel handed to the encoder, independently of the
order of generation. The encoded files are not byte-reproducible: libx264 (core 165 via PyAV 18)
produces slightly different bitstreams for identical frames from one encoder instance to the next,
even single-threaded, so demo scores move a little between runs.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image
from scipy import ndimage

from featbank.demo.synth import write_video

SAMPLE_RATE = 16000
DISTORTIONS = ("blur", "noise", "compression", "stutter", "color", "audio_noise")
LABELS = ("color", "noise", "artifact", "blur", "temporal", "audio", "overall")
LEVEL_PROBS = (0.30, 0.20, 0.20, 0.15, 0.15)
LEVEL_PREFIX = "meta_level_"

# Purposes of the random streams (see ``_rng``): separate streams keep the labels independent of
# how pixels are rendered, and a source independent of its variants.
_SOURCE, _LEVELS, _PIXEL_NOISE, _RATERS = range(4)

Pattern = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
Sound = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _rng(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """A generator for one purpose of one source/variant, reproducible on its own."""
    return np.random.default_rng([seed, purpose, *keys])


# --------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A pristine clip: ``(T, H, W, 3)`` float32 frames in [0, 1] and mono float32 audio."""

    frames: np.ndarray
    audio: np.ndarray


def _grid(n_frames: int, fps: float,
          size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time (s) and pixel coordinates, shaped to broadcast to ``(T, H, W)``."""
    height, width = size
    t = (np.arange(n_frames, dtype=np.float32) / fps)[:, None, None]
    y = np.arange(height, dtype=np.float32)[None, :, None]
    x = np.arange(width, dtype=np.float32)[None, None, :]
    return t, y, x


def _palette(value: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Map a scalar field to RGB with a cosine palette; ``phase`` (3,) gives a source its hues."""
    return 0.5 + 0.5 * np.cos(2 * np.pi * (value[..., None] + phase))


def _gratings(t: np.ndarray, y: np.ndarray, x: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Drifting gratings, one coarse, one medium, one fine (cycles/px): structure plus detail."""
    value = np.zeros(np.broadcast_shapes(t.shape, y.shape, x.shape), dtype=np.float32)
    for low, high in ((0.01, 0.03), (0.05, 0.1), (0.15, 0.22)):
        theta, freq, speed = rng.uniform(0, np.pi), rng.uniform(low, high), rng.uniform(0.5, 2.0)
        value += np.sin(2 * np.pi * (freq * (x * np.cos(theta) + y * np.sin(theta)) - speed * t))
    return _palette(value / 6, rng.uniform(0, 1, 3))


def _rotating_checker(t: np.ndarray, y: np.ndarray, x: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """A spinning checkerboard disc over a gradient: hard edges at every orientation."""
    height, width = y.shape[1], x.shape[2]
    cell, turns = rng.uniform(5, 10), rng.uniform(0.2, 0.6) * rng.choice([-1, 1])
    angle = 2 * np.pi * turns * t
    dx, dy = x - width / 2, y - height / 2
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = dy * np.cos(angle) - dx * np.sin(angle)
    checker = ((np.floor(u / cell) + np.floor(v / cell)) % 2)[..., None]
    light, dark, top, bottom = rng.uniform(0, 1, (4, 3)).astype(np.float32)
    disc = light * checker + dark * (1 - checker)
    background = top + (bottom - top) * (y / height)[..., None]
    inside = (dx**2 + dy**2 < (0.45 * min(height, width)) ** 2)[..., None]
    return np.where(inside, disc, background)


def _moving_shapes(t: np.ndarray, y: np.ndarray, x: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Striped discs on Lissajous paths over a drifting diagonal gradient."""
    height, width = y.shape[1], x.shape[2]
    start, end = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    ramp = ((x / width + y / height) / 2 + 0.1 * np.sin(2 * np.pi * 0.25 * t)) % 1
    frames = start + (end - start) * ramp[..., None]
    for _ in range(4):
        radius = rng.uniform(0.08, 0.18) * min(height, width)
        (freq_x, freq_y), (phase_x, phase_y) = rng.uniform(0.1, 0.5, 2), rng.uniform(0, 2 * np.pi, 2)
        cx = width / 2 + 0.35 * width * np.sin(2 * np.pi * freq_x * t + phase_x)
        cy = height / 2 + 0.35 * height * np.sin(2 * np.pi * freq_y * t + phase_y)
        stripes = 0.75 + 0.25 * np.sin(2 * np.pi * 0.3 * (x - cx))
        colour = rng.uniform(0, 1, 3).astype(np.float32) * stripes[..., None]
        inside = ((x - cx) ** 2 + (y - cy) ** 2 < radius**2)[..., None]
        frames = np.where(inside, colour, frames)
    return frames


def _scrolling_texture(t: np.ndarray, y: np.ndarray, x: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """A fixed noise-free texture (random 2-D sinusoids) scrolling at constant velocity."""
    velocity_x, velocity_y = rng.uniform(-30, 30, 2)
    xs, ys = x - velocity_x * t, y - velocity_y * t
    value = np.zeros(np.broadcast_shapes(t.shape, y.shape, x.shape), dtype=np.float32)
    for _ in range(6):
        freq, theta, phase = rng.uniform(0.01, 0.12), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        value += np.sin(2 * np.pi * freq * (xs * np.cos(theta) + ys * np.sin(theta)) + phase)
    return _palette(value / 8, rng.uniform(0, 1, 3))


def _zone_plate(t: np.ndarray, y: np.ndarray, x: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Rings expanding from a wandering centre, ever finer outwards (up to ~0.2 cycles/px)."""
    height, width = y.shape[1], x.shape[2]
    wander, speed = rng.uniform(0.1, 0.4), rng.uniform(1, 3)
    cx = width / 2 + 0.2 * width * np.cos(2 * np.pi * wander * t)
    cy = height / 2 + 0.2 * height * np.sin(2 * np.pi * wander * t)
    k = 0.3 * np.pi / np.hypot(height, width)
    value = np.cos(k * ((x - cx) ** 2 + (y - cy) ** 2) - 2 * np.pi * speed * t)
    return _palette(value / 4, rng.uniform(0, 1, 3))


def _plasma_grid(t: np.ndarray, y: np.ndarray, x: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Smooth colour plasma under a drifting 1-px grid: flat areas and thin lines in one frame."""
    a, b, c = rng.uniform(8, 20, 3)
    value = np.sin(x / a + t) + np.sin(y / b - 1.3 * t) + np.sin((x + y) / c + 0.7 * t)
    frames = _palette(value / 6, rng.uniform(0, 1, 3))
    spacing, drift = int(rng.integers(6, 12)), rng.uniform(5, 15)
    lines = (np.floor(x + drift * t) % spacing == 0) | (np.floor(y + drift * t) % spacing == 0)
    return np.where(lines[..., None], 0.5 * frames, frames)


PATTERNS: tuple[Pattern, ...] = (_gratings, _rotating_checker, _moving_shapes, _scrolling_texture,
                                 _zone_plate, _plasma_grid)


def _envelope(t: np.ndarray, period: float, attack: float = 0.02,
              decay: float = 3.0) -> np.ndarray:
    """Repeating attack-decay envelope: onsets like real sounds, and no clicks at restarts."""
    phase = t % period
    return np.minimum(phase / attack, 1.0) * np.exp(-decay * phase)


def _chord(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A major or minor triad on a random root, struck again every beat."""
    root, third = rng.uniform(150, 400), rng.choice([5 / 4, 6 / 5])
    tones = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, third, 1.5))
    return tones * _envelope(t, rng.uniform(0.5, 1.0))


def _chirp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rising sweep, repeated; the phase is the integral of the linearly rising frequency."""
    period, low = rng.uniform(0.5, 1.0), rng.uniform(200, 500)
    high, tau = low * rng.uniform(2, 4), t % period
    phase = 2 * np.pi * (low * tau + (high - low) * tau**2 / (2 * period))
    return np.sin(phase) * _envelope(t, period, decay=1.5)


def _arpeggio(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pentatonic arpeggio; each note restarts its envelope so note changes do not click."""
    root, note_length = rng.uniform(200, 450), rng.uniform(0.15, 0.3)
    steps = np.array([0, 2, 4, 7, 9])[(t // note_length).astype(int) % 5]
    freq = root * 2 ** (steps / 12)
    return np.sin(2 * np.pi * freq * (t % note_length)) * _envelope(t, note_length, decay=8.0)


SOUNDS: tuple[Sound, ...] = (_chord, _chirp, _arpeggio)


_LUMA = np.array([0.299, 0.587, 0.114])  # BT.601, as the hand-crafted statistics use
SOURCE_LUMA_MEAN = 0.5
SOURCE_LUMA_SD = 0.18
SOURCE_CHROMA_RMS = 0.18


def _well_exposed(frames: np.ndarray) -> np.ndarray:
    """Give every source the same exposure, contrast and colourfulness, then clip to [0, 1].

    A no-reference model judges "washed out" or "soft" against what pristine content usually
    looks like; real datasets start from professionally shot sources whose statistics cluster.
    Procedural palettes do not (mean saturation 0.36-0.90 across the raw patterns), which would make
    a vivid-but-desaturated clip indistinguishable from a dull pristine one. Luma is set to mean
    ``SOURCE_LUMA_MEAN`` and standard deviation ``SOURCE_LUMA_SD`` over the clip, and the chroma
    (RGB minus luma) to RMS ``SOURCE_CHROMA_RMS``; the pattern's shapes and hues are unchanged.
    """
    luma = frames @ _LUMA.astype(np.float32)
    chroma = frames - luma[..., None]
    contrast = SOURCE_LUMA_SD / max(float(luma.std()), 1e-6)
    colour = SOURCE_CHROMA_RMS / max(float(np.sqrt(np.mean(chroma**2))), 1e-6)
    out = SOURCE_LUMA_MEAN + (luma - luma.mean())[..., None] * contrast + chroma * colour
    return np.clip(out, 0, 1).astype(np.float32)


def make_source(index: int, seconds: float, size: tuple[int, int], fps: float, seed: int,
                sample_rate: int = SAMPLE_RATE) -> Source:
    """Source ``index`` of a seed: pattern and sound cycle through the catalogues above, so
    consecutive sources look and sound different; their parameters are drawn from ``seed``."""
    rng = _rng(seed, _SOURCE, index)
    n_frames = max(1, round(seconds * fps))
    pattern = PATTERNS[index % len(PATTERNS)]
    frames = _well_exposed(pattern(*_grid(n_frames, fps, size), rng))
    t = np.arange(round(n_frames / fps * sample_rate)) / sample_rate
    sound = SOUNDS[index % len(SOUNDS)](t, rng)
    audio = (0.3 * sound / max(np.abs(sound).max(), 1e-9)).astype(np.float32)
    return Source(frames=frames, audio=audio)


# ----------------------------------------------------------------------------------- distortions

BLUR_SIGMA = (0.0, 0.7, 1.4, 2.4, 3.6)
NOISE_SD = (0.0, 0.02, 0.045, 0.08, 0.13)
CRF = (18, 27, 33, 39, 45)
RESCALE = (1.0, 1.0, 1.0, 0.75, 0.5)
HOLD = (1, 2, 3, 4, 6)
SATURATION = (1.0, 0.75, 0.55, 0.35, 0.15)
AUDIO_NOISE_SD = (0.0, 0.005, 0.015, 0.035, 0.07)


def sample_levels(rng: np.random.Generator) -> dict[str, int]:
    """One independent level per distortion, so levels vary and are not correlated by design."""
    return {name: int(rng.choice(len(LEVEL_PROBS), p=LEVEL_PROBS)) for name in DISTORTIONS}


def _blur(frames: np.ndarray, level: int) -> np.ndarray:
    """Spatial Gaussian blur within each frame (never across time or channels)."""
    sigma = BLUR_SIGMA[level]
    return ndimage.gaussian_filter(frames, sigma=(0, sigma, sigma, 0)) if sigma else frames


def _desaturation_matrix(level: int) -> np.ndarray:
    """Pull every colour towards its BT.601 luma by ``1 - SATURATION[level]``."""
    saturation = SATURATION[level]
    return saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _LUMA)


def _shift_colour(frames: np.ndarray, level: int) -> np.ndarray:
    """Wash the colour out, more with each level.

    Only desaturation: a hue rotation of arbitrary procedural hues is just another palette, and a
    colour cast on saturated colours clips and can *raise* saturation, so neither would leave a
    trace a blind (no-reference) model could read consistently.
    """
    if level == 0:
        return frames
    return frames @ _desaturation_matrix(level).T.astype(np.float32)


def _add_noise(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Sensor-like additive Gaussian noise, fresh in every frame."""
    sd = NOISE_SD[level]
    return frames + sd * rng.standard_normal(frames.shape, dtype=np.float32) if sd else frames


def _hold_frames(frames: np.ndarray, level: int) -> np.ndarray:
    """Stutter: show every k-th frame k times, keeping the frame count (and duration) unchanged."""
    hold = HOLD[level]
    return frames[(np.arange(len(frames)) // hold) * hold]


def _rescale(pixels: np.ndarray, level: int) -> np.ndarray:
    """Down- then upscale, as streaming ladders do before encoding at the lowest bitrates."""
    scale = RESCALE[level]
    if scale == 1.0:
        return pixels
    height, width = pixels.shape[1:3]
    small = (round(width * scale), round(height * scale))
    return np.stack([
        np.asarray(Image.fromarray(frame).resize(small, Image.BILINEAR)
                   .resize((width, height), Image.BILINEAR))
        for frame in pixels
    ])


def _noisy_audio(audio: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Additive white noise (a hiss), clipped so the track stays in [-1, 1]."""
    sd = AUDIO_NOISE_SD[level]
    noisy = audio + sd * rng.standard_normal(audio.shape, dtype=np.float32) if sd else audio
    return np.clip(noisy, -1, 1)


def render_variant(source: Source, levels: dict[str, int],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply every distortion but the encoder's crf; return uint8 RGB frames and float audio.

    The order follows a capture-to-delivery chain: optics (blur), colour processing, sensor noise,
    dropped frames, then the encoder's downscale (the crf is applied by :func:`write_video`).
    """
    frames = _blur(source.frames, levels["blur"])
    frames = _shift_colour(frames, levels["color"])
    frames = _add_noise(frames, levels["noise"], rng)
    frames = _hold_frames(frames, levels["stutter"])
    pixels = _rescale(np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8), levels["compression"])
    return pixels, _noisy_audio(source.audio, levels["audio_noise"], rng)


# ---------------------------------------------------------------------------------------- labels

TOLERANCE = {"color": 3.0, "noise": 2.5, "artifact": 2.2, "blur": 2.5, "temporal": 2.8, "audio": 2.5}
OVERALL_WEIGHTS = {"color": 0.12, "noise": 0.16, "artifact": 0.2, "blur": 0.2, "temporal": 0.14,
                   "audio": 0.18}
NOISE_MASKING = 0.15
RESCALE_BLUR = (0.0, 0.0, 0.0, 1.0, 2.0)
SOFTMIN_TAU = 0.8
RATER_SD = 0.15
HALO = 0.75
"""Share of the overall impression in every dimension's label (module docstring: why, and what it
reproduces). On the demo's training labels 0.65 puts the dimension-overall correlations at 0.74-0.88,
0.8 at 0.87-0.92; ``featbank demo --halo H`` sets it for one run."""


def perceived_levels(levels: dict[str, int]) -> dict[str, float]:
    """How severe each quality dimension looks, on the 0..4 level scale.

    Mostly one distortion per dimension, with the two interactions a viewer (and a no-reference
    statistic) cannot separate: the encoder's downscale at compression levels 3 and 4 softens the
    picture like optical blur (``RESCALE_BLUR`` in blur levels, added in quadrature), and strong
    compression smooths sensor grain away (each compression level hides ``NOISE_MASKING`` of it).
    """
    compression = levels["compression"]
    return {
        "color": float(levels["color"]),
        "noise": levels["noise"] * (1 - NOISE_MASKING * compression),
        "artifact": float(compression),
        "blur": min(4.0, float(np.hypot(levels["blur"], RESCALE_BLUR[compression]))),
        "temporal": float(levels["stutter"]),
        "audio": float(levels["audio_noise"]),
    }


def _quality(level: float, tolerance: float) -> float:
    """4.8 when pristine, falling smoothly towards 1; ``tolerance`` is how much a dimension bears."""
    return 1 + 3.8 * float(np.exp(-((level / tolerance) ** 1.5)))


def _soft_min(scores: dict[str, float]) -> float:
    """Weighted soft-min: the worst dimension dominates, but not entirely, as in human ratings."""
    total = sum(w * np.exp(-scores[d] / SOFTMIN_TAU) for d, w in OVERALL_WEIGHTS.items())
    return float(-SOFTMIN_TAU * np.log(total))


def _check_halo(halo: float) -> None:
    if not 0 <= halo <= 1:
        raise ValueError(f"halo must be within [0, 1], got {halo}")


def dimension_scores(levels: dict[str, int]) -> dict[str, float]:
    """Each dimension's 1–5 quality judged on its own, before the halo (``dim_d`` in the docstring)."""
    return {dim: _quality(level, TOLERANCE[dim]) for dim, level in perceived_levels(levels).items()}


def true_scores(levels: dict[str, int], halo: float = HALO) -> dict[str, float]:
    """The noise-free 1–5 score of every label: what an infinitely large panel would rate.

    ``overall`` is the soft-min of the dimensions judged on their own; every dimension's label
    then carries ``halo`` (0..1) of that overall impression.
    """
    _check_halo(halo)
    own = dimension_scores(levels)
    overall = _soft_min(own)
    scores = {dim: (1 - halo) * quality + halo * overall for dim, quality in own.items()}
    scores["overall"] = overall
    return scores


def labels_for(levels: dict[str, int], rng: np.random.Generator, halo: float = HALO) -> dict[str, float]:
    """The 1–5 labels of one variant (formula in the module docstring), rater noise included."""
    scores = true_scores(levels, halo)
    noisy = {dim: scores[dim] + rng.normal(0, RATER_SD) for dim in LABELS}
    return {dim: round(float(np.clip(value, 1, 5)), 4) for dim, value in noisy.items()}


# --------------------------------------------------------------------------------------- writing


def _manifest_row(video_id: str, group: str, levels: dict[str, int],
                  labels: dict[str, float]) -> dict:
    """Ids, the path relative to the manifest, the labels, then the levels as ``meta_`` columns."""
    row = {"video_id": video_id, "path": f"videos/{video_id}.mp4", "group": group}
    row.update(labels)
    row.update({LEVEL_PREFIX + name: level for name, level in levels.items()})
    return row


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _synthesize_source(out_dir: Path, s: int, variants: int, seconds: float, size: tuple[int, int],
                       fps: int, seed: int, halo: float) -> list[dict]:
    """Write every variant of source ``s``; return their manifest rows (one worker's share)."""
    source, group = make_source(s, seconds, size, fps, seed), f"src{s:02d}"
    rows = []
    for v in range(variants):
        video_id = f"{group}_v{v:02d}"
        levels = sample_levels(_rng(seed, _LEVELS, s, v))
        frames, audio = render_variant(source, levels, _rng(seed, _PIXEL_NOISE, s, v))
        write_video(out_dir / "videos" / f"{video_id}.mp4", frames, fps, audio, SAMPLE_RATE,
                    crf=CRF[levels["compression"]])
        labels = labels_for(levels, _rng(seed, _RATERS, s, v), halo)
        rows.append(_manifest_row(video_id, group, levels, labels))
    return rows


def synthesize(out_dir: Path, n_sources: int = 6, variants: int = 12, seconds: float = 4.0,
               size: tuple[int, int] = (144, 192), fps: int = 15, seed: int = 0, n_jobs: int = 1,
               halo: float = HALO) -> Path:
    """Write ``n_sources * variants`` labelled MP4s under ``out_dir/videos``; return the manifest.

    ``size`` is ``(height, width)`` and must be even; ``seed`` (>= 0) fixes every label and frame.
    ``group`` is the source id, so grouped folds never split one content across train and test.
    ``n_jobs`` sources are made in parallel (joblib threads, -1: one per core; numpy, scipy and
    libx264 release the GIL, and threads leave the process pool the fits reuse untouched): every
    draw is keyed by source and variant, so the result does not depend on it. ``halo`` is the
    labels' share of the overall impression (:data:`HALO`).
    """
    if n_sources < 1 or variants < 1 or seconds <= 0:
        raise ValueError("synthesize needs n_sources >= 1, variants >= 1 and seconds > 0")
    _check_halo(halo)  # before any clip is written
    out_dir = Path(out_dir)
    per_source = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_synthesize_source)(out_dir, s, variants, seconds, size, fps, seed, halo) for s in range(n_sources))
    return _write_manifest(out_dir / "manifest.csv", [row for rows in per_source for row in rows])
