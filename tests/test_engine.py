"""Tests for :mod:`featbank.learning.engine`: fold assignment, out-of-fold predictions, honest stacking, refits.

Out-of-fold predictions are recomputed by hand with :func:`regressors.make_learner` and the nested
stack by an independent re-implementation of its documented protocol, so a model that saw its
test fold would show up as a numerical mismatch. A pure-noise target checks end to end that the
stack gains nothing from labels it should not see. Data are tiny and learners cheap (ridge, SVR).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from featbank.learning.engine import evaluate
from featbank.learning.ensemble import FittedEnsemble, fit_final
from featbank.learning.protocols import KFoldProtocol, RandomSplitsProtocol, VidevalProtocol, fold_ids
from featbank.learning.results import STACK, Evaluation
from featbank.errors import FeatbankError
from featbank.learning.metrics import METRICS, main_score, score, srcc
from regressors import make_learner

N, K, REPEATS, SEED = 90, 4, 2, 11
PROTOCOL = KFoldProtocol(K, REPEATS, seed=SEED)
LEARNERS = ["ridge", "svr"]


def make_problem(n: int = N, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Block ``good`` drives the target (nonlinearly, with noise); block ``noise`` is unrelated."""
    rng = np.random.default_rng(seed)
    good = rng.normal(size=(n, 4))
    y = good[:, 0] + 0.7 * np.tanh(2 * good[:, 1]) + 0.3 * rng.normal(size=n)
    good[rng.random(good.shape) < 0.03] = np.nan  # pipelines impute inside each training part
    return {"good": good, "noise": rng.normal(size=(n, 4))}, y


@pytest.fixture(scope="module")
def problem() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return make_problem()


@pytest.fixture(scope="module")
def folds() -> np.ndarray:
    return fold_ids(N, K, REPEATS, seed=SEED)


@pytest.fixture(scope="module")
def result(problem) -> Evaluation:
    blocks, y = problem
    return evaluate(blocks, y, ["mos"], LEARNERS, PROTOCOL, stack=True, n_jobs=1)


def predictions(oof: pd.DataFrame, model: str, repeat: int = 0, target: str = "mos") -> np.ndarray:
    """One model's OOF predictions for one repeat (round) and target, in sample order."""
    part = oof[(oof["model"] == model) & (oof["round"] == repeat) & (oof["target"] == target)]
    return part.sort_values("sample")["y_pred"].to_numpy()


def fit_predict(block: np.ndarray, y: np.ndarray, train: np.ndarray, learner: str, seed: int) -> np.ndarray:
    return make_learner(learner, random_state=seed).fit(block[train], y[train]).predict(block[~train])


# ---------------------------------------------------------------- fold_ids


def test_fold_ids_shape_values_and_balance() -> None:
    ids = fold_ids(23, 5, 3, seed=0)
    assert ids.shape == (3, 23)
    for row in ids:
        counts = np.bincount(row, minlength=5)
        assert set(row.tolist()) == set(range(5))
        assert counts.max() - counts.min() <= 1  # 23 = 5 + 5 + 5 + 4 + 4


def test_fold_ids_are_deterministic_and_repeats_differ() -> None:
    ids = fold_ids(60, 4, 3, seed=7)
    np.testing.assert_array_equal(ids, fold_ids(60, 4, 3, seed=7))
    assert not np.array_equal(ids[0], ids[1]) and not np.array_equal(ids[1], ids[2])
    assert not np.array_equal(ids, fold_ids(60, 4, 3, seed=8))


def test_repeat_r_is_shuffled_with_seed_plus_r() -> None:
    ids = fold_ids(40, 4, 3, seed=5)
    for r in range(3):
        np.testing.assert_array_equal(ids[r], fold_ids(40, 4, 1, seed=5 + r)[0])


def test_grouped_folds_never_split_a_group() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 15, size=80)  # uneven group sizes
    ids = fold_ids(80, 5, 4, seed=2, groups=groups)
    for row in ids:
        assert set(row.tolist()) == set(range(5))
        for group in np.unique(groups):
            assert len(set(row[groups == group].tolist())) == 1
    assert not np.array_equal(ids[0], ids[1])  # grouped repeats are reshuffled too


