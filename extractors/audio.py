"""Audio features per second: MFCC, GFCC, constant-Q spectrum, chroma and loudness.

The soundtrack shapes perceived quality of user-generated video (wind noise, clipping, hum,
silence, music against speech), and audio-visual VQA models feed it next to the picture. Each step
is one second of mono audio at 16 kHz; every feature is averaged over the short-time frames inside
that second, and every row is computed on its own, so a second's features do not depend on the
batch it arrives in (hence absolute dB references and no ``top_db`` clipping, which librosa would
take relative to the loudest value in the whole array).

* MFCC and GFCC share one power spectrogram: 25 ms Hann windows every 10 ms, zero-padded to 1024
  points (the defaults of Ellis' gammatonegram). Both use 64 bands and keep 20 DCT-II
  coefficients, so they differ only where the auditory models differ: mel triangles with log
  compression against gammatone filters with cube-root compression (Shao, Srinivasan & Wang 2007).
* The constant-Q transform spans 7 octaves from C1 (32.7 Hz) at 12 bins per octave; its magnitude
  gives both the per-note level in dB and the 12-bin chroma. The C1 octave's filters last about
  half a second, so on a 1-s step they partly see the transform's zero padding.
* ``rms_db`` is the level of the whole second in dB relative to full scale (amplitude 1).

Silence is finite everywhere: dB conversions floor the amplitude at librosa's ``amin`` (-100 dB),
and the cube root of zero energy is zero.
"""

from __future__ import annotations

import threading
import warnings
from functools import cached_property

import librosa
import librosa.core.constantq
import numpy as np
from scipy import fft, signal

from extractors import register
from extractors.base import Extractor
from featbank.extraction.sampling import AudioSeconds

# --- Sampling ----------------------------------------------------------------------------------

SAMPLING = AudioSeconds(sample_rate=16000)
SAMPLE_RATE = SAMPLING.sample_rate

N_FFT = 1024
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_BANDS = 64
N_CEPSTRA = 20

GAMMATONE_FMIN = 50.0
GAMMATONE_FMAX = 8000.0

CQT_FMIN_MIDI = 24  # C1
CQT_OCTAVES = 7
BINS_PER_OCTAVE = 12
CQT_HOP_LENGTH = 512  # a multiple of 2**(CQT_OCTAVES - 1), as librosa's octave-wise downsampling needs


def power_spectrogram(audio: np.ndarray) -> np.ndarray:
    """``(B, N_FFT // 2 + 1, frames)`` short-time power spectrum shared by MFCC and GFCC."""
    spectrum = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH)
    return np.abs(spectrum) ** 2


class FilterBasisCache:
    """Keeps librosa's constant-Q filter bases, built once per octave instead of on every call.

    ``librosa.cqt`` designs 84 wavelets and their FFTs on every call (librosa's own cache for them
    is an opt-in joblib disk cache, off by default): two thirds of this extractor's CQT time for a
    batch of 32 seconds. The bases depend only on the transform's fixed parameters, so they are
    memoised in memory around librosa's private ``__vqt_filter_fft``, and a copy is returned each
    time because ``vqt`` rescales the basis in place. Results are bit-identical (tested). If a
    librosa release renames the function, :meth:`install` leaves librosa as it is: slower, not wrong.
    """

    NAME = "__vqt_filter_fft"

    def __init__(self) -> None:
        self._bases: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._design = None

    def install(self) -> None:
        design = getattr(librosa.core.constantq, self.NAME, None)
        if callable(design) and self._design is None:
            self._design = design
            setattr(librosa.core.constantq, self.NAME, self)

    @staticmethod
    def _key(args: tuple, kwargs: dict) -> tuple:
        def hashable(value):
            return (value.dtype.str, value.shape, value.tobytes()) if isinstance(value, np.ndarray) else value
        return tuple(hashable(a) for a in args) + tuple((k, hashable(v)) for k, v in sorted(kwargs.items()))

    def __call__(self, *args, **kwargs):
        key = self._key(args, kwargs)
        with self._lock:
            found = self._bases.get(key)
        if found is None:
            found = self._design(*args, **kwargs)
            with self._lock:
                self._bases[key] = found
        basis, n_fft, lengths = found
        return basis.copy(), n_fft, lengths.copy()


FILTER_BASES = FilterBasisCache()


