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

Units: luma is on the 0..255 scale, as P.910 and BRISQUE assume; brightness, contrast and
saturation are fractions of full scale (0..1). Luma is the decoder's Y' plane (the stream's own
luma, scaled from its nominal code range to 0..255), not a weighted sum of decoded RGB: only the key
frame is converted to RGB, for the colour statistics. Where a frame has no Y' plane (RGB codecs,
GIF, still images, RGB arrays passed in directly) luma is BT.601 0.299 R + 0.587 G + 0.114 B, which
for BT.601 streams equals Y' up to the rounding of RGB to 8 bits. Version 3 moved from RGB-derived
luma to the Y' plane: FFmpeg's fast YUV->RGB conversion (decord's and PyAV's) rounds 8-bit RGB down,
by 1.3 grey levels on average on H.264 test clips, so version 2's luma was that much too dark.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import ndimage, special

from extractors import register
from extractors.base import Extractor
from featbank.extraction.pixels import BT601, Luma, Pixels, StepPixels
from featbank.extraction.sampling import Clips

# --- Sampling and preparation ------------------------------------------------------------------

SAMPLING = Clips(frames=8, consecutive=True)

MAX_SHORT_SIDE = 720
MIN_SIDE = 16  # two 8x8 blocks: the smallest frame on which every statistic is defined
PIXELS = Pixels(rgb="first", luma=True)  # luma of every frame, colour of the key frame only


