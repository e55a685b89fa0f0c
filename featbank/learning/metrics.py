"""Challenge scoring: the correlations VQA papers and NTIRE-style challenges report.

Predictions and MOS live on different scales, and a model may be monotone but not linear in MOS.
The community therefore reports rank correlations on raw predictions and Pearson correlations
after a monotone mapping fitted to the MOS: the VQEG 4-parameter logistic (VIDEVAL, most BVQA
papers) or a cubic polynomial (NTIRE organisers). Which variant a number used changes it by up to
a few thousandths, enough to reorder a leaderboard, so every variant is named explicitly here.

Every function takes ``(y, p)``: ground-truth MOS first, predictions second. Inputs must be
finite 1-d arrays of equal length with at least four samples (the logistic has four parameters);
anything else raises :class:`ValueError` instead of silently returning NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

# scipy.stats and scipy.optimize are imported where used: they take a second or more to import,
# and track definitions import this module just to name their scores (`featbank tracks`, `check`).

MIN_SAMPLES = 4
"""The logistic has four free parameters; fewer samples make every post-mapping metric meaningless."""

LOGISTIC_MAXFEV = 20_000


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``y`` and ``p`` as float64 vectors, or raise ValueError saying what is wrong."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} vs {p.size}")
    if y.size < MIN_SAMPLES:
        raise ValueError(f"need at least {MIN_SAMPLES} samples to score, got {y.size}")
    for name, values in (("y", y), ("p", p)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf), "
                f"first at index {int(np.flatnonzero(bad)[0])}"
            )
    if np.ptp(y) == 0:
        raise ValueError("y (MOS) is constant; correlations are undefined")
    return y, p


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r that scores a constant prediction as 0 (no information) rather than NaN."""
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.pearsonr(a, b).statistic)


def srcc(y: np.ndarray, p: np.ndarray) -> float:
    """Spearman rank correlation on raw predictions (invariant to any monotone mapping)."""
    from scipy import stats

    y, p = _check(y, p)
    return 0.0 if np.ptp(p) == 0 else float(stats.spearmanr(y, p).statistic)


def krcc(y: np.ndarray, p: np.ndarray) -> float:
    """Kendall tau-b on raw predictions."""
    from scipy import stats

    y, p = _check(y, p)
    return 0.0 if np.ptp(p) == 0 else float(stats.kendalltau(y, p).statistic)


