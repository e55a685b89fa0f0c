"""Hand-crafted quality statistics: sharpness, noise, blocking, colour, natural-scene statistics, motion.

These are the classic no-reference cues that predate learned VQA features and still explain much of
the variance on user-generated content: blur, sensor noise, compression blocking, dull colour,
distorted natural-scene statistics, and jerky motion. They are cheap, need no weights, and each one
has a meaning a person can check, which makes them a useful baseline next to deep features.

Each step is 8 adjacent frames from the start of one second. Spatial statistics come from the
first (key) frame; temporal statistics from the 7 differences between consecutive frames, which
must be adjacent so that a repeated (dropped) frame shows as a near-zero difference.

Resolution is part of the design: frames whose short side exceeds 720 px are first downscaled by
the smallest integer factor that brings the short side to 720 px or below, averaging each
factor x factor block (area averaging; trailing rows and columns that do not fill a block are
dropped). This bounds the cost on 1080p and 4K input, and makes the values describe the picture at
a comparable viewing scale. The rule is fixed and deterministic, so it is not an option; changing
it changes the features and needs a new ``version``. The one exception is blockiness, measured on
the native-resolution key frame: the codec's 8x8 grid exists only there (a downscale by 3 would
smear it), and the measurement is a single pass of pixel differences.

Units: luma is BT.601 (0.299 R + 0.587 G + 0.114 B) on the 0..255 scale, as P.910 and BRISQUE
assume; brightness, contrast and saturation are fractions of full scale (0..1).
"""

from __future__ import annotations

from itertools import chain

import numpy as np
from scipy import ndimage, special

from extractors import register
from extractors.base import Extractor
from featbank.extraction.sampling import Clips

# --- Sampling and preparation ------------------------------------------------------------------

SAMPLING = Clips(frames=8, consecutive=True)

