"""Tests for :mod:`featbank.learning.protocols` and the ``svr_grid`` learner.

Splits are checked against the published recipe (VIDEVAL's ``train_test_split`` seeds), svr_grid's
selection against an independent recomputation of its documented criterion, and honesty end to
end: scrambling the test part's labels must not change a single prediction, and a pure-noise
target must give a stack with no skill. The real-data tests rerun VIDEVAL's protocol on its
released KoNViD-1k features with fewer splits and compare with the published median.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVR

from benchmarks import reference_data as videval_data
from featbank.errors import FeatbankError
from featbank.learning.metrics import METRICS, rmse, score
from featbank.learning.engine import evaluate
from featbank.learning.protocols import (INNER_FOLDS, HoldoutProtocol, KFoldProtocol, ProtocolContext,
                                         RandomSplitsProtocol, Round, VidevalProtocol, load_rounds,
                                         parse_protocol, save_rounds)
from featbank.learning.results import STACK, Evaluation
from regressors import SVRGridRegressor, load_learner, make_learner, save_learner

SMALL_GRID = {"C_grid": (1.0, 8.0, 64.0), "gamma_grid": (0.05, 0.5, 2.0)}


def make_problem(n: int = 100, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A nonlinear target of the first two features; columns on very different scales."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 50.0, 0.01, 3.0, 1000.0])[:d] + 7.0
    y = np.tanh(X[:, 0]) + 0.02 * X[:, 1] + 0.2 * rng.normal(size=n)
    return X, 3.0 + y


# ---------------------------------------------------------------- splits


def videval_splits(n: int, n_splits: int) -> list[Round]:
    return VidevalProtocol(n_splits).rounds(n)


def train_test(rnd: Round) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) of a held-out round, in the order learners see them."""
    return rnd.rows((0,), inside=False), rnd.rows((0,), inside=True)


def test_videval_splits_are_train_test_split_with_published_seeds() -> None:
    X, y = make_problem(n=57)
    rounds = videval_splits(len(y), 12)
    assert len(rounds) == 12 and not any(r.pooled for r in rounds)
    for i, rnd in enumerate(rounds, start=1):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=math.ceil(8.8 * i))
        train, test = train_test(rnd)
        np.testing.assert_array_equal(X[train], X_train)  # order kept: svr_grid's inner split depends on it
        np.testing.assert_array_equal(y[test], y_test)
        assert rnd.seed == math.ceil(6.6 * i)
    assert [r.seed for r in rounds[:5]] == [7, 14, 20, 27, 33]


def test_videval_outer_seeds_follow_float_arithmetic_as_the_original_script() -> None:
    # 8.8 * 25 is 220.00000000000003 in floating point: VIDEVAL's split 25 used seed 221, not 220.
    rnd = videval_splits(40, 25)[24]
    _, test = train_test_split(np.arange(40), test_size=0.2, random_state=221)
    np.testing.assert_array_equal(train_test(rnd)[1], test)


def test_videval_splits_partition_samples_deterministically() -> None:
    first, second = videval_splits(101, 5), videval_splits(101, 5)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.folds, b.folds)
        train, test = train_test(a)
        assert len(test) == math.ceil(0.2 * 101) and len(train) == 101 - len(test)
        np.testing.assert_array_equal(np.sort(a.order), np.arange(101))
        assert set(a.folds[a.folds > 0].tolist()) == set(range(1, INNER_FOLDS + 1))  # the stack's inner folds
    assert not np.array_equal(train_test(first[0])[1], train_test(first[1])[1])


def test_grouped_kfold_keeps_groups_whole_and_covers_each_sample_once_per_repeat() -> None:
    groups = np.repeat(np.arange(12), 5)
    rounds = KFoldProtocol(4, 2, seed=3).rounds(60, groups)
    assert len(rounds) == 2 and all(r.pooled for r in rounds)
    for r, rnd in enumerate(rounds):
        assert rnd.seed == 3 + r and rnd.test_folds == [0, 1, 2, 3]
        np.testing.assert_array_equal(np.sort(rnd.scored), np.arange(60))
        for f in rnd.test_folds:
            assert not set(groups[rnd.rows((f,), inside=False)]) & set(groups[rnd.rows((f,), inside=True)])


