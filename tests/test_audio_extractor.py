"""The audio extractor on synthetic seconds: shapes, silence, pitch, level, and linearity.

Expectations come from signal maths rather than from earlier runs: a sine of amplitude ``a`` has
RMS ``a / sqrt(2)``; a tone lands in the chroma class and constant-Q bin of its MIDI note; scaling
a signal by 10 adds exactly 20 dB to every linear-magnitude level, leaves per-frame normalised
chroma alone and multiplies cube-root-compressed energies by ``100 ** (1/3)``.
"""

from __future__ import annotations

import numpy as np
import pytest

import extractors
from extractors import audio as au
from featbank.extraction.sampling import AudioSeconds

SR = 16000
T = np.arange(SR) / SR


@pytest.fixture(scope="module")
def ex():
    return extractors.create("audio")


@pytest.fixture(scope="module")
def names(ex):
    return ex.feature_names()


def tone(freq: float, amplitude: float = 1.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * T)).astype(np.float32)


def noise(std: float, seed: int = 0) -> np.ndarray:
    return (std * np.random.default_rng(seed).standard_normal(SR)).astype(np.float32)


def silence() -> np.ndarray:
    return np.zeros(SR, dtype=np.float32)


def block(names: list[str], prefix: str) -> list[int]:
    return [i for i, n in enumerate(names) if n.startswith(prefix)]


def midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


# --- Contract ----------------------------------------------------------------------------------


def test_registered_with_one_second_steps_at_16_khz(ex, names):
    assert isinstance(ex, au.AudioExtractor)
    assert ex.sampling == AudioSeconds(sample_rate=SR)
    assert ex.step_dim == len(names) == len(set(names))
    sizes = {p: len(block(names, p)) for p in ("mfcc_", "gfcc_", "cqt_", "chroma_", "rms_db")}
    assert sizes == {"mfcc_": 20, "gfcc_": 20, "cqt_": 84, "chroma_": 12, "rms_db": 1}


def test_forward_gives_finite_float32_rows_for_silence_noise_and_tones(ex):
    batch = np.stack([silence(), noise(0.1), tone(440), tone(100, 0.5), tone(3000, 0.01)])
    out = ex.forward(batch)
    assert out.shape == (5, ex.step_dim) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_rows_do_not_depend_on_the_batch_they_arrive_in(ex):
    rows = [silence(), noise(0.3, seed=1), tone(440), tone(1000, 0.05)]
    together = ex.forward(np.stack(rows))
    for i, row in enumerate(rows):
        alone = ex.forward(row[None])[0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ex.forward(np.stack(rows[::-1]))[::-1], together, rtol=1e-5, atol=1e-4)


def test_forward_is_deterministic(ex):
    batch = np.stack([noise(0.2, seed=2), tone(660)])
    np.testing.assert_array_equal(ex.forward(batch), ex.forward(batch))


# --- Level ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("amplitude", [1.0, 0.1, 0.01])
def test_rms_db_of_a_sine_is_its_amplitude_over_root_two(ex, names, amplitude):
    # 440 whole periods in the second, so the discrete mean of sin^2 is exactly 1/2
    got = ex.forward(tone(440, amplitude)[None])[0, names.index("rms_db")]
    assert got == pytest.approx(20 * np.log10(amplitude / np.sqrt(2)), abs=1e-3)


def test_rms_db_of_white_noise_is_its_standard_deviation_in_db(ex, names):
    x = noise(0.1, seed=3)
    got = ex.forward(x[None])[0, names.index("rms_db")]
    assert got == pytest.approx(20 * np.log10(0.1), abs=0.1)  # sample std within ~0.5% at n = 16000


def test_silence_sits_on_the_documented_floors(ex, names):
    out = ex.forward(silence()[None])[0]
    assert np.isfinite(out).all()
    assert out[names.index("rms_db")] == pytest.approx(-100.0, abs=1e-3)  # amin 1e-5
    np.testing.assert_allclose(out[block(names, "cqt_")], -100.0, atol=1e-3)
    # every mel band at the -100 dB power floor: the orthonormal DCT of a constant 64-vector
    # puts sqrt(64) * -100 in c0 and nothing elsewhere
    mfcc = out[block(names, "mfcc_")]
    assert mfcc[0] == pytest.approx(-100 * np.sqrt(au.N_BANDS), abs=1e-2)
    np.testing.assert_allclose(mfcc[1:], 0.0, atol=1e-3)
    np.testing.assert_array_equal(out[block(names, "gfcc_")], 0.0)  # cube root of zero energy
    np.testing.assert_array_equal(out[block(names, "chroma_")], 0.0)