def test_grouped_folds_accept_string_groups() -> None:
    groups = np.array([f"source{i % 6}" for i in range(30)])
    ids = fold_ids(30, 3, 1, seed=0, groups=groups)[0]
    for group in np.unique(groups):
        assert len(set(ids[groups == group].tolist())) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 10, "n_splits": 1, "repeats": 1}, "n_splits must be at least 2"),
        ({"n": 10, "n_splits": 3, "repeats": 0}, "repeats must be at least 1"),
        ({"n": 4, "n_splits": 5, "repeats": 1}, "cannot make 5 folds from 4 samples"),
        ({"n": 6, "n_splits": 4, "repeats": 1, "groups": np.array([0, 0, 1, 1, 2, 2])},
         "cannot make 4 grouped folds from 3 groups"),
        ({"n": 6, "n_splits": 2, "repeats": 1, "groups": np.array([0, 1, 2])}, "one entry per sample"),
    ],
    ids=["one-split", "no-repeats", "too-many-folds", "too-few-groups", "groups-shape"],
)
def test_fold_ids_reject_impossible_requests(kwargs, message: str) -> None:
    with pytest.raises(FeatbankError, match=message):
        fold_ids(seed=0, **kwargs)


# ---------------------------------------------------------------- out-of-fold predictions


def test_oof_has_one_row_per_repeat_target_model_sample(result, problem, folds) -> None:
    _, y = problem
    bases = ["good/ridge", "good/svr", "noise/ridge", "noise/svr"]
    assert set(result.predictions["model"]) == set(bases) | {STACK}
    assert len(result.predictions) == REPEATS * 1 * (len(bases) + 1) * N
    keys = ["round", "target", "model", "sample"]
    assert not result.predictions.duplicated(keys).any()
    for (repeat, _, _), part in result.predictions.groupby(["round", "target", "model"]):
        part = part.sort_values("sample")
        np.testing.assert_array_equal(part["sample"], np.arange(N))
        np.testing.assert_array_equal(part["fold"], folds[repeat])
        np.testing.assert_array_equal(part["y_true"], y)
        assert np.all(np.isfinite(part["y_pred"]))


@pytest.mark.parametrize("base", ["good/ridge", "good/svr", "noise/svr"])
def test_base_oof_equals_fit_without_the_fold_by_hand(result, problem, folds, base: str) -> None:
    blocks, y = problem
    block, learner = base.split("/")
    for repeat in range(REPEATS):
        expected = np.empty(N)
        for f in range(K):
            test = folds[repeat] == f
            expected[test] = fit_predict(blocks[block], y, ~test, learner, seed=SEED + repeat)
        np.testing.assert_allclose(predictions(result.predictions, base, repeat), expected, rtol=1e-9, atol=1e-12)


def test_stack_oof_equals_independent_nested_recomputation(result, problem, folds) -> None:
    """For test fold f: meta trained on folds g != f, each predicted by bases fitted without {f, g}."""
    blocks, y = problem
    bases = [f"{b}/{l}" for b in blocks for l in LEARNERS]
    repeat = 1
    fold_of = folds[repeat]
    outer = np.column_stack([predictions(result.predictions, b, repeat) for b in bases])
    expected = np.empty(N)
    for f in range(K):
        test = fold_of == f
        level1 = np.full((N, len(bases)), np.nan)
        for g in set(range(K)) - {f}:
            inner = fold_of == g
            train = ~(test | inner)
            for j, base in enumerate(bases):
                block, learner = base.split("/")
                level1[inner, j] = make_learner(learner, random_state=SEED + repeat).fit(
                    blocks[block][train], y[train]).predict(blocks[block][inner])
        meta = LinearRegression(positive=True).fit(level1[~test], y[~test])
        expected[test] = meta.predict(outer[test])
    np.testing.assert_allclose(predictions(result.predictions, STACK, repeat), expected, rtol=1e-9, atol=1e-12)