def plcc(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson correlation on raw predictions (no mapping)."""
    y, p = _check(y, p)
    return _pearson(y, p)


def logistic4(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """VQEG 4-parameter logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``."""
    b1, b2, b3, b4 = params
    z = -(np.asarray(x, dtype=np.float64) - b3) / abs(b4)
    # Clip the exponent: far-out predictions saturate at b1/b2 instead of overflowing to inf.
    return b2 + (b1 - b2) / (1.0 + np.exp(np.clip(z, -700.0, 700.0)))


def _logistic4_z(z: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return logistic4(z, (b1, b2, b3, b4))


def _linear_as_logistic4(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares line p -> y written as a logistic used deep in its linear regime.

    Keeping the fallback in the same 4-parameter form means callers (and saved parameters) never
    branch on whether the fit succeeded. With ``|b4|`` = 1e4 x the prediction range the logistic
    deviates from the line by under 1e-9 relative over the data.
    """
    centre, spread = float(np.mean(p)), float(np.ptp(p))
    slope, intercept = np.polyfit(p - centre, y, 1)
    b4 = 1e4 * spread
    half_height = 2.0 * b4 * slope  # logistic slope at its centre is (b1 - b2) / (4 |b4|)
    return np.array([intercept + half_height, intercept - half_height, centre, b4])


def fit_logistic4(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fit the logistic mapping predictions ``p`` to MOS ``y``; returns ``[b1, b2, b3, b4]``.

    Note the argument order (``p`` first) follows ``curve_fit(f, x, y)``: the mapping goes p -> y.
    The fit runs on standardised predictions so the initial guess and step sizes are sensible
    whatever the prediction scale (raw network logits, 0-100 MOS, ...), then ``b3`` and ``b4`` are
    mapped back to prediction units. The initial guess is VIDEVAL's ``[max y, min y, mean p, 0.5]``
    (in standard units), with the plateaus swapped when p and y are anti-correlated so the
    optimiser starts on the right branch. If the fit does not converge or yields non-finite
    values, a linear mapping is used instead and a RuntimeWarning says so.
    """
    from scipy import optimize

    y, p = _check(y, p)
    mu, sd = float(np.mean(p)), float(np.std(p))
    if sd == 0:  # constant predictions: the best monotone map is the mean MOS
        return np.array([np.mean(y), np.mean(y), mu, 1.0])
    z = (p - mu) / sd
    hi, lo = float(np.max(y)), float(np.min(y))
    if _pearson(z, y) < 0:
        hi, lo = lo, hi
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (b1, b2, b3, b4), _ = optimize.curve_fit(
                _logistic4_z, z, y, p0=[hi, lo, 0.0, 0.5], maxfev=LOGISTIC_MAXFEV
            )
    except (RuntimeError, ValueError) as error:
        failure = str(error)
    else:
        params = np.array([b1, b2, mu + b3 * sd, abs(b4) * sd])
        if np.all(np.isfinite(params)) and params[3] > 0:
            return params
        failure = f"non-finite parameters {params}"
    warnings.warn(
        f"4-parameter logistic fit failed ({failure}); using a linear mapping instead",
        RuntimeWarning,
        stacklevel=2,
    )
    return _linear_as_logistic4(p, y)


def _mapped(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Predictions passed through the logistic fitted to ``y`` (inputs already checked)."""
    return logistic4(p, fit_logistic4(p, y))


def plcc_logistic4(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson correlation between MOS and the logistic-mapped predictions (VQEG / VIDEVAL)."""
    y, p = _check(y, p)
    return _pearson(y, _mapped(y, p))


def plcc_poly3(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson correlation after a least-squares cubic p -> y, as NTIRE organisers compute it.

    The cubic is unconstrained ("monotonic-ish"): on well-behaved predictions it is monotone over
    the data, but nothing enforces it, matching the organisers' scripts. It is fitted on
    standardised predictions for conditioning; the fitted curve is the same.
    """
    y, p = _check(y, p)
    sd = float(np.std(p))
    if sd == 0:
        return 0.0
    z = (p - np.mean(p)) / sd
    return _pearson(y, np.polyval(np.polyfit(z, y, 3), z))


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root-mean-square error in MOS units after the logistic mapping."""
    y, p = _check(y, p)
    return float(np.sqrt(np.mean((y - _mapped(y, p)) ** 2)))


def main_score(y: np.ndarray, p: np.ndarray) -> float:
    """Challenge score ``(|SRCC| + |PLCC after 4-parameter logistic|) / 2``.

    This variant reproduces the published THQA-NTIRE baseline (0.7892 = (0.7702 + 0.8081) / 2);
    raw PLCC would give 0.7884.
    """
    return _combine(srcc(y, p), plcc_logistic4(y, p))


def _combine(srcc_value: float, plcc_logistic_value: float) -> float:
    return (abs(srcc_value) + abs(plcc_logistic_value)) / 2.0


def main_score_poly3(y: np.ndarray, p: np.ndarray) -> float:
    """Official NTIRE score ``(|SRCC| + |PLCC after a cubic p -> MOS|) / 2``.

    The XGC 2025 (all three tracks) and AIGC 2024 (both tracks) reports name a third-order
    polynomial before PLCC; on the THQA-NTIRE baseline it gives 0.78922, the logistic variant
    (:func:`main_score`) 0.78918: both print as the published 0.7892.
    """
    return _combine(srcc(y, p), plcc_poly3(y, p))


def _signed(srcc_value: float, plcc_value: float) -> float:
    return float(np.sign(srcc_value)) * _combine(srcc_value, plcc_value)


def selection_score(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`main_score_poly3` carrying the sign of SRCC: negative when the model is inverted.

    Official scores take absolute values, so a perfectly inverted predictor scores like a perfect
    one. Choosing models, stacking weights and "best" must not be fooled by that: use this score,
    which ranks an inverted model below every informative one and a rank-uninformative one at 0.
    :func:`score` reports it as ``selection``.
    """
    return _signed(srcc(y, p), plcc_poly3(y, p))


def ranking_accuracy(p_first: np.ndarray, p_second: np.ndarray, first_better: np.ndarray) -> float:
    """Fraction of labelled pairs whose predicted order matches the label (KVQ's Rank1/Rank2).

    A pair is predicted "first better" when ``p_first >= p_second``: a predicted tie goes to the
    first item, exactly as the KVQ organisers' ``metric_score.py`` does (``1 if s1 >= s2 else 2``).
    """
    p_first = np.asarray(p_first, dtype=np.float64)
    p_second = np.asarray(p_second, dtype=np.float64)
    first_better = np.asarray(first_better, dtype=bool)
    if first_better.size == 0:
        raise ValueError("no labelled pairs to rank")
    return float(np.mean((p_first >= p_second) == first_better))


XGC_UGC_DIMENSIONS = ("color", "noise", "artifact", "blur", "temporal", "overall")
"""FineVD-GC's six labelled dimensions (NTIRE 2025 XGC report, Table 1)."""


def xgc_ugc(per_dimension: dict[str, float]) -> float:
    """XGC-UGC leaderboard score: the mean of the six per-dimension MainScores.

    The report does not print this rule; its Table 1 obeys it on every row to within 0.00005.
    """
    missing = [d for d in XGC_UGC_DIMENSIONS if d not in per_dimension]
    if missing:
        raise ValueError(f"xgc_ugc needs all six dimensions; missing {', '.join(missing)}")
    return float(np.mean([per_dimension[d] for d in XGC_UGC_DIMENSIONS]))


KVQ_WEIGHTS = {"srocc": 0.45, "plcc": 0.45, "rank1": 0.05, "rank2": 0.05}
"""KVQ Final Score weights (NTIRE 2024 short-form UGC report, Eq. 1; reproduces the 2025 table)."""


def kvq_final(srocc: float, plcc_value: float, rank1: float, rank2: float) -> float:
    """KVQ ``0.45·SROCC + 0.45·PLCC + 0.05·Rank1 + 0.05·Rank2`` from its four components.

    Signed correlations, as the organisers' script sums them: an inverted model scores low here.
    """
    parts = {"srocc": srocc, "plcc": plcc_value, "rank1": rank1, "rank2": rank2}
    return float(sum(KVQ_WEIGHTS[k] * v for k, v in parts.items()))


def score(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Every metric at once, fitting the logistic once; keys as in :data:`METRICS`."""
    y, p = _check(y, p)
    mapped = _mapped(y, p)
    result = {
        "srcc": srcc(y, p),
        "krcc": krcc(y, p),
        "plcc": _pearson(y, p),
        "plcc_poly3": plcc_poly3(y, p),
        "plcc_logistic": _pearson(y, mapped),
        "rmse": float(np.sqrt(np.mean((y - mapped) ** 2))),
    }
    result["main_score"] = _combine(result["srcc"], result["plcc_logistic"])
    result["selection"] = _signed(result["srcc"], result["plcc_poly3"])
    return result


METRICS: tuple[str, ...] = (
    "srcc",
    "krcc",
    "plcc",
    "plcc_poly3",
    "plcc_logistic",
    "rmse",
    "main_score",
    "selection",
)
"""Keys of :func:`score`, in report order."""