MAX_SHORT_SIDE = 720
MIN_SIDE = 16  # two 8x8 blocks: the smallest frame on which every statistic is defined
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def downscale_factor(height: int, width: int) -> int:
    """Smallest integer factor that brings the short side to ``MAX_SHORT_SIDE`` or below."""
    return max(1, -(-min(height, width) // MAX_SHORT_SIDE))


def area_downscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block over the last two axes of float ``(..., H, W)``.

    Summing ``factor`` strided row views, then column views, keeps numpy's inner loops long; a
    reshape-and-mean over the block axes is several times slower on 1080p stacks.
    """
    if factor == 1:
        return images
    height, width = images.shape[-2] // factor, images.shape[-1] // factor
    rows = sum(images[..., dy : height * factor : factor, :] for dy in range(factor))
    return sum(rows[..., dx : width * factor : factor] for dx in range(factor)) / factor**2


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``(..., 3)`` uint8 RGB on the 0..255 scale, float32."""
    return rgb @ BT601


def interior(image: np.ndarray) -> np.ndarray:
    """Drop the one-pixel border, where a 3x3 filter response depends on the padding rule."""
    return image[1:-1, 1:-1]


# --- Spatial statistics of the key frame -------------------------------------------------------

BLOCK = 8
BLOCK_EPS = 1.0  # grey levels added to both gradient means of the blockiness ratio
MSCN_SIGMA = 7 / 6
MSCN_RADIUS = 3  # 7x7 window
MSCN_C = 1.0
MSCN_ENERGY_FLOOR = 1e-12  # below this the MSCN field is round-off of a constant frame
GGD_SHAPES = np.arange(0.2, 10.0, 0.001)  # BRISQUE's search grid for the GGD shape
GGD_MOMENT_RATIOS = np.exp(
    2 * special.gammaln(2 / GGD_SHAPES) - special.gammaln(1 / GGD_SHAPES) - special.gammaln(3 / GGD_SHAPES)
)  # E[|x|]^2 / E[x^2] of a GGD, increasing in the shape


def laplacian_variance(y: np.ndarray) -> float:
    """Sharpness as the variance of the 4-neighbour Laplacian (Pech-Pacheco et al. 2000).

    Blur removes the fine detail the Laplacian responds to, so the variance drops with defocus and
    upscaling; noise raises it, which is why it is read next to the noise estimate.
    """
    return float(interior(ndimage.laplace(y)).var())


def immerkaer_noise_sigma(y: np.ndarray) -> float:
    """Noise standard deviation in grey levels (Immerkær 1996, "Fast noise variance estimation").

    The mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is the difference of two Laplacians, so it cancels image
    structure up to second order and leaves mostly noise, whose mean absolute response is
    ``6 sigma sqrt(2/pi)`` for Gaussian noise. The mask is ``[1,-2,1]`` times itself, so it is
    applied as two 1-D passes.
    """
    second_difference = np.array([1.0, -2.0, 1.0])
    response = ndimage.correlate1d(ndimage.correlate1d(y, second_difference, axis=0), second_difference, axis=1)
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(interior(response)).mean())


def blockiness(y: np.ndarray, axis: int) -> float:
    """Blocking along ``axis``: gradient across 8x8 block boundaries over gradient inside blocks.

    Block-transform codecs quantise each 8x8 block on its own, so at high compression the luma
    steps at block edges while blocks themselves flatten (Wang, Sheikh & Bovik 2002, who compare
    the same two differences). The ratio is about 1 without a grid and grows with blocking.
    ``BLOCK_EPS`` (one grey level, below visibility) keeps flat frames at 1 and bounds the ratio
    when blocks are perfectly flat. ``axis=1`` compares horizontally adjacent pixels (vertical
    block edges), ``axis=0`` vertically adjacent ones.
    """
    gradient = np.abs(np.diff(y, axis=axis))
    at_boundary = np.arange(gradient.shape[axis]) % BLOCK == BLOCK - 1
    across = np.compress(at_boundary, gradient, axis=axis).mean()
    inside = np.compress(~at_boundary, gradient, axis=axis).mean()
    return float((across + BLOCK_EPS) / (inside + BLOCK_EPS))


def colorfulness(planes: np.ndarray) -> float:
    """Hasler & Süsstrunk 2003 colourfulness: spread plus 0.3 x mean of the opponent channels.

    ``rg = R - G`` and ``yb = (R + G) / 2 - B`` on 0..255; the metric tracked perceived
    colourfulness with 95% correlation in their study. A grey frame scores 0.
    """
    red, green, blue = planes
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def mean_saturation(planes: np.ndarray) -> float:
    """Mean HSV saturation ``(max - min) / max`` (0 for black pixels): washed-out colour lowers it."""
    high, low = np.maximum.reduce(planes), np.minimum.reduce(planes)
    return float(np.divide(high - low, high, out=np.zeros_like(high), where=high > 0).mean())


def mscn(y: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (Mittal, Moorthy & Bovik, BRISQUE 2012).

    Local mean and deviation come from a 7x7 Gaussian window (sigma 7/6) and ``C = 1`` stabilises
    flat regions. For pristine natural images the result is close to unit Gaussian; distortions
    change its shape in characteristic ways.
    """
    mean = ndimage.gaussian_filter(y, MSCN_SIGMA, radius=MSCN_RADIUS)
    deviation = np.sqrt(np.abs(ndimage.gaussian_filter(y * y, MSCN_SIGMA, radius=MSCN_RADIUS) - mean * mean))
    return (y - mean) / (deviation + MSCN_C)


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Shape and variance of a zero-mean generalised Gaussian, by moment matching (as in BRISQUE).

    The ratio ``E[|x|]^2 / E[x^2]`` depends only on the shape (Sharifi & Leon-Garcia 1995); it is
    inverted by interpolation on BRISQUE's grid, and clamped to the grid's ends. A constant frame
    has no MSCN energy: it is the limit of an infinitely peaked distribution, so it gets the
    smallest shape and zero variance.
    """
    variance = float(np.mean(x * x))
    if variance < MSCN_ENERGY_FLOOR:
        return float(GGD_SHAPES[0]), 0.0
    ratio = np.mean(np.abs(x)) ** 2 / variance
    return float(np.interp(ratio, GGD_MOMENT_RATIOS, GGD_SHAPES)), variance


def spatial_information(y: np.ndarray) -> float:
    """ITU-T P.910 spatial information of one frame: standard deviation of the Sobel magnitude."""
    return float(interior(np.hypot(ndimage.sobel(y, axis=0), ndimage.sobel(y, axis=1))).std())


def spatial_statistics(planes: np.ndarray, y: np.ndarray, native_y: np.ndarray) -> dict[str, float]:
    """All key-frame statistics: ``(3, h, w)`` RGB ``planes`` and luma ``y`` downscaled, ``native_y`` not."""
    coefficients = mscn(y)
    shape, variance = ggd_fit(coefficients)
    return {
        "sharpness_laplacian_var": laplacian_variance(y),
        "noise_sigma_immerkaer": immerkaer_noise_sigma(y),
        "blockiness_h": blockiness(native_y, axis=1),
        "blockiness_v": blockiness(native_y, axis=0),
        "colorfulness_hasler": colorfulness(planes),
        "contrast_rms": float(y.std() / 255),
        "brightness_mean": float(y.mean() / 255),
        "saturation_mean": mean_saturation(planes),
        "mscn_ggd_shape": shape,
        "mscn_ggd_variance": variance,
        "mscn_pair_h_mean": float(np.mean(coefficients[:, :-1] * coefficients[:, 1:])),
        "mscn_pair_v_mean": float(np.mean(coefficients[:-1] * coefficients[1:])),
        "si": spatial_information(y),
    }


# --- Temporal statistics of the adjacent frames ------------------------------------------------

DUPLICATE_THRESHOLD = 0.5  # mean absolute luma change (grey levels) below which a frame repeats


def temporal_statistics(lumas: np.ndarray) -> dict[str, float]:
    """Motion and stutter from the differences of ``(T, H, W)`` consecutive luma frames.

    TI is ITU-T P.910 temporal information, the standard deviation of each frame difference;
    P.910 reports the maximum over time, the mean is added for a steadier value. The mean absolute
    difference (and its maximum, which catches cuts and jumps) measures how much changes. A
    difference below half a grey level on average is invisible, so that frame repeats its
    predecessor: the fraction of such pairs is how stutter and dropped frames show (a truly static
    scene reads the same, which is why it sits next to TI).
    """
    differences = np.diff(lumas, axis=0).reshape(lumas.shape[0] - 1, -1)
    ti = differences.std(axis=1)
    mean_abs = np.abs(differences).mean(axis=1)
    return {
        "ti_max": float(ti.max()),
        "ti_mean": float(ti.mean()),
        "frame_diff_mean_abs": float(mean_abs.mean()),
        "frame_diff_mean_abs_max": float(mean_abs.max()),
        "duplicate_frame_fraction": float(np.mean(mean_abs < DUPLICATE_THRESHOLD)),
    }


# --- One step, and the extractor ---------------------------------------------------------------

FEATURE_NAMES = (
    "sharpness_laplacian_var",
    "noise_sigma_immerkaer",
    "blockiness_h",
    "blockiness_v",
    "colorfulness_hasler",
    "contrast_rms",
    "brightness_mean",
    "saturation_mean",
    "mscn_ggd_shape",
    "mscn_ggd_variance",
    "mscn_pair_h_mean",
    "mscn_pair_v_mean",
    "si",
    "ti_max",
    "ti_mean",
    "frame_diff_mean_abs",
    "frame_diff_mean_abs_max",
    "duplicate_frame_fraction",
)


def step_statistics(frames: np.ndarray) -> dict[str, float]:
    """Every statistic of one step of ``(T, H, W, 3)`` uint8 RGB frames, named as ``FEATURE_NAMES``."""
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"handcrafted statistics need frames of at least {MIN_SIDE} px, got {width}x{height}")
    factor = downscale_factor(height, width)
    key_luma = luma(frames[0])
    # Frame by frame: converting the whole stack at once would hold a float copy of every sample.
    lumas = np.stack([area_downscale(y, factor) for y in chain([key_luma], map(luma, frames[1:]))])
    key_planes = area_downscale(frames[0].transpose(2, 0, 1).astype(np.float32, order="C"), factor)
    return {**spatial_statistics(key_planes, lumas[0], key_luma), **temporal_statistics(lumas)}


@register
class HandcraftedExtractor(Extractor):
    """Classic no-reference quality statistics per second; see the module docstring for the design."""

    name = "handcrafted"
    version = "2"  # 2: the last window slides back inside the video instead of repeating frames
    batch_size = 1  # one step is 8 full-resolution frames (0.2 GB at 4K); batching gains nothing

    @property
    def sampling(self) -> Clips:
        return SAMPLING

    def feature_names(self) -> list[str]:
        return list(FEATURE_NAMES)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        steps = [step_statistics(frames) for frames in batch]
        return np.array([[stats[name] for name in FEATURE_NAMES] for stats in steps], dtype=np.float32)