def test_oof_stack_mode_blends_the_outer_predictions_with_k_fits_per_base(result, problem, folds) -> None:
    """stack_mode="oof": for test fold f, meta trained on the other folds' outer OOF predictions; no pair fits."""
    blocks, y = problem
    calls: list[tuple[int, int]] = []
    cheap = evaluate(blocks, y, ["mos"], LEARNERS, PROTOCOL, stack=True, stack_mode="oof", n_jobs=1,
                     progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][1] == REPEATS * len(blocks) * len(LEARNERS) * K
    bases = [f"{b}/{l}" for b in blocks for l in LEARNERS]
    for repeat in range(REPEATS):
        outer = np.column_stack([predictions(result.predictions, b, repeat) for b in bases])
        np.testing.assert_allclose(np.column_stack([predictions(cheap.predictions, b, repeat) for b in bases]), outer)
        expected = np.empty(N)
        for f in range(K):
            test = folds[repeat] == f
            expected[test] = LinearRegression(positive=True).fit(outer[~test], y[~test]).predict(outer[test])
        np.testing.assert_allclose(predictions(cheap.predictions, STACK, repeat), expected, rtol=1e-9, atol=1e-12)
    assert "oof" in cheap.describe()


def test_ring_stack_mode_trains_each_meta_learner_on_its_two_neighbour_folds_by_hand(result, problem, folds) -> None:
    """stack_mode="ring": for test fold f, level-1 predictions of folds f-1 and f+1 (cyclic) from models
    fitted without {f, f-1} and {f, f+1}; k pair fits per base instead of k(k-1)/2."""
    blocks, y = problem
    calls: list[tuple[int, int]] = []
    ring = evaluate(blocks, y, ["mos"], LEARNERS, PROTOCOL, stack=True, stack_mode="ring", n_jobs=1,
                    progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][1] == REPEATS * len(blocks) * len(LEARNERS) * 2 * K  # K outer + K pair fits
    bases = [f"{b}/{l}" for b in blocks for l in LEARNERS]
    for repeat in range(REPEATS):
        outer = np.column_stack([predictions(result.predictions, b, repeat) for b in bases])
        expected = np.empty(N)
        for f in range(K):
            test = folds[repeat] == f
            neighbours = [(f - 1) % K, (f + 1) % K]
            level1 = np.full_like(outer, np.nan)
            for g in neighbours:
                inner = folds[repeat] == g
                for j, base in enumerate(bases):
                    block, learner = base.split("/")
                    level1[inner, j] = make_learner(learner, random_state=SEED + repeat).fit(
                        blocks[block][~(test | inner)], y[~(test | inner)]).predict(blocks[block][inner])
            rows = np.isin(folds[repeat], neighbours)
            expected[test] = LinearRegression(positive=True).fit(level1[rows], y[rows]).predict(outer[test])
        np.testing.assert_allclose(predictions(ring.predictions, STACK, repeat), expected, rtol=1e-9, atol=1e-12)
    assert "ring" in ring.describe()


def test_ring_with_three_folds_is_the_nested_stack(problem) -> None:
    blocks, y = problem
    three = KFoldProtocol(3, 1, seed=SEED)
    nested = evaluate(blocks, y, ["mos"], LEARNERS, three, stack=True, n_jobs=1)
    ring = evaluate(blocks, y, ["mos"], LEARNERS, three, stack=True, stack_mode="ring", n_jobs=1)
    pd.testing.assert_frame_equal(ring.predictions, nested.predictions)


def test_scores_table_recomputes_from_oof(result) -> None:
    assert len(result.scores) == REPEATS * 5
    for row in result.scores.itertuples():
        part = result.predictions[(result.predictions["round"] == row.round) & (result.predictions["model"] == row.model)]
        expected = score(part["y_true"].to_numpy(), part["y_pred"].to_numpy())
        for metric in METRICS:
            assert getattr(row, metric) == pytest.approx(expected[metric], abs=1e-12)


def test_informative_block_beats_noise_block(result) -> None:
    medians = result.scores.groupby("model")["main_score"].median()
    assert medians["good/ridge"] > 0.8 and medians["good/svr"] > 0.8
    assert medians["noise/ridge"] < 0.4 and medians["noise/svr"] < 0.4


def test_stack_weights_favour_informative_block(result) -> None:
    weights, _ = result.mean_stack_weights("mos")
    assert set(weights) == {"good/ridge", "good/svr", "noise/ridge", "noise/svr"}
    assert all(w >= 0 for w in weights.values())  # non-negative meta-learner
    good = weights["good/ridge"] + weights["good/svr"]
    noise = weights["noise/ridge"] + weights["noise/svr"]
    assert good > 0.7 and good > 2 * noise