def test_held_out_inner_folds_inherit_the_grouping_and_shrink_to_the_groups_available() -> None:
    groups = np.repeat(np.arange(6), 5)
    rnd = RandomSplitsProtocol(1, 0.5, seed=2).rounds(30, groups)[0]
    train, test = train_test(rnd)
    assert not set(groups[train]) & set(groups[test])
    inner = rnd.folds[rnd.folds > 0]
    assert len(set(inner.tolist())) == 3  # 3 training groups -> 3 inner folds, not 5
    for g in np.unique(groups[train]):
        assert len(np.unique(inner[groups[train] == g])) == 1


def test_holdout_is_one_split_from_the_mask() -> None:
    mask = np.arange(10) < 7
    (rnd,) = HoldoutProtocol(mask).rounds(10)
    train, test = train_test(rnd)
    np.testing.assert_array_equal(train, np.arange(7))
    np.testing.assert_array_equal(test, np.arange(7, 10))
    with pytest.raises(FeatbankError, match="both training and held-out"):
        HoldoutProtocol(np.ones(5, dtype=bool))


def test_random_splits_are_seeded_and_sized() -> None:
    a, b = RandomSplitsProtocol(4, 0.75, seed=5).rounds(40), RandomSplitsProtocol(4, 0.75, seed=5).rounds(40)
    assert len(a) == 4
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.order, y.order)
        assert len(train_test(x)[1]) == 10
    assert not np.array_equal(train_test(a[0])[1], train_test(a[1])[1])


def test_protocol_save_load_round_trip(tmp_path: Path) -> None:
    protocol = KFoldProtocol(3, 2, seed=1)
    rounds = protocol.rounds(30, np.repeat(list("abcdef"), 5))
    save_rounds(tmp_path / "splits.npz", protocol, rounds, 30)
    loaded = load_rounds(tmp_path / "splits.npz")
    assert loaded.spec == "kfold:3x2" and loaded.describe() == protocol.describe()
    for a, b in zip(loaded.rounds(30), rounds, strict=True):
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.folds, b.folds)
        assert (a.seed, a.pooled) == (b.seed, b.pooled)
    with pytest.raises(FeatbankError, match="for 30 samples"):
        loaded.rounds(31)


@pytest.mark.parametrize("spec, expected", [
    ("kfold", "kfold:5x1"), ("kfold:3x4", "kfold:3x4"), ("videval", "videval:100"), ("videval:20", "videval:20"),
    ("random", "random:10:0.8"), ("random:5:0.7", "random:5:0.7"),
])
def test_every_protocol_in_the_table_parses_from_its_spec(spec: str, expected: str) -> None:
    assert parse_protocol(spec).spec == expected


def test_holdout_spec_reads_a_manifest_column() -> None:
    column = np.array(["train", "val", "train", "val", "train"])
    protocol = parse_protocol("holdout:meta_split=train", ProtocolContext(column=lambda name: column))
    np.testing.assert_array_equal(train_test(protocol.rounds(5)[0])[0], [0, 2, 4])


@pytest.mark.parametrize("spec, message", [
    ("bootstrap:5", "unknown protocol 'bootstrap:5'; use one of: kfold"),
    ("kfold:five", "bad protocol 'kfold:five'"),
    ("random:3:1.5", "0 < FRACTION < 1"),
    ("holdout:split", "expected holdout:COLUMN=VALUE"),
])
def test_bad_protocol_specs_say_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(FeatbankError, match=message):
        parse_protocol(spec, ProtocolContext(column=lambda name: np.zeros(3)))


