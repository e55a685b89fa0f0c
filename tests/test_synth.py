"""The media writer and the demo dataset: real files that decode, and labels that mean something."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from scipy import ndimage

from featbank.demo import data as demo_data
from featbank.demo.synth import write_image, write_video

TINY = dict(n_sources=2, variants=3, seconds=1.5, size=(48, 64), fps=10)


def _frames(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _audio_streams(path: Path) -> list:
    with av.open(str(path)) as container:
        return list(container.streams.audio)


def _decoded_audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _labels(path: Path) -> np.ndarray:
    return np.array([[float(r[c]) for c in demo_data.LABELS] for r in _read_manifest(path)])


def _laplacian_variance(frames: np.ndarray) -> float:
    """Energy of the finest detail: what blur removes first."""
    grey = frames.astype(np.float64).mean(-1)
    return float(np.mean([ndimage.laplace(f).var() for f in grey]))


def test_write_video_round_trip_with_audio(tmp_path: Path):
    sr = 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr)).astype(np.float32)
    path = write_video(tmp_path / "a.mp4", _frames(24, 48, 64), fps=12, audio=audio, sample_rate=sr)
    reader = decord.VideoReader(str(path))
    assert len(reader) == 24
    assert reader[0].shape == (48, 64, 3)
    assert reader.get_avg_fps() == pytest.approx(12, rel=0.01)
    streams = _audio_streams(path)
    assert len(streams) == 1 and streams[0].rate == sr
    assert _decoded_audio_samples(path) >= 2 * sr


def test_write_video_without_audio_has_no_audio_stream(tmp_path: Path):
    path = write_video(tmp_path / "b.mp4", _frames(7, 32, 32), fps=29.97)
    assert len(decord.VideoReader(str(path))) == 7
    assert _audio_streams(path) == []


@pytest.mark.parametrize("shape", [(5, 33, 64, 3), (5, 32, 63, 3)])
def test_write_video_rejects_odd_sizes(tmp_path: Path, shape):
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", np.zeros(shape, np.uint8), fps=10)


def test_write_image_is_lossless(tmp_path: Path):
    frame = _frames(1, 20, 30)[0]
    path = write_image(tmp_path / "still.png", frame)
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(decoded, frame)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    return demo_data.synthesize(tmp_path_factory.mktemp("demo"), seed=3, **TINY)


def test_synthesize_writes_a_consistent_manifest(tiny_manifest: Path):
    rows = _read_manifest(tiny_manifest)
    levels = [demo_data.LEVEL_PREFIX + name for name in demo_data.DISTORTIONS]
    assert list(rows[0]) == ["video_id", "path", "group", *demo_data.LABELS, *levels]
    assert len(rows) == 6
    assert [r["group"] for r in rows] == ["src00"] * 3 + ["src01"] * 3
    assert all(r["video_id"].startswith(r["group"] + "_") for r in rows)
    for row in rows:
        assert not Path(row["path"]).is_absolute()
        reader = decord.VideoReader(str(tiny_manifest.parent / row["path"]))
        assert (len(reader), *reader[0].shape) == (15, 48, 64, 3)
        assert all(0 <= int(row[c]) <= 4 for c in levels)
    labels = _labels(tiny_manifest)
    assert labels.min() >= 1 and labels.max() <= 5


def test_synthesized_manifest_loads_with_levels_as_metadata(tiny_manifest: Path):
    from featbank.io.manifest import load_manifest

    manifest = load_manifest(tiny_manifest)
    assert manifest.label_columns == list(demo_data.LABELS)


def test_labels_depend_only_on_the_seed(tiny_manifest: Path, tmp_path: Path):
    """Not on the order of generation either: two workers make the same labels as one."""
    again = demo_data.synthesize(tmp_path / "again", seed=3, n_jobs=2, **TINY)
    other = demo_data.synthesize(tmp_path / "other", seed=4, **TINY)
    np.testing.assert_array_equal(_labels(again), _labels(tiny_manifest))
    assert [r["video_id"] for r in _read_manifest(again)] == [r["video_id"] for r in _read_manifest(tiny_manifest)]
    assert not np.allclose(_labels(other), _labels(tiny_manifest))


def test_the_halo_option_changes_the_dimensions_not_overall(tiny_manifest: Path, tmp_path: Path):
    """``halo=0``: each dimension's label is its own score plus rater noise; ``overall`` is the same."""
    plain = demo_data.synthesize(tmp_path / "plain", seed=3, halo=0.0, **TINY)
    overall = demo_data.LABELS.index("overall")
    np.testing.assert_array_equal(_labels(plain)[:, overall], _labels(tiny_manifest)[:, overall])
    for row in _read_manifest(plain):
        levels = {name: int(row[demo_data.LEVEL_PREFIX + name]) for name in demo_data.DISTORTIONS}
        source, variant = map(int, re.findall(r"\d+", row["video_id"]))  # src03_v01 -> 3, 1
        rng = demo_data._rng(3, demo_data._RATERS, source, variant)
        noise = {label: rng.normal(0, demo_data.RATER_SD) for label in demo_data.LABELS}
        for label, score in demo_data.dimension_scores(levels).items():
            assert float(row[label]) == pytest.approx(np.clip(score + noise[label], 1, 5), abs=1e-4)
    with pytest.raises(ValueError, match="halo"):
        demo_data.synthesize(tmp_path / "bad", seed=3, halo=1.5, **TINY)