def test_stack_weights_of_a_pooled_round_are_the_meta_fit_on_its_full_oof(result, problem) -> None:
    _, y = problem
    bases = result.bases
    for r in range(REPEATS):
        meta = LinearRegression(positive=True).fit(
            np.column_stack([predictions(result.predictions, b, r) for b in bases]), y)
        row = result.stack_weights[result.stack_weights["round"] == r].iloc[0]
        np.testing.assert_allclose(row[bases].to_numpy(float), meta.coef_, atol=1e-10)
        assert row["intercept"] == pytest.approx(meta.intercept_, abs=1e-10)


def test_honest_stack_is_not_implausibly_better_than_best_base(result) -> None:
    medians = result.scores.groupby("model")["main_score"].median()
    best_base = medians.drop(STACK).max()
    assert medians[STACK] <= best_base + 0.03
    assert medians[STACK] > best_base - 0.1  # and it still works


def test_stack_on_pure_noise_target_learns_nothing() -> None:
    """Leak check: with labels unrelated to every feature, honest OOF SRCC must stay near zero.

    The positive control fits the meta-learner on the full OOF matrix and scores it on the same
    rows (what a leaky stack would report); it must come out above the honest stack.
    """
    n = 300
    rng = np.random.default_rng(0)
    y = rng.normal(size=n)
    blocks = {f"noise{i}": rng.normal(size=(n, 3)) for i in range(5)}
    result = evaluate(blocks, y, ["mos"], LEARNERS, KFoldProtocol(4, 1, seed=0), n_jobs=1)
    honest = srcc(y, predictions(result.predictions, STACK))
    assert abs(honest) < 0.3
    weights, intercept = result.mean_stack_weights("mos")
    in_sample = intercept + sum(w * predictions(result.predictions, b) for b, w in weights.items())
    assert srcc(y, in_sample) > honest


def test_summary_is_median_and_population_std_over_rounds_best_signed_first(result) -> None:
    summary = result.summary()
    assert list(summary["selection_median"]) == sorted(summary["selection_median"], reverse=True)
    grouped = result.scores.groupby("model")
    for row in summary.itertuples():
        assert row.main_score_median == pytest.approx(grouped["main_score"].median()[row.model])
        assert row.srcc_std == pytest.approx(grouped["srcc"].std(ddof=0)[row.model])
        assert row.rounds == REPEATS
    assert {f"{m}_{s}" for m in METRICS for s in ("median", "std")} <= set(summary.columns)


def test_without_stacking_only_bases_and_two_folds_suffice(problem) -> None:
    blocks, y = problem
    result = evaluate(blocks, y, ["mos"], ["ridge"], KFoldProtocol(2, 1, seed=0), stack=False, n_jobs=1)
    assert set(result.predictions["model"]) == {"good/ridge", "noise/ridge"}
    assert result.stack_weights.empty


def test_multi_target_runs_each_target_independently(problem, folds) -> None:
    blocks, y = problem
    second = -2.0 * y + 10  # a reversed, rescaled second label
    one = KFoldProtocol(K, 1, seed=SEED)
    both = evaluate(blocks, np.column_stack([y, second]), ["a", "b"], ["ridge"], one, n_jobs=1)
    alone = evaluate(blocks, second, ["b"], ["ridge"], one, n_jobs=1)
    assert set(both.predictions["target"]) == {"a", "b"}
    for model in ["good/ridge", "noise/ridge", STACK]:
        np.testing.assert_allclose(predictions(both.predictions, model, target="b"),
                                   predictions(alone.predictions, model, target="b"), rtol=1e-12)  # fmt: skip
    # ridge is affine-equivariant in y, so the second target's base OOF is the first's, mapped.
    np.testing.assert_allclose(predictions(both.predictions, "good/ridge", target="b"),
                               -2.0 * predictions(both.predictions, "good/ridge", target="a") + 10, rtol=1e-6)  # fmt: skip
    assert set(both.stack_weights["target"]) == {"a", "b"}