def test_protocols_are_scikit_learn_splitters() -> None:
    X, y = make_problem(n=60)
    protocol = KFoldProtocol(3, 2, seed=0)
    assert protocol.get_n_splits(X) == 6
    splits = list(protocol.split(X, y))
    assert len(splits) == 6 and all(np.intersect1d(tr, te).size == 0 for tr, te in splits)
    scores = cross_val_score(make_learner("ridge"), X, y, cv=protocol)
    assert scores.shape == (6,) and np.all(np.isfinite(scores))
    assert len(list(VidevalProtocol(4).split(X))) == 4


# ---------------------------------------------------------------- svr_grid


def test_svr_grid_selects_by_logistic_rmse_on_its_inner_split_and_refits_on_all() -> None:
    X, y = make_problem(n=80)
    model = SVRGridRegressor(**SMALL_GRID, random_state=4).fit(X, y)
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=4)
    scaler = MinMaxScaler().fit(X_fit)
    expected = np.array(
        [
            [rmse(y_val, SVR(C=C, gamma=g).fit(scaler.transform(X_fit), y_fit).predict(scaler.transform(X_val)))
             for g in SMALL_GRID["gamma_grid"]]
            for C in SMALL_GRID["C_grid"]
        ]
    )  # fmt: skip
    # The search evaluates the kernel by BLAS, libsvm by its own loop: kernel entries differ in the last
    # bits, and libsvm stops at a gradient tolerance (1e-3), so the fits agree to ~1e-6 (1.3e-6 seen in
    # one of nine cells), not to the last bit; the selected pair below must still be exactly the same.
    np.testing.assert_allclose(model.validation_rmse_, expected, rtol=1e-5)
    best = np.unravel_index(np.argmin(expected), expected.shape)
    assert (model.C_, model.gamma_) == (SMALL_GRID["C_grid"][best[0]], SMALL_GRID["gamma_grid"][best[1]])
    full = MinMaxScaler().fit(X)
    refit = SVR(C=model.C_, gamma=model.gamma_).fit(full.transform(X), y)
    np.testing.assert_allclose(model.predict(X[:9]), refit.predict(full.transform(X[:9])), rtol=1e-12)


def test_svr_grid_default_grid_is_videvals() -> None:
    model = SVRGridRegressor()
    np.testing.assert_array_equal(model.C_grid, np.logspace(1, 10, 10, base=2))
    np.testing.assert_array_equal(model.gamma_grid, np.logspace(-8, 1, 10, base=2))


def test_svr_grid_in_pipeline_equals_bare_minmax_svr() -> None:
    # StandardScaler before min-max scaling is a positive affine map per column, which min-max
    # undoes: the inputs differ by float rounding only, which libsvm's stopping tolerance (1e-3)
    # can amplify to ~1e-6 in a fit, so the comparison is to 1e-4, and the chosen pair must agree.
    X, y = make_problem(n=90)
    bare = SVRGridRegressor(**SMALL_GRID, random_state=2).fit(X[:70], y[:70])
    piped = make_learner("svr_grid", random_state=2)
    piped.set_params(model__C_grid=SMALL_GRID["C_grid"], model__gamma_grid=SMALL_GRID["gamma_grid"])
    piped.fit(X[:70], y[:70])
    assert (piped[-1].C_, piped[-1].gamma_) == (bare.C_, bare.gamma_)
    np.testing.assert_allclose(piped[-1].validation_rmse_, bare.validation_rmse_, rtol=1e-4)
    np.testing.assert_allclose(piped.predict(X[70:]), bare.predict(X[70:]), rtol=1e-4)


