"""The hand-crafted extractor: every statistic checked against the physics or maths it claims.

Most tests feed synthetic numpy images whose answer is known in advance (a blur, a known noise
level, an 8x8 block grid, a grey frame, a repeated frame) straight to the statistic functions, so
no codec is involved. The last tests check the extractor contract (shape, names, determinism, size
limits, the resolution rule) and one tiny encoded video end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import moving_frames
from scipy import ndimage, stats

import extractors
from extractors import handcrafted as hc
from featbank.bank.store import FAILED, OK
from featbank.extraction.item import extract_item
from featbank.extraction.media import MediaInfo
from featbank.extraction.pixels import Luma, StepPixels
from featbank.extraction.sampling import Clips


def natural(h: int = 256, w: int = 320, seed: int = 0, blur: float = 3.0) -> np.ndarray:
    """A smooth random field (low-pass noise): edges at every scale, no grid, no noise."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((h, w)), blur)
    return 128 + 40 * field / field.std()


def smooth(h: int = 256, w: int = 320) -> np.ndarray:
    """A slow sinusoidal shading: locally almost linear, so second differences nearly vanish."""
    yy, xx = np.mgrid[0:h, 0:w]
    return 128 + 60 * np.sin(2 * np.pi * xx / w) * np.cos(1.4 * np.pi * yy / h)


def grey_frames(image: np.ndarray, t: int = 2) -> np.ndarray:
    """``(t, H, W, 3)`` uint8 frames repeating a grey image (luma = the grey level)."""
    grey = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(grey[None, :, :, None], 3, axis=3), t, axis=0)


def uniform_frames(rgb: tuple[int, int, int], t: int = 2, h: int = 32, w: int = 48) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (t, h, w, 3)).copy()