def test_progress_counts_every_fit(problem, folds) -> None:
    blocks, y = problem
    calls: list[tuple[int, int]] = []
    evaluate(blocks, y, ["mos"], ["ridge"], PROTOCOL, n_jobs=1, progress=lambda d, t: calls.append((d, t)))
    expected_total = REPEATS * 1 * 2 * (K + K * (K - 1) // 2)  # single-fold plus pair exclusions
    assert calls == [(done, expected_total) for done in range(1, expected_total + 1)]


def test_parallel_workers_reproduce_serial_results(problem) -> None:
    blocks, y = problem
    three = KFoldProtocol(3, 1, seed=3)
    serial = evaluate(blocks, y, ["mos"], ["lightgbm"], three, stack=False, n_jobs=1)
    parallel = evaluate(blocks, y, ["mos"], ["lightgbm"], three, stack=False, n_jobs=2)
    pd.testing.assert_frame_equal(serial.predictions, parallel.predictions)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b, y, f: (b, y, f, ["ridge", "xgboost"]), "unknown learner 'xgboost'"),
        (lambda b, y, f: ({"a/b": b["good"]}, y, f, ["ridge"]), "must not contain '/'"),
        (lambda b, y, f: (b, np.where(np.arange(N) == 3, np.nan, y), f, ["ridge"]), "non-finite target"),
        (lambda b, y, f: ({"good": b["good"][:-1]}, y, f, ["ridge"]), "must have shape"),
        (lambda b, y, f: (b, y, KFoldProtocol(2, 1), ["ridge"]), "stacking needs at least 3 folds"),
        (lambda b, y, f: ({}, y, f, ["ridge"]), "no feature blocks"),
    ],
    ids=["unknown-learner", "slash-in-block", "nan-target", "row-mismatch", "two-folds-stacked", "no-blocks"],
)
def test_evaluate_rejects_bad_inputs(problem, change, message: str) -> None:
    blocks, y, protocol, learners = change(*problem, PROTOCOL)
    with pytest.raises(FeatbankError, match=message):
        evaluate(blocks, y, ["mos"], learners, protocol, n_jobs=1)


# ---------------------------------------------------------------- final fit and persistence


@pytest.fixture(scope="module")
def stacked(problem, result) -> FittedEnsemble:
    blocks, y = problem
    return fit_final(blocks, y, ["mos"], LEARNERS, result, stack=True, n_jobs=1)


def test_fit_final_stack_blends_full_refits_with_repeat_averaged_weights(stacked, problem, result) -> None:
    blocks, y = problem
    bases = result.bases
    metas = [LinearRegression(positive=True).fit(np.column_stack([predictions(result.predictions, b, r) for b in bases]), y)
             for r in range(REPEATS)]  # fmt: skip
    weights = np.mean([m.coef_ for m in metas], axis=0)
    intercept = np.mean([m.intercept_ for m in metas])
    np.testing.assert_allclose([stacked.weights["mos"][b] for b in bases], weights, atol=1e-10)
    assert set(stacked.models["mos"]) == {b for b, w in zip(bases, weights, strict=True) if w > 0}
    expected = np.full(N, intercept)
    for base, weight in zip(bases, weights, strict=True):
        if weight > 0:
            block, learner = base.split("/")
            refit = make_learner(learner, random_state=0).fit(blocks[block], y)
            expected += weight * refit.predict(blocks[block])
    np.testing.assert_allclose(stacked.predict(blocks)["mos"], expected, rtol=1e-9, atol=1e-9)


def test_fit_final_without_stack_picks_best_base_by_median_signed_score(problem, result) -> None:
    blocks, y = problem
    ensemble = fit_final(blocks, y, ["mos"], LEARNERS, result, stack=False, n_jobs=1)
    bases = result.scores[result.scores["model"] != STACK]
    medians = bases.groupby("model")["selection"].median()
    best = medians.idxmax()
    assert ensemble.chosen == {"mos": best}
    assert list(ensemble.models["mos"]) == [best]
    block, learner = best.split("/")
    expected = make_learner(learner, random_state=0).fit(blocks[block], y).predict(blocks[block])
    np.testing.assert_allclose(ensemble.predict(blocks)["mos"], expected, rtol=1e-12)