def downscale_factor(height: int, width: int) -> int:
    """Smallest integer factor that brings the short side to ``MAX_SHORT_SIDE`` or below."""
    return max(1, -(-min(height, width) // MAX_SHORT_SIDE))


def block_sums(images: np.ndarray, factor: int, rows_axis: int = -2) -> np.ndarray:
    """Sum of each ``factor`` x ``factor`` block over axes ``rows_axis`` and the one after it.

    Summing ``factor`` strided row views, then column views, keeps numpy's inner loops long; a
    reshape-and-mean over the block axes is several times slower on 1080p stacks. Integer input
    is summed in a type wide enough for it (uint8 codes in uint16 up to 16 x 16 blocks), so no
    full-size float copy is made before the sizes shrink.
    """
    axis = rows_axis % images.ndim
    height, width = images.shape[axis] // factor, images.shape[axis + 1] // factor
    dtype = np.float32 if images.dtype.kind == "f" else np.uint16 if images.itemsize == 1 and factor <= 16 \
        else np.uint32
    lead = (slice(None),) * axis
    rows = images[lead + (slice(0, height * factor, factor),)].astype(dtype, order="C")
    for dy in range(1, factor):
        rows += images[lead + (slice(dy, height * factor, factor),)]
    total = rows[lead + (slice(None), slice(0, width * factor, factor))].copy()
    for dx in range(1, factor):
        total += rows[lead + (slice(None), slice(dx, width * factor, factor))]
    return total


def area_downscale(images: np.ndarray, factor: int, rows_axis: int = -2) -> np.ndarray:
    """float32 mean of each ``factor`` x ``factor`` block (trailing rows and columns dropped)."""
    if factor == 1:
        return images.astype(np.float32, order="C")
    means = block_sums(images, factor, rows_axis).astype(np.float32, copy=False)
    means *= np.float32(1 / factor**2)
    return means


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``(..., 3)`` uint8 RGB on the 0..255 scale, float32."""
    return rgb @ BT601


def pixels_of(frames: np.ndarray) -> StepPixels:
    """What the decoder would hand over for ``(T, H, W, 3)`` RGB frames that have no Y' plane."""
    return StepPixels(rgb=frames[:1], luma=Luma(luma(frames)))


def downscaled_luma(step: Luma, factor: int) -> np.ndarray:
    """``(T, h, w)`` float32 luma on 0..255 after the area downscale; the codes' scale and offset
    are applied after it, on ``1 / factor**2`` of the pixels."""
    return step.scaled(area_downscale(step.codes, factor))


def second_difference(image: np.ndarray, axis: int) -> np.ndarray:
    """``[1, -2, 1]`` along ``axis`` (0 or 1) where the whole stencil fits: one pixel shorter at
    each end, so no padding rule enters. Slicing, not a filter call: the 3x3 statistics below are
    defined on the interior only, and numpy's whole-array arithmetic on it is several times faster
    than ``scipy.ndimage`` filtering the padded frame line by line in float64."""
    if axis == 0:
        return image[:-2] - 2 * image[1:-1] + image[2:]
    return image[:, :-2] - 2 * image[:, 1:-1] + image[:, 2:]


def smoothed_difference(image: np.ndarray, axis: int) -> np.ndarray:
    """Sobel response along ``axis`` on the interior: ``[-1, 0, 1]`` along it, ``[1, 2, 1]`` across."""
    if axis == 0:
        difference = image[2:] - image[:-2]
        return difference[:, :-2] + 2 * difference[:, 1:-1] + difference[:, 2:]
    difference = image[:, 2:] - image[:, :-2]
    return difference[:-2] + 2 * difference[1:-1] + difference[2:]


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
    return float((second_difference(y[:, 1:-1], axis=0) + second_difference(y[1:-1], axis=1)).var())


def immerkaer_noise_sigma(y: np.ndarray) -> float:
    """Noise standard deviation in grey levels (Immerkær 1996, "Fast noise variance estimation").

    The mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is the difference of two Laplacians, so it cancels image
    structure up to second order and leaves mostly noise, whose mean absolute response is
    ``6 sigma sqrt(2/pi)`` for Gaussian noise. The mask is ``[1,-2,1]`` times itself, so it is
    applied as two 1-D passes.
    """
    response = second_difference(second_difference(y, axis=0), axis=1)
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(response).mean())


def blockiness(y: np.ndarray, axis: int, scale: float = 1.0) -> float:
    """Blocking along ``axis``: gradient across 8x8 block boundaries over gradient inside blocks.

    Block-transform codecs quantise each 8x8 block on its own, so at high compression the luma
    steps at block edges while blocks themselves flatten (Wang, Sheikh & Bovik 2002, who compare
    the same two differences). The ratio is about 1 without a grid and grows with blocking.
    ``BLOCK_EPS`` (one grey level, below visibility) keeps flat frames at 1 and bounds the ratio
    when blocks are perfectly flat. ``axis=1`` compares horizontally adjacent pixels (vertical
    block edges), ``axis=0`` vertically adjacent ones. ``y`` may be luma codes (integers) whose
    grey level is ``scale`` codes' worth: differences are exact in integers and scaled once.
    """
    if y.dtype.kind == "u":
        y = y.astype(np.int16 if y.itemsize == 1 else np.int32)
    gradient = np.abs(np.diff(y, axis=axis))
    boundary = np.take(gradient, np.arange(BLOCK - 1, gradient.shape[axis], BLOCK), axis=axis)
    total, at_boundary = float(gradient.sum(dtype=np.float64)), float(boundary.sum(dtype=np.float64))
    across = at_boundary / boundary.size if boundary.size else np.nan
    inside = (total - at_boundary) / (gradient.size - boundary.size)
    return float((across * scale + BLOCK_EPS) / (inside * scale + BLOCK_EPS))


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
    return float(np.hypot(smoothed_difference(y, axis=0), smoothed_difference(y, axis=1)).std())


def spatial_statistics(planes: np.ndarray, y: np.ndarray, native_y: np.ndarray,
                       native_scale: float = 1.0) -> dict[str, float]:
    """All key-frame statistics: ``(3, h, w)`` RGB ``planes`` and luma ``y`` downscaled, ``native_y``
    not (luma, or luma codes of which ``native_scale`` make one grey level; see :func:`blockiness`)."""
    coefficients = mscn(y)
    shape, variance = ggd_fit(coefficients)
    return {
        "sharpness_laplacian_var": laplacian_variance(y),
        "noise_sigma_immerkaer": immerkaer_noise_sigma(y),
        "blockiness_h": blockiness(native_y, axis=1, scale=native_scale),
        "blockiness_v": blockiness(native_y, axis=0, scale=native_scale),
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
    difference = np.empty(lumas.shape[1:], dtype=np.float32)  # one pair at a time: no (T-1)-frame temporaries
    ti, mean_abs = np.empty(lumas.shape[0] - 1), np.empty(lumas.shape[0] - 1)
    for pair, (before, after) in enumerate(pairwise(lumas)):
        np.subtract(after, before, out=difference)
        ti[pair] = difference.std()
        mean_abs[pair] = np.abs(difference, out=difference).mean()
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


def step_statistics(step: np.ndarray | StepPixels) -> dict[str, float]:
    """Every statistic of one step, named as ``FEATURE_NAMES``: the decoder's :class:`StepPixels`
    (every frame's luma, the key frame's RGB) or ``(T, H, W, 3)`` uint8 RGB frames."""
    if isinstance(step, np.ndarray):
        step = pixels_of(step)
    codes = step.luma.codes
    height, width = codes.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"handcrafted statistics need frames of at least {MIN_SIDE} px, got {width}x{height}")
    factor = downscale_factor(height, width)
    lumas = downscaled_luma(step.luma, factor)
    key_planes = area_downscale(np.moveaxis(step.rgb[0], -1, 0), factor)
    return {**spatial_statistics(key_planes, lumas[0], codes[0], step.luma.scale), **temporal_statistics(lumas)}


@register
class HandcraftedExtractor(Extractor):
    """Classic no-reference quality statistics per second; see the module docstring for the design."""

    name = "handcrafted"
    version = "3"  # 2: the last window slides back inside the video; 3: luma from the Y' plane
    batch_size = 1  # one step is 8 full-resolution frames (0.2 GB at 4K); batching gains nothing
    pixels = PIXELS

    @property
    def sampling(self) -> Clips:
        return SAMPLING

    def feature_names(self) -> list[str]:
        return list(FEATURE_NAMES)

    def forward(self, batch: np.ndarray | list[StepPixels]) -> np.ndarray:
        steps = [step_statistics(step) for step in batch]
        return np.array([[stats[name] for name in FEATURE_NAMES] for stats in steps], dtype=np.float32)