def block_means(image: np.ndarray, block: int = 8) -> np.ndarray:
    """DC-only coding: every aligned ``block`` x ``block`` block replaced by its mean."""
    h, w = image.shape
    means = image.reshape(h // block, block, w // block, block).mean(axis=(1, 3), keepdims=True)
    return np.broadcast_to(means, (h // block, block, w // block, block)).reshape(h, w)


# --- Sharpness and noise ------------------------------------------------------------------------


def test_blur_lowers_and_noise_raises_laplacian_sharpness():
    image = natural(blur=1.0)
    sharp = hc.laplacian_variance(image)
    blurred = [hc.laplacian_variance(ndimage.gaussian_filter(image, s)) for s in (1.0, 2.0, 4.0)]
    assert sharp > blurred[0] > blurred[1] > blurred[2] >= 0
    noisy = image + 5 * np.random.default_rng(1).standard_normal(image.shape)
    assert hc.laplacian_variance(noisy) > sharp


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_immerkaer_estimates_known_gaussian_noise_on_a_smooth_image(sigma):
    image = smooth()
    noisy = image + sigma * np.random.default_rng(int(sigma)).standard_normal(image.shape)
    assert hc.immerkaer_noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)


def test_immerkaer_ignores_smooth_structure():
    # the mask cancels structure up to second order: a slow shading alone reads as (almost) no noise
    assert hc.immerkaer_noise_sigma(smooth()) < 0.05


def test_noise_estimate_through_the_extractor_is_halved_by_the_2x_downscale():
    """Same noise level at 540p and 1080p: averaging 2x2 blocks of white noise halves its sigma."""
    sigma = 6.0
    rng = np.random.default_rng(2)
    small = grey_frames(smooth(540, 960) + sigma * rng.standard_normal((540, 960)))
    large = grey_frames(smooth(1080, 1920) + sigma * rng.standard_normal((1080, 1920)))
    assert hc.step_statistics(small)["noise_sigma_immerkaer"] == pytest.approx(sigma, rel=0.15)
    assert hc.step_statistics(large)["noise_sigma_immerkaer"] == pytest.approx(sigma / 2, rel=0.15)


# --- Blocking ----------------------------------------------------------------------------------


def test_blockiness_is_about_one_without_a_block_grid():
    image = natural()
    assert hc.blockiness(image, axis=1) == pytest.approx(1.0, abs=0.1)
    assert hc.blockiness(image, axis=0) == pytest.approx(1.0, abs=0.1)


def test_flat_frame_has_blockiness_exactly_one():
    flat = np.full((64, 64), 77.0)
    assert hc.blockiness(flat, axis=0) == hc.blockiness(flat, axis=1) == 1.0


@pytest.mark.parametrize("inner_noise", [0.0, 2.0])
def test_8x8_block_quantised_image_is_blocky_in_both_directions(inner_noise):
    blocky = block_means(natural())
    blocky = blocky + inner_noise * np.random.default_rng(3).standard_normal(blocky.shape)
    assert hc.blockiness(blocky, axis=1) > 1.2
    assert hc.blockiness(blocky, axis=0) > 1.2


def test_blockiness_counts_only_the_codec_aligned_grid():
    # the same blocks shifted by half a block: the steps now fall inside the measured blocks
    shifted = np.roll(block_means(natural()), (4, 4), axis=(0, 1))
    assert hc.blockiness(shifted, axis=1) < 1.0
    assert hc.blockiness(shifted, axis=0) < 1.0


def test_blockiness_is_measured_at_native_resolution_on_downscaled_frames():
    native = grey_frames(block_means(natural(1080, 1920, blur=6.0)))
    assert hc.downscale_factor(1080, 1920) == 2
    got = hc.step_statistics(native)
    y = hc.luma(native[0])
    assert got["blockiness_h"] == pytest.approx(hc.blockiness(y, axis=1))
    assert got["blockiness_v"] == pytest.approx(hc.blockiness(y, axis=0))
    assert got["blockiness_h"] > 1.2 and got["blockiness_v"] > 1.2


# --- Colour, brightness, contrast --------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 100, 255])
def test_grey_frame_has_no_colour_and_known_brightness(level):
    got = hc.step_statistics(uniform_frames((level, level, level)))
    assert got["colorfulness_hasler"] == 0.0
    assert got["saturation_mean"] == 0.0  # black pixels included: defined as 0, not NaN
    assert got["brightness_mean"] == pytest.approx(level / 255, abs=1e-6)
    assert got["contrast_rms"] == pytest.approx(0.0, abs=1e-6)


def test_pure_red_frame_matches_the_hasler_and_hsv_formulas():
    got = hc.step_statistics(uniform_frames((255, 0, 0)))
    # uniform frame: no spread, so only 0.3 x |(mean rg, mean yb)| = 0.3 x |(255, 127.5)|
    assert got["colorfulness_hasler"] == pytest.approx(0.3 * np.hypot(255.0, 127.5), rel=1e-5)
    assert got["saturation_mean"] == pytest.approx(1.0)
    assert got["brightness_mean"] == pytest.approx(0.299, abs=1e-5)  # BT.601 weight of red


def test_colourful_image_scores_above_its_grey_version():
    rng = np.random.default_rng(4)
    colour = rng.integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    grey = np.repeat(colour.mean(axis=3, keepdims=True).astype(np.uint8), 3, axis=3)
    a, b = hc.step_statistics(colour), hc.step_statistics(grey)
    assert a["colorfulness_hasler"] > 10 > b["colorfulness_hasler"] == 0.0
    assert a["saturation_mean"] > 0.3 > b["saturation_mean"] == 0.0


def test_half_black_half_white_frame_has_half_brightness_and_half_contrast():
    frames = uniform_frames((0, 0, 0), h=32, w=48)
    frames[:, :, 24:] = 255
    got = hc.step_statistics(frames)
    assert got["brightness_mean"] == pytest.approx(0.5, abs=1e-5)
    assert got["contrast_rms"] == pytest.approx(0.5, abs=1e-5)  # std of {0, 255} in equal parts


# --- Natural-scene statistics ------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5, 3.0])
def test_ggd_fit_recovers_the_shape_and_variance_of_generalised_gaussian_samples(beta):
    samples = stats.gennorm.rvs(beta, size=200_000, random_state=5)
    shape, variance = hc.ggd_fit(samples)
    assert shape == pytest.approx(beta, abs=0.1)
    assert variance == pytest.approx(stats.gennorm.var(beta), rel=0.05)


def test_ggd_moment_ratio_table_is_increasing_with_the_known_laplace_and_gauss_values():
    assert np.all(np.diff(hc.GGD_MOMENT_RATIOS) > 0)  # np.interp needs it
    # E|x|^2 / E[x^2] is 1/2 for a Laplacian and 2/pi for a Gaussian
    assert np.interp(1.0, hc.GGD_SHAPES, hc.GGD_MOMENT_RATIOS) == pytest.approx(0.5, abs=1e-4)
    assert np.interp(2.0, hc.GGD_SHAPES, hc.GGD_MOMENT_RATIOS) == pytest.approx(2 / np.pi, abs=1e-4)


@pytest.mark.parametrize("rgb", [(0, 0, 0), (128, 128, 128), (10, 200, 37), (255, 255, 255)])
def test_constant_frame_has_finite_mscn_and_the_peaked_limit(rgb):
    got = hc.step_statistics(uniform_frames(rgb))
    assert all(np.isfinite(v) for v in got.values())
    assert got["mscn_ggd_shape"] == hc.GGD_SHAPES[0]
    assert got["mscn_ggd_variance"] == 0.0
    assert got["mscn_pair_h_mean"] == got["mscn_pair_v_mean"] == 0.0


def test_mscn_neighbours_correlate_on_smooth_content_not_on_noise():
    rng = np.random.default_rng(6)
    noise = hc.mscn(128 + 30 * rng.standard_normal((128, 128)))
    nat = hc.mscn(natural(128, 128))
    assert np.mean(nat[:, :-1] * nat[:, 1:]) > 0 > np.mean(noise[:, :-1] * noise[:, 1:])


# --- Spatial and temporal information ----------------------------------------------------------


def test_spatial_information_is_zero_when_flat_and_grows_with_detail():
    assert hc.spatial_information(np.full((32, 32), 50.0)) == 0.0
    image = natural(blur=1.0)
    assert hc.spatial_information(image) > hc.spatial_information(ndimage.gaussian_filter(image, 3))


def test_repeated_frames_are_all_duplicates_with_zero_motion():
    frames = np.repeat(moving_frames(1), 8, axis=0)
    got = hc.step_statistics(frames)
    assert got["duplicate_frame_fraction"] == 1.0
    assert got["ti_max"] == got["ti_mean"] == 0.0
    assert got["frame_diff_mean_abs"] == got["frame_diff_mean_abs_max"] == 0.0


def test_moving_frames_have_no_duplicates_and_positive_motion():
    got = hc.step_statistics(moving_frames(8))
    assert got["duplicate_frame_fraction"] == 0.0
    assert got["ti_max"] >= got["ti_mean"] > 0
    assert got["frame_diff_mean_abs_max"] >= got["frame_diff_mean_abs"] > hc.DUPLICATE_THRESHOLD


def test_every_other_frame_repeated_gives_four_duplicates_in_seven_pairs():
    frames = np.repeat(moving_frames(4), 2, axis=0)  # A A B B C C D D
    assert hc.step_statistics(frames)["duplicate_frame_fraction"] == pytest.approx(4 / 7)


def test_global_brightness_flicker_moves_frame_difference_but_not_ti():
    # TI is the spatial spread of the difference: a uniform change has none
    levels = [40, 60, 40, 60, 40, 60, 40, 60]
    frames = np.stack([uniform_frames((v, v, v), t=1)[0] for v in levels])
    got = hc.step_statistics(frames)
    assert got["ti_max"] == pytest.approx(0.0, abs=1e-4)
    assert got["frame_diff_mean_abs"] == pytest.approx(20.0, abs=1e-3)
    assert got["duplicate_frame_fraction"] == 0.0



def test_motion_without_repeats_never_reads_as_duplicates_at_the_end_of_a_low_fps_video():
    # 1.5 s at 10 fps -> 2 steps; the second starts at frame 10 but only frames 10..14 exist
    info = MediaInfo(n_frames=15, fps=10.0, width=64, height=48, has_audio=False)
    video = moving_frames(info.n_frames)  # every frame differs from the previous one
    plan = hc.SAMPLING.plan(info)
    out = extractors.create("handcrafted").forward(video[plan.frame_indices])
    assert (out[:, hc.FEATURE_NAMES.index("duplicate_frame_fraction")] == 0).all()

# --- The resolution rule -----------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "factor"), [
    (1080, 1920, 2), (1920, 1080, 2), (720, 1280, 1), (721, 1280, 2), (2160, 3840, 3),
    (1440, 2560, 2), (480, 640, 1), (16, 16, 1),
])
def test_downscale_factor_examples(height, width, factor):
    assert hc.downscale_factor(height, width) == factor