def test_fit_final_needs_cv_predictions_for_every_base(problem, result) -> None:
    blocks, y = problem
    with pytest.raises(FeatbankError, match="no predictions for"):
        fit_final(blocks, y, ["mos"], ["ridge", "elasticnet"], result, n_jobs=1)


@pytest.mark.parametrize("stack", [True, False], ids=["stacked", "single"])
def test_ensemble_save_load_predicts_identically(problem, result, tmp_path: Path, stack: bool) -> None:
    blocks, y = problem
    ensemble = fit_final(blocks, y, ["mos"], LEARNERS, result, stack=stack, n_jobs=1)
    ensemble.save(tmp_path / "model")
    description = json.loads((tmp_path / "model" / "ensemble.json").read_text())
    assert description["blocks"] == {"good": 4, "noise": 4}
    loaded = FittedEnsemble.load(tmp_path / "model")
    assert loaded.chosen == ensemble.chosen and loaded.weights == ensemble.weights
    new = {name: np.random.default_rng(1).normal(size=(7, 4)) for name in blocks}
    pd.testing.assert_frame_equal(loaded.predict(new), ensemble.predict(new), check_exact=True)


def test_ensemble_files_stay_distinct_when_base_names_sanitise_alike(tmp_path: Path) -> None:
    # "feat@1" and "feat_1" both become "feat_1" in a file name; neither model may overwrite the other.
    rng = np.random.default_rng(0)
    blocks = {"feat@1": rng.normal(size=(40, 2)), "feat_1": rng.normal(size=(40, 2))}
    y = blocks["feat@1"][:, 0] - 2 * blocks["feat_1"][:, 1]
    models = {f"{name}/ridge": make_learner("ridge").fit(X, y) for name, X in blocks.items()}
    ensemble = FittedEnsemble(
        targets=["mos"], learners=["ridge"], block_dims={"feat@1": 2, "feat_1": 2}, stacked=True,
        chosen={"mos": STACK}, models={"mos": models}, weights={"mos": {b: 0.5 for b in models}},
        intercepts={"mos": 0.1},
    )  # fmt: skip
    ensemble.save(tmp_path)
    assert len(list(tmp_path.glob("*.skops"))) == 2
    pd.testing.assert_frame_equal(FittedEnsemble.load(tmp_path).predict(blocks), ensemble.predict(blocks))


def test_load_without_description_is_a_featbank_error(tmp_path: Path) -> None:
    with pytest.raises(FeatbankError, match="ensemble.json missing"):
        FittedEnsemble.load(tmp_path)


@pytest.mark.parametrize(
    "blocks, message",
    [
        ({"good": np.zeros((5, 4))}, "needs feature block 'noise'"),
        ({"good": np.zeros((5, 4)), "noise": np.zeros((5, 3))}, r"block 'noise' must have shape \(n, 4\)"),
        ({"good": np.zeros((5, 4)), "noise": np.zeros(4)}, "must have shape"),
        ({"good": np.zeros((5, 4)), "noise": np.zeros((6, 4))}, "disagree on the number of samples"),
    ],
    ids=["missing-block", "wrong-width", "one-dimensional", "row-mismatch"],
)
def test_predict_rejects_missing_or_misshapen_blocks(stacked, blocks, message: str) -> None:
    with pytest.raises(FeatbankError, match=message):
        stacked.predict(blocks)


def test_predict_ignores_extra_blocks(stacked, problem) -> None:
    blocks, _ = problem
    extra = {**blocks, "unused": np.zeros((N, 9))}
    pd.testing.assert_frame_equal(stacked.predict(extra), stacked.predict(blocks))


def test_in_sample_main_score_of_final_stack_is_high(stacked, problem) -> None:
    # A sanity check on the refit, not a CV estimate: it should fit what CV said it could.
    blocks, y = problem
    assert main_score(y, stacked.predict(blocks)["mos"].to_numpy()) > 0.85



# ---------------------------------------------------------------- held-out rounds


