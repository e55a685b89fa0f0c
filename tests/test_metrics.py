"""Tests for :mod:`featbank.learning.metrics`: challenge correlations, the 4-parameter logistic and input checks.

Expected values come from scipy/numpy computed independently in the test, from invariances the
metrics must have (rank metrics ignore monotone maps), from noiseless curves with known parameters,
and, on real data, from numbers published by the DOVER and THQA-NTIRE authors.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featbank.learning.metrics import (
    METRICS,
    fit_logistic4,
    krcc,
    logistic4,
    main_score,
    plcc,
    plcc_logistic4,
    plcc_poly3,
    rmse,
    score,
    selection_score,
    srcc,
)

SCALAR_METRICS = (srcc, krcc, plcc, plcc_poly3, plcc_logistic4, rmse, main_score)


def vqeg_logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4PL written out independently of the module under test."""
    return b2 + (b1 - b2) / (1.0 + np.exp(-(x - b3) / abs(b4)))


def noisy_pair(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MOS on a 1-5 scale and predictions linearly related to it with noise."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(1, 5, n)
    return y, 0.8 * y + rng.normal(0, 0.6, n)


def sigmoidal_pair(n: int = 300, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Predictions whose relation to MOS is a clear S-curve plus a little noise."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-4, 4, n)
    y = vqeg_logistic(p, 4.5, 1.0, 0.3, 0.6) + rng.normal(0, 0.05, n)
    return y, p


# ---------------------------------------------------------------- agreement with scipy


def test_rank_and_linear_correlations_match_scipy() -> None:
    y, p = noisy_pair()
    assert srcc(y, p) == pytest.approx(stats.spearmanr(y, p).statistic, abs=1e-12)
    assert krcc(y, p) == pytest.approx(stats.kendalltau(y, p).statistic, abs=1e-12)
    assert plcc(y, p) == pytest.approx(stats.pearsonr(y, p).statistic, abs=1e-12)


def test_ties_are_handled_like_scipy() -> None:
    y, p = noisy_pair(seed=3)
    y, p = np.round(y), np.round(p)  # many ties in both
    assert srcc(y, p) == pytest.approx(stats.spearmanr(y, p).statistic, abs=1e-12)
    assert krcc(y, p) == pytest.approx(stats.kendalltau(y, p, variant="b").statistic, abs=1e-12)


def test_lists_and_column_vectors_are_accepted() -> None:
    y, p = noisy_pair(n=30)
    expected = score(y, p)
    assert score(list(y), list(p)) == pytest.approx(expected)
    assert score(y[:, None], p[:, None]) == pytest.approx(expected)


# ---------------------------------------------------------------- invariances


@pytest.mark.parametrize(
    "transform",
    [np.exp, lambda x: x**3, np.arctan, lambda x: 100 * x - 7],
    ids=["exp", "cube", "arctan", "affine"],
)
def test_rank_metrics_unchanged_by_increasing_transform(transform) -> None:
    y, p = noisy_pair()
    assert srcc(y, transform(p)) == pytest.approx(srcc(y, p), abs=1e-12)
    assert krcc(y, transform(p)) == pytest.approx(krcc(y, p), abs=1e-12)


def test_reversing_predictions_flips_rank_sign_but_not_main_score() -> None:
    y, p = noisy_pair()
    assert srcc(y, -p) == pytest.approx(-srcc(y, p), abs=1e-12)
    assert krcc(y, -p) == pytest.approx(-krcc(y, p), abs=1e-12)
    # The logistic absorbs the reversal, and main_score takes absolute values.
    assert plcc_logistic4(y, -p) == pytest.approx(plcc_logistic4(y, p), abs=1e-6)
    assert main_score(y, -p) == pytest.approx(main_score(y, p), abs=1e-6)


def test_plcc_unchanged_by_affine_rescaling_of_either_side() -> None:
    y, p = noisy_pair()
    assert plcc(3 * y + 2, 0.01 * p - 5) == pytest.approx(plcc(y, p), abs=1e-12)


def test_logistic_metrics_do_not_depend_on_prediction_scale() -> None:
    # The fit runs on standardised predictions, so logits and 0-100 scores must score alike.
    y, p = sigmoidal_pair()
    assert plcc_logistic4(y, 1e4 * p + 3e5) == pytest.approx(plcc_logistic4(y, p), abs=1e-6)
    assert rmse(y, 1e-3 * p) == pytest.approx(rmse(y, p), rel=1e-5)


def test_rmse_is_in_mos_units() -> None:
    y, p = sigmoidal_pair()
    assert rmse(20 * y, p) == pytest.approx(20 * rmse(y, p), rel=1e-5)


# ---------------------------------------------------------------- logistic mapping


def test_logistic4_is_the_vqeg_formula() -> None:
    x = np.linspace(-5, 5, 41)
    for params in ([5.0, 1.0, 0.5, 0.8], [1.0, 5.0, -1.0, 2.0], [3.0, 0.0, 0.0, -0.7]):
        np.testing.assert_allclose(logistic4(x, params), vqeg_logistic(x, *params), rtol=1e-12)


def test_logistic4_saturates_without_overflow() -> None:
    with np.errstate(all="raise"):
        far = logistic4(np.array([-1e6, 1e6]), [5.0, 1.0, 0.0, 1e-3])
    np.testing.assert_allclose(far, [1.0, 5.0])


@pytest.mark.parametrize(
    "scale, shift", [(1.0, 0.0), (100.0, 37.0), (1e-3, -2.0)], ids=["unit", "0-100", "tiny"]
)
def test_fit_logistic4_recovers_true_curve_from_noiseless_data(scale: float, shift: float) -> None:
    true = np.array([4.6, 1.2, 0.4, 0.7])
    x = np.linspace(-3, 3, 80)
    y = vqeg_logistic(x, *true)
    p = scale * x + shift  # the same curve seen in other prediction units
    fitted = fit_logistic4(p, y)
    expected = np.array([true[0], true[1], scale * true[2] + shift, scale * true[3]])
    np.testing.assert_allclose(fitted, expected, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(logistic4(p, fitted), y, atol=1e-6)


def test_fit_logistic4_handles_decreasing_relation() -> None:
    x = np.linspace(-3, 3, 80)
    y = vqeg_logistic(x, 4.6, 1.2, 0.4, 0.7)
    fitted = fit_logistic4(-x, y)  # predictions anti-correlated with MOS
    np.testing.assert_allclose(logistic4(-x, fitted), y, atol=1e-6)
    assert fitted[0] < fitted[1]  # upper plateau is reached for low predictions


def test_fit_logistic4_of_constant_predictions_maps_to_mean_mos() -> None:
    y, _ = noisy_pair(n=20)
    mapped = logistic4(np.full(20, 3.0), fit_logistic4(np.full(20, 3.0), y))
    np.testing.assert_allclose(mapped, np.mean(y))


def test_failed_logistic_fit_falls_back_to_least_squares_line(monkeypatch) -> None:
    y, p = noisy_pair(n=50)

    def failing_curve_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr("scipy.optimize.curve_fit", failing_curve_fit)
    with pytest.warns(RuntimeWarning, match="linear mapping"):
        params = fit_logistic4(p, y)
    line = np.polyval(np.polyfit(p, y, 1), p)
    np.testing.assert_allclose(logistic4(p, params), line, rtol=1e-7, atol=1e-7)
    # The fallback is a line, so PLCC after it is the raw PLCC.
    with pytest.warns(RuntimeWarning):
        assert plcc_logistic4(y, p) == pytest.approx(plcc(y, p), abs=1e-9)


def test_plcc_after_logistic_beats_raw_plcc_on_sigmoidal_relation() -> None:
    y, p = sigmoidal_pair()
    raw, mapped = plcc(y, p), plcc_logistic4(y, p)
    assert mapped > raw + 0.02
    assert mapped > 0.99  # the S-curve is exactly what the logistic models


def test_plcc_logistic_is_pearson_against_independently_fitted_curve() -> None:
    from scipy.optimize import curve_fit

    y, p = sigmoidal_pair(seed=5)
    params, _ = curve_fit(vqeg_logistic, p, y, p0=[y.max(), y.min(), p.mean(), 0.5], maxfev=20_000)
    expected = stats.pearsonr(y, vqeg_logistic(p, *params)).statistic
    assert plcc_logistic4(y, p) == pytest.approx(expected, abs=1e-6)


def test_rmse_is_zero_for_exact_logistic_relation() -> None:
    p = np.linspace(-2, 2, 50)
    assert rmse(vqeg_logistic(p, 90.0, 10.0, 0.2, 0.5), p) < 1e-5


def test_rmse_of_constant_prediction_is_std_of_mos() -> None:
    y, _ = noisy_pair(n=40)
    assert rmse(y, np.zeros(40)) == pytest.approx(np.std(y), rel=1e-12)


# ---------------------------------------------------------------- cubic mapping


def test_plcc_poly3_is_pearson_after_raw_cubic_least_squares() -> None:
    y, p = sigmoidal_pair(seed=2)
    expected = stats.pearsonr(y, np.polyval(np.polyfit(p, y, 3), p)).statistic
    assert plcc_poly3(y, p) == pytest.approx(expected, abs=1e-10)


def test_plcc_poly3_is_one_on_exact_cubic_relation() -> None:
    p = np.linspace(-2, 2, 30)
    assert plcc_poly3(p**3 + p + 1, p) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- main score and score()


def test_main_score_is_mean_of_abs_srcc_and_plcc_after_logistic() -> None:
    y, p = noisy_pair(seed=7)
    expected = (abs(stats.spearmanr(y, p).statistic) + abs(plcc_logistic4(y, p))) / 2
    assert main_score(y, p) == pytest.approx(expected, abs=1e-12)


def test_score_returns_every_metric_consistent_with_single_functions() -> None:
    y, p = sigmoidal_pair(seed=4)
    result = score(y, p)
    assert tuple(result) == METRICS
    singles = {"srcc": srcc, "krcc": krcc, "plcc": plcc, "plcc_poly3": plcc_poly3,
               "plcc_logistic": plcc_logistic4, "rmse": rmse, "main_score": main_score,
               "selection": selection_score}  # fmt: skip
    assert set(singles) == set(METRICS)
    for name, function in singles.items():
        assert result[name] == pytest.approx(function(y, p), abs=1e-12), name


def test_constant_prediction_scores_zero_correlation() -> None:
    y, _ = noisy_pair(n=25)
    result = score(y, np.full(25, 2.5))
    for name in ("srcc", "krcc", "plcc", "plcc_poly3", "plcc_logistic", "main_score"):
        assert result[name] == 0.0, name


# ---------------------------------------------------------------- invalid inputs


@pytest.mark.parametrize("metric", SCALAR_METRICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "y, p, message",
    [
        ([1.0, 2.0, np.nan, 4.0, 5.0], [1, 2, 3, 4, 5], "y has 1 non-finite value"),
        ([1, 2, 3, 4, 5], [1.0, np.inf, 3.0, 4.0, 5.0], "p has 1 non-finite value"),
        ([1, 2, 3, 4, 5], [1, 2, 3, 4], "differ in length"),
        ([1, 2, 3], [1, 2, 3], "at least 4 samples"),
        ([3, 3, 3, 3, 3], [1, 2, 3, 4, 5], "constant"),
    ],
    ids=["nan-y", "inf-p", "mismatch", "short", "constant-y"],
)
def test_invalid_inputs_raise_value_error(metric, y, p, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric(y, p)


def test_fit_logistic4_and_score_validate_inputs_too() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        fit_logistic4([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="score, got 2"):
        score([1, 2], [1, 2])


# ---------------------------------------------------------------- real data, published numbers


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


@pytest.mark.realdata
@pytest.mark.parametrize(
    "csv, weight, published_srcc, published_plcc",
    [("dover_val-kv1k.csv", 0.540, 0.8828, 0.8835), ("dover_val-livevqc.csv", 0.598, 0.8318, 0.8540)],
    ids=["KoNViD-1k", "LIVE-VQC"],
)
def test_dover_fusion_reproduces_published_correlations(
    realdata: Path, csv: str, weight: float, published_srcc: float, published_plcc: float
) -> None:
    table = pd.read_csv(realdata / "VQAssessment+DOVER" / "DERIVED_csv" / csv)
    # Columns are video, mos, aesthetic, technical (the CSV names spell out the branch input too).
    aesthetic = next(c for c in table.columns if "aesthetic" in c)
    technical = next(c for c in table.columns if "technical" in c)
    fused = (1 - weight) * zscore(table[aesthetic].to_numpy()) + weight * zscore(table[technical].to_numpy())
    mos = table["mos"].to_numpy()
    assert srcc(mos, fused) == pytest.approx(published_srcc, abs=0.001)
    assert plcc(mos, fused) == pytest.approx(published_plcc, abs=0.001)


def _stem(name: str) -> str:
    """Video name without directories or extension: matches 'x.mp4', 'dir/x.mp4' and 'x'."""
    base = re.split(r"[\\/]", name.strip().strip("\"'"))[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def read_baseline_predictions(archive: Path) -> dict[str, float]:
    """``video stem -> prediction`` from the ``output.txt`` inside a challenge submission zip.

    Accepts comma, tab, semicolon or space separated ``name score`` lines, an optional header and
    ``output.txt`` in a sub-folder of the zip; lines whose last field is not a number are skipped.
    """
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == "output.txt"]
        if len(members) != 1:
            raise AssertionError(f"{archive} holds {len(members)} output.txt files: {zf.namelist()}")
        text = zf.read(members[0]).decode("utf-8-sig")
    predictions: dict[str, float] = {}
    for line in text.splitlines():
        fields = [f for f in re.split(r"[,\t; ]+", line.strip()) if f]
        if len(fields) < 2:
            continue
        try:
            value = float(fields[-1])
        except ValueError:
            continue  # header
        predictions[_stem(fields[0])] = value
    return predictions


@pytest.mark.parametrize(
    "layout",
    ["name.mp4,{v}", "name.mp4 {v}", "name\t{v}", "videos/name.mp4, {v}"],
    ids=["csv", "space", "tab-no-extension", "subdir-spaced-csv"],
)
def test_baseline_reader_parses_common_submission_layouts(tmp_path: Path, layout: str) -> None:
    lines = ["Video,Score"] + [layout.replace("name", f"clip_{i}").format(v=i / 4) for i in range(5)]
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("baseline/output.txt", "\r\n".join(lines) + "\r\n")
        zf.writestr("baseline/readme.txt", "method: test\n")
    assert read_baseline_predictions(archive) == {f"clip_{i}": i / 4 for i in range(5)}


@pytest.mark.realdata
def test_thqa_ntire_baseline_reproduces_published_score(realdata: Path) -> None:
    folder = realdata / "zyj-2000+THQA-NTIRE"
    archive = folder / "baseline_example.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} is not present (organisers' baseline predictions for the val set)")
    truth = pd.read_csv(folder / "thqa_ntire_val.csv")
    predicted = read_baseline_predictions(archive)
    stems = truth["Video"].map(_stem)
    missing = sorted(set(stems) - set(predicted))
    assert not missing, f"{len(missing)} val videos have no baseline prediction, e.g. {missing[:3]}"
    assert len(truth) == 1714
    y = truth["Score"].to_numpy(dtype=float)
    p = stems.map(predicted).to_numpy(dtype=float)
    result = score(y, p)
    # Published: Score 0.7892 = (SRCC 0.7702 + PLCC 0.8081) / 2, PLCC after the 4PL logistic.
    assert result["srcc"] == pytest.approx(0.7702, abs=0.0005)
    assert result["plcc_logistic"] == pytest.approx(0.8081, abs=0.0005)
    assert result["main_score"] == pytest.approx(0.7892, abs=0.0005)