def test_downscale_factor_is_the_smallest_that_reaches_720():
    for short in range(16, 5000):
        f = hc.downscale_factor(short, short + 100)
        assert short / f <= hc.MAX_SHORT_SIDE
        assert f == 1 or short / (f - 1) > hc.MAX_SHORT_SIDE


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_area_downscale_equals_a_block_mean_and_drops_trailing_pixels(factor):
    images = np.random.default_rng(7).random((2, 3, 37, 50)).astype(np.float32)
    h, w = 37 // factor, 50 // factor
    reference = images[..., : h * factor, : w * factor].reshape(2, 3, h, factor, w, factor).mean(axis=(3, 5))
    np.testing.assert_allclose(hc.area_downscale(images, factor), reference, rtol=1e-5)


def test_2x_replicated_1080p_frames_read_like_their_540p_source():
    """Downscaling brings 1080p to the 540p viewing scale: pixel-doubled 540p gives the same values."""
    source = moving_frames(2, 540, 960, seed=8)
    doubled = source.repeat(2, axis=1).repeat(2, axis=2)
    a, b = hc.step_statistics(source), hc.step_statistics(doubled)
    for name in hc.FEATURE_NAMES:
        if name.startswith("blockiness"):
            continue  # measured at native resolution by design
        assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("shape", [(2, 15, 64, 3), (2, 64, 15, 3), (2, 4, 4, 3)])