def test_svr_grid_selected_fixes_the_pair_and_parallel_search_matches_serial() -> None:
    X, y = make_problem(n=80)
    model = SVRGridRegressor(**SMALL_GRID, random_state=1).fit(X, y)
    fixed = model.selected()
    assert fixed.C_grid == (model.C_,) and fixed.gamma_grid == (model.gamma_,)
    refit = fixed.fit(X, y)
    assert np.isnan(refit.validation_rmse_).all()
    np.testing.assert_array_equal(refit.predict(X), model.predict(X))
    parallel = clone(model).set_params(n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(parallel.validation_rmse_, model.validation_rmse_)


def test_svr_grid_refuses_a_validation_part_too_small_for_the_logistic() -> None:
    X, y = make_problem(n=15)
    with pytest.raises(ValueError, match="fewer than 4"):
        SVRGridRegressor(**SMALL_GRID).fit(X, y)
    SVRGridRegressor(C_grid=(4.0,), gamma_grid=(0.5,)).fit(X, y)  # a fixed pair needs no validation part


def test_svr_grid_round_trips_through_the_persist_allowlist(tmp_path: Path) -> None:
    X, y = make_problem(n=60)
    learner = make_learner("svr_grid").set_params(model__C_grid=(2.0, 4.0)).fit(X, y)
    save_learner(learner, tmp_path / "svr_grid.skops")
    np.testing.assert_array_equal(load_learner(tmp_path / "svr_grid.skops").predict(X), learner.predict(X))


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def result() -> Evaluation:
    X, y = make_problem()
    blocks = {"good": X, "noise": np.random.default_rng(9).normal(size=(len(y), 3))}
    return evaluate(blocks, y, ["y"], ["ridge", "svr_grid"], VidevalProtocol(3), stack=True, n_jobs=1)


def test_evaluate_scores_every_base_and_the_stack_on_every_split(result: Evaluation) -> None:
    models = ["good/ridge", "good/svr_grid", "noise/ridge", "noise/svr_grid", STACK]
    assert list(result.scores.columns) == ["round", "target", "model", *METRICS]
    assert len(result.scores) == 3 * len(models)
    assert list(result.scores["model"].unique()) == models
    summary = result.summary()
    assert set(summary["model"]) == set(models) and (summary["rounds"] == 3).all()
    assert set(summary["model"].iloc[-2:]) == {"noise/ridge", "noise/svr_grid"}  # best first
    stack = result.scores[result.scores["model"] == STACK]
    assert summary.set_index("model").loc[STACK, "srcc_median"] == pytest.approx(stack["srcc"].median())
    assert summary.set_index("model").loc[STACK, "srcc_std"] == pytest.approx(np.std(stack["srcc"]))


def test_evaluate_scores_recompute_from_saved_predictions(result: Evaluation, tmp_path: Path) -> None:
    result.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"scores.csv", "summary.csv", "splits.npz", "predictions.csv",
                                                    "stack_weights.csv", "run.json"}
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    part = predictions[(predictions["split"] == 1) & (predictions["model"] == STACK)]
    np.testing.assert_array_equal(part["sample"], train_test(result.rounds[1])[1])
    row = result.scores[(result.scores["round"] == 1) & (result.scores["model"] == STACK)].iloc[0]
    assert score(part["y_true"], part["y_pred"])["srcc"] == pytest.approx(row["srcc"])
    assert len(load_rounds(tmp_path / "splits.npz").rounds(result.n)) == 3


def test_stack_weights_are_non_negative_and_the_stack_follows_the_informative_block(result: Evaluation) -> None:
    weights = result.stack_weights
    assert list(weights["round"]) == [0, 1, 2]
    assert (weights[result.bases] >= 0).all().all()
    medians = result.scores.groupby("model")["srcc"].median()
    assert medians[STACK] > medians[["good/ridge", "good/svr_grid"]].max() - 0.02
    assert medians[STACK] > medians[["noise/ridge", "noise/svr_grid"]].max() + 0.5