PRIMARY_DRIVER = {"color": "color", "noise": "noise", "artifact": "compression", "blur": "blur",
                  "temporal": "stutter", "audio": "audio_noise"}


def _all_level_combinations() -> list[dict[str, int]]:
    grid = np.stack(np.meshgrid(*[range(5)] * len(demo_data.DISTORTIONS)), -1).reshape(-1, len(demo_data.DISTORTIONS))
    return [dict(zip(demo_data.DISTORTIONS, map(int, row), strict=True)) for row in grid]


def test_every_label_falls_with_its_own_distortion_whatever_the_others():
    """Over all 5**6 level combinations: one more level of a dimension's distortion lowers its
    noise-free score (the labels really are driven by the levels), and never raises ``overall``,
    except where compression smooths grain away (then a noisy clip may gain a little overall)."""
    for levels in _all_level_combinations():
        before = demo_data.true_scores(levels)
        for label, driver in PRIMARY_DRIVER.items():
            if levels[driver] == 4:
                continue
            after = demo_data.true_scores({**levels, driver: levels[driver] + 1})
            assert after[label] < before[label], (label, levels)
            if driver != "compression" or levels["noise"] == 0:
                assert after["overall"] <= before["overall"] + 1e-12, (driver, levels)


def test_dimensions_judged_on_their_own_span_the_scale_and_saturate():
    """Before the halo, pristine is near the top, the strongest level near the bottom, and the
    steps shrink at both ends (the saturating curve raters produce)."""
    pristine = dict.fromkeys(demo_data.DISTORTIONS, 0)
    for label, driver in PRIMARY_DRIVER.items():
        curve = [demo_data.dimension_scores({**pristine, driver: level})[label] for level in range(5)]
        assert curve[0] == pytest.approx(4.8) and curve[-1] < 2.0, (label, curve)
        steps = -np.diff(curve)
        assert steps.argmax() not in (0, len(steps) - 1) or steps[-1] < steps[0], (label, curve)


def test_every_label_spans_the_scale():
    """With the halo too: 4.8 when pristine, below 2 for the worst combination of levels."""
    pristine = demo_data.true_scores(dict.fromkeys(demo_data.DISTORTIONS, 0))
    lowest = {label: min(demo_data.true_scores(levels)[label] for levels in _all_level_combinations())
              for label in demo_data.LABELS}
    for label in demo_data.LABELS:
        assert pristine[label] == pytest.approx(4.8) and lowest[label] < 2.0, (label, lowest)