def test_frames_smaller_than_16_px_are_rejected(shape):
    with pytest.raises(ValueError, match="at least 16 px"):
        hc.step_statistics(np.zeros(shape, dtype=np.uint8))


def test_16_px_frames_are_the_smallest_accepted():
    got = hc.step_statistics(moving_frames(2, 16, 16))
    assert all(np.isfinite(v) for v in got.values())


# --- The extractor -----------------------------------------------------------------------------


def test_extractor_is_registered_with_8_consecutive_frames_per_second():
    ex = extractors.create("handcrafted")
    assert isinstance(ex, hc.HandcraftedExtractor)
    assert ex.sampling == Clips(frames=8, consecutive=True)
    assert ex.feature_names() == list(hc.FEATURE_NAMES)
    assert ex.step_dim == 18 and len(set(ex.feature_names())) == 18


def test_forward_returns_one_float32_row_per_step_in_feature_name_order():
    ex = extractors.create("handcrafted")
    batch = np.stack([moving_frames(8, seed=s) for s in range(3)])
    out = ex.forward(batch)
    assert out.shape == (3, ex.step_dim) and out.dtype == np.float32
    for row, frames in zip(out, batch):
        stats_ = hc.step_statistics(frames)
        np.testing.assert_array_equal(row, np.array([stats_[n] for n in ex.feature_names()], np.float32))


def test_forward_is_deterministic_and_batch_independent():
    ex = extractors.create("handcrafted")
    batch = np.stack([moving_frames(8, seed=s) for s in range(3)])
    out = ex.forward(batch)
    np.testing.assert_array_equal(out, ex.forward(batch))
    np.testing.assert_array_equal(out[1:2], ex.forward(batch[1:2]))


def test_encoded_video_extracts_and_a_too_small_one_fails_only_handcrafted(make_video):
    ex = [extractors.create("handcrafted"), extractors.create("audio")]
    _, good = extract_item(make_video("good.mp4", n=30, fps=15), ex)
    hand = good[ex[0].key]
    assert hand.status == OK and hand.steps.shape == (2, 18) and np.isfinite(hand.pooled).all()
    assert (np.diff(hand.frame_indices, axis=1) == 1).all()  # adjacent frames within each step
    _, tiny = extract_item(make_video("tiny.mp4", n=15, fps=15, h=14, w=14), ex)
    assert tiny[ex[0].key].status == FAILED and "at least 16 px" in tiny[ex[0].key].error
    assert tiny[ex[1].key].status == OK


# --- Decoder pixels: luma codes from the Y' plane ----------------------------------------------


def limited_range_codes(luma: np.ndarray) -> np.ndarray:
    """8-bit limited-range Y' codes (16..235) of 0..255 luma, as an encoder stores them."""
    return np.clip(np.rint(16 + luma * 219 / 255), 16, 235).astype(np.uint8)


@pytest.mark.parametrize(("h", "w"), [(48, 64), (1080, 1920)])
def test_statistics_from_y_plane_codes_match_those_from_the_same_luma_in_float(h, w):
    """Integer codes with a scale and offset (the decoder's path, downscaled before scaling) give
    the statistics of the float luma they stand for: only the codes' rounding separates them."""
    frames = moving_frames(3, h, w, seed=5)
    codes = limited_range_codes(hc.luma(frames))
    scale, offset = 255 / 219, -16 * 255 / 219
    exact = hc.step_statistics(StepPixels(frames[:1], Luma(codes.astype(np.float32) * scale + offset)))
    coded = hc.step_statistics(StepPixels(frames[:1], Luma(codes, scale, offset)))
    for name in hc.FEATURE_NAMES:
        assert coded[name] == pytest.approx(exact[name], rel=1e-4, abs=1e-4), name