def constant_q_magnitude(audio: np.ndarray) -> np.ndarray:
    """``(B, 84, frames)`` constant-Q magnitude from C1, shared by the CQT and chroma features.

    librosa warns that the lowest octave's filter is longer than the downsampled second; that is
    the expected cost of reaching C1 on 1-s steps (see the module docstring), so the warning is
    silenced here rather than repeated for every batch.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal", category=UserWarning)
        transform = librosa.cqt(
            audio,
            sr=SAMPLE_RATE,
            hop_length=CQT_HOP_LENGTH,
            fmin=librosa.midi_to_hz(CQT_FMIN_MIDI),
            n_bins=CQT_OCTAVES * BINS_PER_OCTAVE,
            bins_per_octave=BINS_PER_OCTAVE,
        )
    return np.abs(transform)


# --- Filterbank --------------------------------------------------------------------------------


def erb_centre_frequencies() -> np.ndarray:
    """``N_BANDS`` centres equally spaced on the ERB-rate scale (Glasberg & Moore 1990).

    The scale is ``21.4 log10(1 + 0.00437 f)``; the centres run from 50 Hz up to, but excluding,
    8 kHz: the Nyquist frequency, where no gammatone can be centred (Ellis' ERBSpace does the same).
    """
    low, high = np.log10(1 + 0.00437 * np.array([GAMMATONE_FMIN, GAMMATONE_FMAX]))
    rates = np.linspace(low, high, N_BANDS, endpoint=False)
    return (10**rates - 1) / 0.00437


def gammatone_filterbank() -> np.ndarray:
    """``(N_BANDS, N_FFT // 2 + 1)`` power gains of 4th-order gammatone filters at the FFT bins.

    This is Ellis' FFT-domain gammatonegram: instead of running 64 IIR filters over the waveform,
    each filter's frequency response (``scipy.signal.gammatone``, unit gain at its centre) weights
    the power spectrum, which approximates the filter outputs' energy at a fraction of the cost.
    Power spectrum, so the squared magnitude response.
    """
    bins = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=N_FFT)
    responses = [
        signal.freqz(*signal.gammatone(centre, "iir", fs=SAMPLE_RATE), worN=bins, fs=SAMPLE_RATE)[1]
        for centre in erb_centre_frequencies()
    ]
    return np.abs(np.array(responses)) ** 2


# --- Per-second features -----------------------------------------------------------------------


def mfcc(power: np.ndarray) -> np.ndarray:
    """``(B, 20)`` mean MFCC: log mel energies in dB, DCT-II (librosa's defaults otherwise)."""
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=N_BANDS)
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=N_CEPSTRA).mean(axis=-1)


def gfcc(power: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    """``(B, 20)`` mean GFCC: gammatone energies, cube root, orthonormal DCT-II (Shao et al. 2007).

    The cube root models loudness compression and, unlike the log, stays finite on silence.
    """
    energy = filterbank @ power
    return fft.dct(np.cbrt(energy), type=2, norm="ortho", axis=-2)[..., :N_CEPSTRA, :].mean(axis=-1)


def cqt_db(magnitude: np.ndarray) -> np.ndarray:
    """``(B, 84)`` mean constant-Q level per note in dB (amplitude 1 is 0 dB)."""
    return librosa.amplitude_to_db(magnitude, ref=1.0, top_db=None).mean(axis=-1)


def chroma(magnitude: np.ndarray) -> np.ndarray:
    """``(B, 12)`` mean chroma from the constant-Q magnitude, each frame scaled to a maximum of 1."""
    return librosa.feature.chroma_cqt(
        C=magnitude,
        sr=SAMPLE_RATE,
        hop_length=CQT_HOP_LENGTH,
        fmin=librosa.midi_to_hz(CQT_FMIN_MIDI),
        bins_per_octave=BINS_PER_OCTAVE,
    ).mean(axis=-1)


def rms_db(audio: np.ndarray) -> np.ndarray:
    """``(B,)`` RMS level of each whole second in dB re full scale."""
    return librosa.amplitude_to_db(np.sqrt(np.mean(np.square(audio, dtype=np.float64), axis=-1)), ref=1.0, top_db=None)


# --- The extractor -----------------------------------------------------------------------------

FEATURE_NAMES = (
    [f"mfcc_{i:02d}" for i in range(N_CEPSTRA)]
    + [f"gfcc_{i:02d}" for i in range(N_CEPSTRA)]
    + [f"cqt_{note}" for note in librosa.midi_to_note(CQT_FMIN_MIDI + np.arange(CQT_OCTAVES * BINS_PER_OCTAVE), unicode=False)]
    + [f"chroma_{note}" for note in librosa.midi_to_note(np.arange(12), octave=False, unicode=False)]
    + ["rms_db"]
)


@register
class AudioExtractor(Extractor):
    """Per-second spectral, cepstral, tonal and loudness features of the soundtrack."""

    name = "audio"
    version = "1"
    batch_size = 32

    @property
    def sampling(self) -> AudioSeconds:
        return SAMPLING

    def feature_names(self) -> list[str]:
        return list(FEATURE_NAMES)

    @cached_property
    def filterbank(self) -> np.ndarray:
        """Built on first use and kept: 64 filter designs are worth doing once per instance."""
        return gammatone_filterbank()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        FILTER_BASES.install()
        audio = np.asarray(batch, dtype=np.float32)
        power = power_spectrogram(audio)
        magnitude = constant_q_magnitude(audio)
        features = [
            mfcc(power),
            gfcc(power, self.filterbank),
            cqt_db(magnitude),
            chroma(magnitude),
            rms_db(audio)[:, None],
        ]
        return np.concatenate(features, axis=1).astype(np.float32)
