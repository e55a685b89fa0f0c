"""The spectral extractor: each statistic moves with the distortion it is meant to see."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import extractors
from extractors.spectral import FEATURE_NAMES, N_BANDS, band_log_shares, frame_statistics


def natural_frame(seed: int = 0, size: tuple[int, int] = (144, 192)) -> np.ndarray:
    """A colourful 1/f-like texture, uint8 RGB: what the statistics assume a clean picture looks like."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size[0])[:, None]
    fx = np.fft.fftfreq(size[1])[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(size))
    planes = []
    for _ in range(3):
        field = np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random(size))).real
        planes.append((field - field.min()) / np.ptp(field))
    return (np.stack(planes, axis=-1) * 255).astype(np.uint8)


def stats(frame: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, frame_statistics(frame), strict=True))


def high_band(frame: np.ndarray) -> float:
    return stats(frame)[f"band{N_BANDS - 1}_log_share"]


def test_registered_with_one_value_per_named_feature() -> None:
    extractor = extractors.create("spectral")
    frames = np.stack([natural_frame(s)[None] for s in range(3)])  # (B, 1, H, W, 3) key frames
    out = extractor.forward(frames)
    assert out.shape == (3, len(FEATURE_NAMES)) and out.dtype == np.float32 and np.isfinite(out).all()
    assert extractor.sampling.frames_per_step == 1


def test_blur_lowers_and_noise_raises_the_high_band_share() -> None:
    clean = natural_frame()
    blurred = ndimage.gaussian_filter(clean.astype(float), sigma=(2, 2, 0)).astype(np.uint8)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    assert high_band(blurred) < high_band(clean) - 1 < high_band(noisy) - 1


def test_band_shares_sum_to_one() -> None:
    luma = natural_frame()[..., 1].astype(np.float32)
    np.testing.assert_allclose((10 ** band_log_shares(luma)).sum(), 1.0, rtol=1e-9)


def test_an_eight_pixel_block_grid_raises_the_grid_peaks() -> None:
    clean = natural_frame(2).astype(float)
    blocks = clean.reshape(18, 8, 24, 8, 3).mean(axis=(1, 3), keepdims=True)
    blocky = np.broadcast_to(blocks, (18, 8, 24, 8, 3)).reshape(clean.shape)
    mixed = (0.5 * clean + 0.5 * blocky).astype(np.uint8)
    before, after = stats(clean.astype(np.uint8)), stats(mixed)
    assert after["grid8_peak_h"] > before["grid8_peak_h"] + 0.5
    assert after["grid8_peak_v"] > before["grid8_peak_v"] + 0.5


def test_desaturation_shrinks_chroma_spread() -> None:
    clean = natural_frame(3).astype(float)
    grey = clean.mean(axis=-1, keepdims=True)
    dull = (grey + 0.3 * (clean - grey)).astype(np.uint8)
    before, after = stats(clean.astype(np.uint8)), stats(dull)
    for name in ("chroma_b_std", "chroma_r_std", "chroma_magnitude_p50", "chroma_magnitude_p90"):
        assert after[name] < 0.5 * before[name]


def test_tiny_frames_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least"):
        frame_statistics(np.zeros((8, 8, 3), dtype=np.uint8))
