"""Spectral statistics of one key frame per second: frequency fall-off, the 8-pixel grid, chroma.

A second view of the picture next to ``handcrafted``'s pixel-domain statistics, computed in the
frequency domain instead, so that its measurement errors on a given content are largely
independent of theirs (what a stack can exploit):

* **Radial power spectrum** of the luma (mean removed, Hann-windowed): the share of power in 8
  logarithmic bands of spatial frequency from 0.01 to 0.71 cycles/pixel, in log10. Blur removes
  the high bands, sensor noise lifts them to a flat floor, a downscale-upscale cuts them off; a
  natural image falls roughly as 1/f² (Field 1987), so departures from that slope are distortion.
* **Grid peaks**: block-based codecs leave steps every 8 pixels, so the absolute luma difference
  between neighbouring columns (rows) is periodic with period 8. Its power at 1/8, 2/8 and 3/8
  cycles/pixel against the neighbouring bins (log ratio, averaged; Wang, Bovik & Evans 2000)
  measures that grid horizontally (vertically).
* **Chroma**: mean and standard deviation of the colour differences B−Y and R−Y and the 10th,
  50th and 90th percentiles of chroma magnitude: desaturation shrinks them towards zero.

Frames are RGB in 0..1, luma BT.601. Frames larger than 720 px on the short side are area-
downscaled first by the smallest integer factor that brings them under it (as ``handcrafted``),
which bounds the FFT cost and keeps the bands comparable across resolutions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from extractors import register
from extractors.base import Extractor
from extractors.handcrafted import MIN_SIDE, area_downscale, downscale_factor
from featbank.extraction.sampling import KeyFrames

SAMPLING = KeyFrames()
N_BANDS = 8
LOWEST, HIGHEST = 0.01, 0.71  # cycles/pixel; 0.71 = sqrt(2) * 0.5, the corner of the spectrum
GRID_HARMONICS = (1, 2, 3)  # multiples of 1/8 cycles/pixel
CHROMA_PERCENTILES = (10, 50, 90)
_TINY = 1e-12

FEATURE_NAMES = (
    *(f"band{b}_log_share" for b in range(N_BANDS)),
    "grid8_peak_h",
    "grid8_peak_v",
    "chroma_b_mean",
    "chroma_r_mean",
    "chroma_b_std",
    "chroma_r_std",
    *(f"chroma_magnitude_p{p}" for p in CHROMA_PERCENTILES),
)


@lru_cache(maxsize=16)
def _spectral_layout(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D Hann window and each rfft2 bin's band index (-1 outside every band) for one frame size."""
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    edges = np.geomspace(LOWEST, HIGHEST, N_BANDS + 1)
    band = np.searchsorted(edges, radius, side="right") - 1
    band[(radius < LOWEST) | (radius >= HIGHEST)] = -1
    return window, band


def band_log_shares(luma: np.ndarray) -> np.ndarray:
    """log10 of each band's share of the windowed luma's power (mean power per bin, then shares)."""
    window, band = _spectral_layout(*luma.shape)
    power = np.abs(np.fft.rfft2((luma - luma.mean()) * window)) ** 2
    inside = band >= 0
    sums = np.bincount(band[inside], weights=power[inside], minlength=N_BANDS)
    counts = np.maximum(np.bincount(band[inside], minlength=N_BANDS), 1)
    mean_power = sums / counts + _TINY
    return np.log10(mean_power / mean_power.sum())


def grid_peak(profile_power: np.ndarray, length: int) -> float:
    """Mean log ratio of the power at k/8 cycles/pixel to the average of its two neighbouring bins."""
    ratios = []
    for k in GRID_HARMONICS:
        i = int(round(k * length / 8))
        if 1 <= i < len(profile_power) - 1:
            neighbours = 0.5 * (profile_power[i - 1] + profile_power[i + 1])
            ratios.append(np.log((profile_power[i] + _TINY) / (neighbours + _TINY)))
    return float(np.mean(ratios)) if ratios else 0.0


def difference_grid_peak(luma: np.ndarray, axis: int) -> float:
    """:func:`grid_peak` of the power spectrum of |luma difference| along ``axis``, averaged across it."""
    difference = np.abs(np.diff(luma, axis=axis))
    whole = difference.shape[axis] // 8 * 8  # whole periods: the grid's harmonics fall on exact bins
    difference = np.take(difference, np.arange(whole), axis=axis)
    difference -= difference.mean(axis=axis, keepdims=True)
    power = (np.abs(np.fft.rfft(difference, axis=axis)) ** 2).mean(axis=1 - axis)
    return grid_peak(power, difference.shape[axis])


def frame_statistics(rgb: np.ndarray) -> np.ndarray:
    """The ``FEATURE_NAMES`` of one ``(H, W, 3)`` uint8 frame."""
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"spectral statistics need frames of at least {MIN_SIDE} px, got {width}x{height}")
    planes = area_downscale(np.moveaxis(rgb, -1, 0).astype(np.float32) / 255, downscale_factor(height, width))
    red, green, blue = planes
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    chroma_b, chroma_r = blue - luma, red - luma
    magnitude = np.hypot(chroma_b, chroma_r)
    return np.concatenate([
        band_log_shares(luma),
        [difference_grid_peak(luma, axis=1), difference_grid_peak(luma, axis=0)],
        [chroma_b.mean(), chroma_r.mean(), chroma_b.std(), chroma_r.std()],
        np.percentile(magnitude, CHROMA_PERCENTILES),
    ]).astype(np.float32)


@register
class SpectralExtractor(Extractor):
    """Frequency-domain statistics of one key frame per second; see the module docstring."""

    name = "spectral"
    version = "1"
    batch_size = 8

    @property
    def sampling(self) -> KeyFrames:
        return SAMPLING

    def feature_names(self) -> list[str]:
        return list(FEATURE_NAMES)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 1, H, W, 3)`` uint8 key frames -> ``(B, len(FEATURE_NAMES))``."""
        return np.stack([frame_statistics(step[0]) for step in batch])