def test_ten_times_louder_noise_adds_20_db_and_keeps_chroma(ex, names):
    quiet, loud = ex.forward(np.stack([noise(0.01, seed=4), 10 * noise(0.01, seed=4)]))
    assert loud[names.index("rms_db")] - quiet[names.index("rms_db")] == pytest.approx(20.0, abs=1e-3)
    cqt = block(names, "cqt_")
    assert loud[cqt].mean() > quiet[cqt].mean()
    np.testing.assert_allclose(loud[cqt] - quiet[cqt], 20.0, atol=1e-2)  # linear transform, dB
    mfcc = block(names, "mfcc_")  # +20 dB in every band: only c0 moves, by sqrt(64) * 20
    assert loud[mfcc[0]] - quiet[mfcc[0]] == pytest.approx(20 * np.sqrt(au.N_BANDS), abs=1e-2)
    np.testing.assert_allclose(loud[mfcc[1:]], quiet[mfcc[1:]], atol=1e-3)
    gfcc = block(names, "gfcc_")  # energy x 100 under a cube root
    np.testing.assert_allclose(loud[gfcc], quiet[gfcc] * 100 ** (1 / 3), rtol=1e-4, atol=1e-6)
    chroma = block(names, "chroma_")  # each frame scaled to a maximum of 1
    np.testing.assert_allclose(loud[chroma], quiet[chroma], atol=1e-5)


# --- Pitch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("midi", [69, 60, 64, 79])  # A4 (440 Hz), C4, E4, G5
def test_a_pure_tone_peaks_in_its_own_chroma_class_and_cqt_bin(ex, names, midi):
    out = ex.forward(tone(midi_hz(midi), 0.5)[None])[0]
    chroma, cqt = block(names, "chroma_"), block(names, "cqt_")
    pitch_class = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"][midi % 12]
    octave = midi // 12 - 1
    assert names[chroma[int(np.argmax(out[chroma]))]] == f"chroma_{pitch_class}"
    assert names[cqt[int(np.argmax(out[cqt]))]] == f"cqt_{pitch_class}{octave}"
    assert out[names.index(f"chroma_{pitch_class}")] == pytest.approx(1.0, abs=0.05)


def test_a4_tone_names_and_bin_position_agree(names):
    # the cqt block starts at C1 (MIDI 24) with 12 bins per octave, so A4 = MIDI 69 is bin 45
    cqt = block(names, "cqt_")
    assert names[cqt[0]] == "cqt_C1" and names[cqt[69 - au.CQT_FMIN_MIDI]] == "cqt_A4"
    assert names[cqt[-1]] == "cqt_B7"


def test_tone_level_in_its_cqt_bin_rises_with_amplitude_by_20_db_per_decade(ex, names):
    quiet, loud = ex.forward(np.stack([tone(440, 0.05), tone(440, 0.5)]))
    a4 = names.index("cqt_A4")
    assert loud[a4] - quiet[a4] == pytest.approx(20.0, abs=1e-2)


def test_gammatone_centres_span_50_hz_to_below_nyquist_on_the_erb_scale():
    centres = au.erb_centre_frequencies()
    assert centres.shape == (au.N_BANDS,)
    assert centres[0] == pytest.approx(au.GAMMATONE_FMIN) and centres[-1] < SR / 2
    rates = 21.4 * np.log10(1 + 0.00437 * centres)  # Glasberg & Moore ERB-rate
    np.testing.assert_allclose(np.diff(rates), np.diff(rates)[0], rtol=1e-9)


def test_cached_constant_q_filter_bases_give_bit_identical_features(monkeypatch):
    """The in-memory cache of librosa's CQT filter bases changes cost, never values: a fresh cache
    (first call designs, second call reuses) against librosa's own design on every call."""
    from librosa.core import constantq

    design = au.FILTER_BASES._design or getattr(constantq, au.FilterBasisCache.NAME)
    audio = np.random.default_rng(3).standard_normal((4, au.SAMPLE_RATE)).astype(np.float32) * 0.1
    monkeypatch.setattr(constantq, au.FilterBasisCache.NAME, design)
    uncached = au.constant_q_magnitude(audio)
    cache = au.FilterBasisCache()
    cache.install()
    assert getattr(constantq, au.FilterBasisCache.NAME) is cache
    first, second = au.constant_q_magnitude(audio), au.constant_q_magnitude(audio)
    assert len(cache._bases) == au.CQT_OCTAVES  # one basis per octave, reused by the second call
    np.testing.assert_array_equal(first, uncached)
    np.testing.assert_array_equal(second, uncached)