def test_scrambled_test_labels_change_no_prediction() -> None:
    # Every hyper-parameter (svr_grid's search, ElasticNet's alpha, the stack's weights) must come
    # from the training part: permuting the test part's labels may change scores, nothing else.
    X, y = make_problem(n=80)
    protocol = HoldoutProtocol(np.arange(80) % 4 != 0)
    scrambled = y.copy()
    test = train_test(protocol.rounds(80)[0])[1]
    scrambled[test] = np.random.default_rng(0).permutation(y[test])
    runs = [evaluate({"x": X}, target, ["y"], ["svr_grid", "elasticnet"], protocol, stack=True, n_jobs=1)
            for target in (y, scrambled)]
    np.testing.assert_array_equal(runs[0].predictions["y_pred"], runs[1].predictions["y_pred"])
    pd.testing.assert_frame_equal(runs[0].stack_weights, runs[1].stack_weights)


@pytest.mark.filterwarnings("ignore::numpy.exceptions.RankWarning")  # cubic PLCC of near-constant predictions
def test_stack_on_pure_noise_target_has_no_skill() -> None:
    rng = np.random.default_rng(5)
    n = 150
    blocks = {"a": rng.normal(size=(n, 20)), "b": rng.normal(size=(n, 20))}
    y = rng.normal(size=n)
    result = evaluate(blocks, y, ["y"], ["ridge", "krr"], KFoldProtocol(5, 2, seed=0), stack=True, n_jobs=1)
    stack = result.scores[result.scores["model"] == STACK]["srcc"]
    assert abs(stack.median()) < 0.15


def test_evaluate_rejects_a_protocol_for_other_data() -> None:
    X, y = make_problem(n=40)
    with pytest.raises(FeatbankError, match="for 50 samples"):
        evaluate({"x": X}, y, ["y"], ["ridge"], HoldoutProtocol(np.arange(50) < 40), stack=False)


# ---------------------------------------------------------------- VIDEVAL's released features


REALDATA_SPLITS = 10


def _videval_run(realdata: Path, dataset: str) -> Evaluation:
    X, y = videval_data.load(realdata / "vztu+VIDEVAL" / "features", dataset)
    return evaluate({"videval": X}, y, ["mos"], ["svr_grid", "elasticnet", "krr"], VidevalProtocol(REALDATA_SPLITS),
                    stack=True, n_jobs=2)


@pytest.fixture(scope="module")
def konvid(realdata: Path) -> Evaluation:
    return _videval_run(realdata, "KONVID_1K")


@pytest.fixture(scope="module")
def live_vqc(realdata: Path) -> Evaluation:
    return _videval_run(realdata, "LIVE_VQC")


# YouTube-UGC (6 s per split for svr_grid alone) is left to `./run.sh bench videval` to keep the
# suite inside its time budget; its 100-split reproduction is in the README.
RUNS = {"konvid": "KONVID_1K", "live_vqc": "LIVE_VQC"}


@pytest.mark.realdata
@pytest.mark.parametrize("run", list(RUNS))
def test_svr_grid_reproduces_published_videval_median(run: str, request: pytest.FixtureRequest) -> None:
    """On the first 10 of VIDEVAL's splits the median sits within one published std (at least 0.025)
    of the 100-split published median; the full 100 splits reproduce it to 0.002 (README)."""
    result: Evaluation = request.getfixturevalue(run)
    svr = result.scores[result.scores["model"] == "videval/svr_grid"]
    published = videval_data.PUBLISHED[RUNS[run]]
    assert svr["srcc"].median() == pytest.approx(published["srcc"], abs=max(0.025, published["srcc_std"]))
    assert svr["plcc_logistic"].median() == pytest.approx(published["plcc"], abs=max(0.025, published["plcc_std"]))


@pytest.mark.realdata
@pytest.mark.parametrize("run", list(RUNS))
def test_stack_is_at_least_as_good_as_svr_grid_on_the_same_splits(run: str, request: pytest.FixtureRequest) -> None:
    result: Evaluation = request.getfixturevalue(run)
    medians = result.scores.groupby("model")["srcc"].median()
    assert medians[STACK] >= medians["videval/svr_grid"]