def _level_draws(n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels as the demo draws them, with each draw's noise-free labels and own-dimension scores."""
    rng = np.random.default_rng(0)
    draws = [demo_data.sample_levels(rng) for _ in range(n)]
    levels = np.array([[d[name] for name in demo_data.DISTORTIONS] for d in draws])
    labels = np.array([[demo_data.true_scores(d)[t] for t in demo_data.LABELS] for d in draws])
    own = np.array([[demo_data.dimension_scores(d)[t] for t in PRIMARY_DRIVER] for d in draws])
    return levels, labels, own


def test_the_halo_makes_dimensions_correlate_with_overall_as_on_finevd():
    """FineVD-GC's dimensions correlate 0.87-0.94 with its overall score; the halo brings the demo's
    labels near that (each needs both feature groups), while each dimension judged on its own
    barely tracks overall, and each label's own distortion stays its strongest cause."""
    levels, labels, own = _level_draws()
    overall = labels[:, demo_data.LABELS.index("overall")]
    for d, (label, driver) in enumerate(PRIMARY_DRIVER.items()):
        column = labels[:, demo_data.LABELS.index(label)]
        assert 0.8 < np.corrcoef(column, overall)[0, 1] < 0.95, label
        assert np.corrcoef(own[:, d], overall)[0, 1] < 0.65, label
        by_level = {name: np.corrcoef(column, levels[:, i])[0, 1] for i, name in enumerate(demo_data.DISTORTIONS)}
        assert min(by_level, key=by_level.get) == driver, (label, by_level)


def test_rater_noise_is_modest_and_seeded():
    levels = dict.fromkeys(demo_data.DISTORTIONS, 2)
    truth = demo_data.true_scores(levels)
    draws = np.array([[demo_data.labels_for(levels, np.random.default_rng(i))[t] for t in demo_data.LABELS]
                      for i in range(400)])
    assert np.abs(draws.mean(0) - [truth[t] for t in demo_data.LABELS]).max() < 0.05
    assert np.allclose(draws.std(0), demo_data.RATER_SD, rtol=0.2)
    assert demo_data.labels_for(levels, np.random.default_rng(7)) == demo_data.labels_for(levels, np.random.default_rng(7))


def test_sources_share_exposure_and_colourfulness():
    """Sources differ in content, not in how they were shot: a washed-out clip is recognisable."""
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    for index in range(len(demo_data.PATTERNS)):
        frames = demo_data.make_source(index, seconds=0.5, size=(48, 64), fps=8, seed=0).frames
        y = frames @ luma
        chroma_rms = np.sqrt(np.mean((frames - y[..., None]) ** 2))
        assert abs(y.mean() - demo_data.SOURCE_LUMA_MEAN) < 0.05
        assert abs(y.std() - demo_data.SOURCE_LUMA_SD) < 0.04
        assert abs(chroma_rms - demo_data.SOURCE_CHROMA_RMS) < 0.04


def test_audio_noise_lowers_the_signal_to_noise_ratio():
    source = demo_data.make_source(1, seconds=1.0, size=(32, 32), fps=8, seed=0)
    pristine = dict.fromkeys(demo_data.DISTORTIONS, 0)
    snr = []
    for level in range(5):
        _, audio = demo_data.render_variant(source, {**pristine, "audio_noise": level}, np.random.default_rng(0))
        noise = audio - source.audio
        snr.append(10 * np.log10(np.mean(source.audio**2) / max(np.mean(noise**2), 1e-20)))
    assert all(np.diff(snr) < 0)


def test_blur_removes_fine_detail():
    source = demo_data.make_source(0, seconds=1.0, size=(64, 96), fps=8, seed=0)
    pristine = {name: 0 for name in demo_data.DISTORTIONS}
    sharp, _ = demo_data.render_variant(source, pristine, np.random.default_rng(0))
    blurred, _ = demo_data.render_variant(source, {**pristine, "blur": 4},
                                          np.random.default_rng(0))
    assert sharp.shape == blurred.shape == (8, 64, 96, 3)
    assert _laplacian_variance(blurred) < 0.2 * _laplacian_variance(sharp)