@pytest.mark.parametrize("mode", ["nested", "ring"])
def test_held_out_stack_equals_independent_recomputation(problem, mode: str) -> None:
    """Held-out round: bases fit on the training part (in its order); the meta-learner on inner-fold OOF
    (with ``ring``, of the first two inner folds only)."""
    blocks, y = problem
    protocol = VidevalProtocol(2)
    result = evaluate(blocks, y, ["mos"], ["ridge"], protocol, stack=True, n_jobs=1, stack_mode=mode)
    bases = result.bases
    for r, rnd in enumerate(protocol.rounds(N)):
        train, test = rnd.rows((0,), inside=False), rnd.rows((0,), inside=True)
        inner = rnd.folds[rnd.folds > 0]
        outer = np.column_stack([
            make_learner("ridge", random_state=rnd.seed).fit(blocks[b.split("/")[0]][train], y[train])
            .predict(blocks[b.split("/")[0]][test]) for b in bases])
        level1 = np.empty((len(train), len(bases)))
        partners = np.unique(inner) if mode == "nested" else np.unique(inner)[:2]
        assert len(np.unique(inner)) > 2  # so that ring differs
        for g in partners:
            held = inner == g
            for j, base in enumerate(bases):
                X = blocks[base.split("/")[0]][train]
                level1[held, j] = make_learner("ridge", random_state=rnd.seed).fit(
                    X[~held], y[train][~held]).predict(X[held])
        used = np.isin(inner, partners)
        expected = LinearRegression(positive=True).fit(level1[used], y[train][used]).predict(outer)
        got = result.predictions[(result.predictions["round"] == r) & (result.predictions["model"] == STACK)]
        np.testing.assert_array_equal(got["sample"], test)
        np.testing.assert_allclose(got["y_pred"], expected, rtol=1e-9, atol=1e-12)


def test_held_out_rounds_need_two_inner_folds_to_stack() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 2)), rng.normal(size=12)
    one_group_trains = np.repeat(["a", "b"], 6)
    with pytest.raises(FeatbankError, match="inner folds a stack needs"):
        evaluate({"x": X}, y, ["mos"], ["ridge"], RandomSplitsProtocol(1, 0.5, seed=0), groups=one_group_trains)


def test_summary_flags_inverted_models_and_ranks_them_by_signed_score(problem) -> None:
    blocks, y = problem
    result = evaluate(blocks, y, ["mos"], ["ridge"], KFoldProtocol(3, 1, seed=0), stack=False, n_jobs=1)
    flipped = result.scores.copy()
    flipped.loc[flipped["model"] == "good/ridge", ["srcc", "selection"]] *= -1  # as if it had learnt the sign wrong
    result.scores = flipped
    summary = result.summary()
    assert list(summary["model"]) == ["noise/ridge", "good/ridge"]  # higher |main score|, but inverted
    assert summary.set_index("model").loc["good/ridge", "inverted"]
    assert result.best_base("mos") == "noise/ridge"


@pytest.mark.parametrize("n, protocol, stack, message", [
    (5, KFoldProtocol(3, 1, seed=0), True, "a fit would train on only 1 sample.*ridge need at least 3"),
    (12, VidevalProtocol(1), False, "round 0 scores 3 sample"),
], ids=["five-rows-stacked", "tiny-test-part"])
def test_too_few_rows_are_refused_before_any_fit(n: int, protocol, stack: bool, message: str) -> None:
    rng = np.random.default_rng(1)
    calls: list[int] = []
    with pytest.raises(FeatbankError, match=message):
        evaluate({"x": rng.normal(size=(n, 2))}, rng.normal(size=n), ["mos"], ["ridge"], protocol, stack=stack,
                 n_jobs=1, progress=lambda d, t: calls.append(d))
    assert calls == []


def test_the_smallest_workable_problem_runs() -> None:
    rng = np.random.default_rng(1)  # 8 rows in 4 folds: every fit trains on 6, the round scores all 8
    result = evaluate({"x": rng.normal(size=(8, 2))}, rng.normal(size=8), ["mos"], ["ridge"],
                      KFoldProtocol(4, 1, seed=0), stack=False, n_jobs=1)
    assert len(result.scores) == 1


def test_constant_target_is_refused_before_any_fit(problem) -> None:
    blocks, y = problem
    with pytest.raises(FeatbankError, match=r"constant target\(s\), nothing to learn or rank: flat \(all 3\)"):
        evaluate(blocks, np.column_stack([y, np.full(N, 3.0)]), ["mos", "flat"], ["ridge"], PROTOCOL, n_jobs=1)