def test_3x3_statistics_equal_scipy_filters_on_the_interior():
    image = natural(blur=1.0).astype(np.float32)
    inner = (slice(1, -1), slice(1, -1))
    second = np.array([1.0, -2.0, 1.0])
    assert hc.laplacian_variance(image) == pytest.approx(float(ndimage.laplace(image)[inner].var()), rel=1e-5)
    immerkaer = ndimage.correlate1d(ndimage.correlate1d(image, second, axis=0), second, axis=1)[inner]
    assert hc.immerkaer_noise_sigma(image) == pytest.approx(np.sqrt(np.pi / 2) / 6 * np.abs(immerkaer).mean(), rel=1e-5)
    sobel = np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))[inner]
    assert hc.spatial_information(image) == pytest.approx(float(sobel.std()), rel=1e-5)


def test_blockiness_of_codes_with_a_scale_equals_blockiness_of_the_scaled_luma():
    codes = limited_range_codes(block_means(natural(256, 256)))
    luma = codes.astype(np.float64) * 255 / 219
    for axis in (0, 1):
        assert hc.blockiness(codes, axis, scale=255 / 219) == pytest.approx(hc.blockiness(luma, axis), rel=1e-9)


@pytest.mark.parametrize("level", [40, 128, 220])
def test_encoded_grey_video_reads_its_grey_level_from_the_y_plane(make_video, tmp_path, level):
    """A flat grey clip through decoder and extractor: brightness is the grey level, to within the
    limited-range code step (255/219 levels), with no RGB rounding in between."""
    from featbank.demo.synth import write_video

    path = write_video(tmp_path / "grey.mp4", np.full((16, 64, 64, 3), level, np.uint8), 15.0)
    ex = extractors.create("handcrafted")
    _, out = extract_item(path, [ex])
    brightness = out[ex.key].steps[0, hc.FEATURE_NAMES.index("brightness_mean")] * 255
    assert brightness == pytest.approx(level, abs=0.6)


# --- Fast paths against plain references ------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(16, 16), (37, 50), (96, 160), (540, 960)])
def test_local_moments_equal_scipy_gaussian_filters_with_reflect_edges(h, w):
    """The banded matrix products are scipy's 7x7 Gaussian (sigma 7/6, 'reflect' edges), for sizes
    that are and are not multiples of the product's block."""
    y = natural(h, w, seed=h).astype(np.float32)
    moments = hc.local_moments(y)
    for got, plane in zip(moments, (y.astype(np.float64), y.astype(np.float64) ** 2)):
        expected = ndimage.gaussian_filter(plane, hc.MSCN_SIGMA, radius=hc.MSCN_RADIUS)
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6 * np.abs(expected).max())


def test_mscn_matches_the_float64_formula_and_ignores_brightness_offsets():
    y = natural(120, 200, seed=3)
    mean = ndimage.gaussian_filter(y, hc.MSCN_SIGMA, radius=hc.MSCN_RADIUS)
    deviation = np.sqrt(np.abs(ndimage.gaussian_filter(y * y, hc.MSCN_SIGMA, radius=hc.MSCN_RADIUS) - mean**2))
    expected = (y - mean) / (deviation + hc.MSCN_C)
    np.testing.assert_allclose(hc.mscn(y), expected, atol=2e-4)
    np.testing.assert_allclose(hc.mscn(y + 60), expected, atol=2e-4)


@pytest.mark.parametrize("size", [5, 4096, 518_400, 518_401])
def test_blockwise_dot_and_total_are_float64_accurate(size):
    rng = np.random.default_rng(size)
    a, b = (rng.random(size) * 200).astype(np.float32), (rng.standard_normal(size) * 50).astype(np.float32)
    products = a.astype(np.float64) * b.astype(np.float64)  # of both signs: error relative to their size
    assert hc.dot(a, b) == pytest.approx(float(products.sum()), abs=1e-7 * float(np.abs(products).sum()))
    assert hc.total(a) == pytest.approx(float(a.astype(np.float64).sum()), rel=1e-7)
    mean, variance = hc.mean_and_variance(a)
    assert mean == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-7)
    assert variance == pytest.approx(float(a.astype(np.float64).var()), rel=1e-6)


def test_temporal_statistics_of_codes_with_a_scale_equal_those_of_the_scaled_luma():
    """Differencing integer codes and scaling the results is the same as differencing luma."""
    codes = limited_range_codes(hc.luma(moving_frames(8, 48, 64, seed=2)))
    scale, offset = 255 / 219, -16 * 255 / 219
    coded = hc.temporal_statistics(codes, scale)
    exact = hc.temporal_statistics(codes.astype(np.float64) * scale + offset)
    for name, value in exact.items():
        assert coded[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_results_do_not_share_work_arrays_between_calls():
    first, second = hc.mscn(natural(64, 64, seed=1)), hc.mscn(natural(64, 64, seed=2))
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, hc.mscn(natural(64, 64, seed=1)))
