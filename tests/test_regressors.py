"""Tests for :mod:`regressors`: named learner pipelines, the torch MLP head, its losses and safe persistence.

Learners are checked on a small synthetic nonlinear problem with missing entries (the pipelines
impute), losses against their documented properties and brute-force formulas, and persistence
against the skops allowlist: round trips must be exact, anything outside the allowlist refused.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import torch
from scipy import stats
from sklearn.base import clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featbank.errors import FeatbankError
from regressors import LEARNERS, MLPHeadRegressor, load_learner, make_learner, save_learner
from regressors.losses import (
    LOSSES,
    RANK_WEIGHT,
    fidelity_loss,
    mse_loss,
    plcc_loss,
    plcc_rank_loss,
    rank_hinge_loss,
)

N_TRAIN, N_TEST, DIM = 150, 100, 8


def truth(X: np.ndarray) -> np.ndarray:
    """A nonlinear MOS-like function of the first three features; the other five are noise."""
    return np.tanh(1.5 * X[:, 0]) + 0.5 * X[:, 1] + 0.3 * np.sin(2 * X[:, 2])


def with_missing(X: np.ndarray, rng: np.random.Generator, rate: float = 0.05) -> np.ndarray:
    X = X.copy()
    X[rng.random(X.shape) < rate] = np.nan
    return X


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of a noisy nonlinear problem with ~5% NaN in X (train and test)."""
    rng = np.random.default_rng(42)
    X_train = rng.normal(size=(N_TRAIN, DIM))
    X_test = rng.normal(size=(N_TEST, DIM))
    y_train = truth(X_train) + rng.normal(0, 0.15, N_TRAIN)
    return with_missing(X_train, rng), y_train, with_missing(X_test, rng), truth(X_test)


def small_mlp(**params) -> MLPHeadRegressor:
    """A cheap head for tests that exercise behaviour rather than accuracy."""
    return MLPHeadRegressor(**{"hidden": (32,), "epochs": 40, **params})


def complete(problem) -> tuple[np.ndarray, np.ndarray]:
    """Training data with NaN rows dropped, for the bare MLP (it does not impute)."""
    X, y = problem[0], problem[1]
    keep = ~np.isnan(X).any(axis=1)
    return StandardScaler().fit_transform(X[keep]), y[keep]


# ---------------------------------------------------------------- learners


def test_make_learner_builds_impute_scale_model_pipeline() -> None:
    for name in LEARNERS:
        pipeline = make_learner(name)
        assert isinstance(pipeline, Pipeline)
        assert [step for step, _ in pipeline.steps] == ["impute", "scale", "model"]


def test_unknown_learner_is_a_featbank_error_listing_valid_names() -> None:
    with pytest.raises(FeatbankError, match="unknown learner 'xgboost'") as info:
        make_learner("xgboost")
    assert all(name in str(info.value) for name in LEARNERS)


@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_fits_noisy_nonlinear_data_with_missing_values(problem, name: str) -> None:
    X_train, y_train, X_test, y_test = problem
    assert np.isnan(X_train).any() and np.isnan(X_test).any()
    prediction = make_learner(name, random_state=0).fit(X_train, y_train).predict(X_test)
    assert prediction.shape == (N_TEST,)
    assert np.all(np.isfinite(prediction))
    assert stats.spearmanr(y_test, prediction).statistic > 0.8


def test_all_nan_column_keeps_its_width(problem) -> None:
    X_train, y_train, X_test, _ = problem
    X_train, X_test = X_train.copy(), X_test.copy()
    X_train[:, 3] = np.nan
    X_test[:, 3] = np.nan
    pipeline = make_learner("ridge").fit(X_train, y_train)
    assert pipeline[:-1].transform(X_test).shape == (N_TEST, DIM)
    assert np.all(np.isfinite(pipeline.predict(X_test)))


@pytest.mark.parametrize("name", ["lightgbm", "mlp"])
def test_stochastic_learners_follow_random_state(problem, name: str) -> None:
    X_train, y_train, X_test, _ = problem

    def predict(seed: int) -> np.ndarray:
        learner = make_learner(name, random_state=seed)
        if name == "mlp":
            learner.set_params(model__epochs=30)
        return learner.fit(X_train, y_train).predict(X_test)

    first = predict(1)
    np.testing.assert_array_equal(first, predict(1))
    assert not np.allclose(first, predict(2))


@pytest.mark.parametrize("name", LEARNERS)
def test_learners_follow_sklearn_clone_and_params_conventions(name: str) -> None:
    learner = make_learner(name, random_state=3)
    copy = clone(learner)
    assert copy is not learner
    assert repr(copy.get_params()) == repr(learner.get_params())
    copy.set_params(**copy.get_params())  # setting every parameter back is a no-op
    assert repr(copy.get_params()) == repr(learner.get_params())


# ---------------------------------------------------------------- MLP head


def test_mlp_params_round_trip_and_clone() -> None:
    head = MLPHeadRegressor(hidden=(16, 8), dropout=0.2, loss="plcc", epochs=7, lr=3e-3,
                            weight_decay=0.0, batch_size=32, random_state=5)  # fmt: skip
    params = head.get_params()
    assert params == {"hidden": (16, 8), "dropout": 0.2, "loss": "plcc", "epochs": 7, "lr": 3e-3,
                      "weight_decay": 0.0, "batch_size": 32, "device": "cpu", "random_state": 5}  # fmt: skip
    assert MLPHeadRegressor().set_params(**params).get_params() == params
    assert clone(head).get_params() == params


def test_mlp_same_seed_is_bit_identical_and_other_seed_differs(problem) -> None:
    X, y = complete(problem)
    a = small_mlp(random_state=0).fit(X, y).predict(X)
    b = small_mlp(random_state=0).fit(X, y).predict(X)
    c = small_mlp(random_state=1).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_mlp_fit_leaves_global_torch_rng_untouched(problem) -> None:
    X, y = complete(problem)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    small_mlp(epochs=3).fit(X, y)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


def test_mlp_predicts_in_target_units(problem) -> None:
    # y is standardised internally, so MOS on a 0-100 scale gives the same head, rescaled.
    X, y = complete(problem)
    on_unit = small_mlp().fit(X, y).predict(X)
    on_percent = small_mlp().fit(X, 20 * y + 50).predict(X)
    np.testing.assert_allclose(on_percent, 20 * on_unit + 50, atol=1e-3 * 20 * np.std(y))


def test_mlp_rejects_unknown_loss_and_wrong_width(problem) -> None:
    X, y = complete(problem)
    with pytest.raises(ValueError, match="loss must be one of"):
        MLPHeadRegressor(loss="huber").fit(X, y)
    head = small_mlp(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        head.predict(X[:, :3])


@pytest.mark.parametrize("loss", list(LOSSES))
def test_training_decreases_each_loss(problem, loss: str) -> None:
    X, y = complete(problem)
    target = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)

    def training_loss(epochs: int) -> tuple[float, np.ndarray]:
        head = small_mlp(loss=loss, epochs=epochs, random_state=0).fit(X, y)
        raw = (head.predict(X) - head.y_mean_) / head.y_scale_  # the network's own output
        return float(LOSSES[loss](torch.tensor(raw, dtype=torch.float32), target)), raw

    untrained, _ = training_loss(0)  # same seed: the initial network, before any step
    trained, raw = training_loss(60)
    assert trained < 0.8 * untrained
    assert stats.spearmanr(y, raw).statistic > 0.8


# ---------------------------------------------------------------- losses


def standard_normal(n: int, seed: int) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).normal(size=n), dtype=torch.float64)


def test_mse_loss_is_mean_squared_error() -> None:
    pred, target = standard_normal(20, 0), standard_normal(20, 1)
    assert float(mse_loss(pred, target)) == pytest.approx(float(np.mean((pred.numpy() - target.numpy()) ** 2)))
    assert float(mse_loss(target, target)) == 0.0


def test_plcc_loss_is_zero_for_linear_and_two_for_reversed_prediction() -> None:
    target = standard_normal(30, 0)
    assert float(plcc_loss(3 * target + 1, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(plcc_loss(-2 * target + 5, target)) == pytest.approx(2.0, abs=1e-6)


def test_plcc_loss_is_one_minus_pearson() -> None:
    pred, target = standard_normal(30, 2), standard_normal(30, 3)
    expected = 1 - stats.pearsonr(pred.numpy(), target.numpy()).statistic
    assert float(plcc_loss(pred, target)) == pytest.approx(expected, abs=1e-6)


def brute_force_rank_hinge(pred: np.ndarray, target: np.ndarray, margin: float = 1.0) -> float:
    terms = [max(0.0, margin * abs(target[i] - target[j]) - np.sign(target[i] - target[j]) * (pred[i] - pred[j]))
             for i, j in itertools.combinations(range(len(pred)), 2)]  # fmt: skip
    return float(np.mean(terms))


def test_rank_hinge_matches_pairwise_definition() -> None:
    pred, target = standard_normal(12, 4), standard_normal(12, 5)
    expected = brute_force_rank_hinge(pred.numpy(), target.numpy())
    assert float(rank_hinge_loss(pred, target)) == pytest.approx(expected, rel=1e-12)


def test_rank_hinge_is_zero_at_target_and_positive_for_constant_prediction() -> None:
    target = standard_normal(15, 6)
    assert float(rank_hinge_loss(target, target)) == 0.0
    # A constant prediction pays margin * |dy| on every pair: it is not a minimiser.
    constant = rank_hinge_loss(torch.zeros(15, dtype=torch.float64), target)
    expected = np.mean([abs(a - b) for a, b in itertools.combinations(target.numpy(), 2)])
    assert float(constant) == pytest.approx(expected, rel=1e-12)


def brute_force_fidelity(pred: np.ndarray, target: np.ndarray) -> float:
    pairs = list(itertools.combinations(range(len(pred)), 2))
    p_hat = np.array([stats.norm.cdf((pred[i] - pred[j]) / math.sqrt(2)) for i, j in pairs])
    p = np.array([stats.norm.cdf((target[i] - target[j]) / math.sqrt(2)) for i, j in pairs])
    return float(np.mean(1 - np.sqrt(p * p_hat) - np.sqrt((1 - p) * (1 - p_hat))))


def test_fidelity_loss_matches_thurstone_definition() -> None:
    pred, target = standard_normal(10, 7), standard_normal(10, 8)
    # The epsilon inside the square roots shifts the value by at most ~2 * sqrt(1e-8).
    expected = brute_force_fidelity(pred.numpy(), target.numpy())
    assert float(fidelity_loss(pred, target)) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 1000.0])
def test_fidelity_loss_is_bounded_and_minimal_at_target(scale: float) -> None:
    target = standard_normal(25, 9)
    pred = scale * standard_normal(25, 10)
    value = float(fidelity_loss(pred, target))
    reversed_value = float(fidelity_loss(-scale * target, target))
    assert 0.0 <= value < 1.0
    assert 0.0 <= reversed_value < 1.0
    # At the target, up to the epsilon guard (which can push it a hair below zero).
    assert abs(float(fidelity_loss(target, target))) < 1e-3
    assert float(fidelity_loss(target, target)) < value


def test_plcc_rank_is_plcc_plus_weighted_rank_hinge() -> None:
    pred, target = standard_normal(20, 11), standard_normal(20, 12)
    expected = plcc_loss(pred, target) + RANK_WEIGHT * rank_hinge_loss(pred, target)
    assert float(plcc_rank_loss(pred, target)) == pytest.approx(float(expected), rel=1e-12)
    assert RANK_WEIGHT == 0.3


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_has_finite_gradients_at_degenerate_batches(loss: str) -> None:
    spread = torch.tensor([-8.0, -1.0, 0.0, 0.5, 9.0])  # large gaps drive Phi to 0 and 1 exactly
    cases = {
        "perfect prediction": (spread.clone(), spread),
        "constant prediction": (torch.zeros(5), spread),
        "tied targets": (spread.clone(), torch.full((5,), 0.7)),
        "two tied targets": (torch.tensor([0.3, -0.2]), torch.tensor([1.0, 1.0])),
    }
    for case, (start, target) in cases.items():
        pred = start.clone().requires_grad_(True)
        value = LOSSES[loss](pred, target)
        value.backward()
        assert torch.isfinite(value), f"{loss}: {case}"
        assert torch.all(torch.isfinite(pred.grad)), f"{loss}: {case}"


@pytest.mark.parametrize("loss", ["plcc", "plcc+rank"])
def test_correlation_losses_survive_tied_mos_in_a_two_sample_batch(loss: str) -> None:
    # 130 samples in batches of 64 leave a last batch of 2; with MOS on a coarse scale those two
    # are often tied, which used to give NaN gradients and an all-NaN head.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(130, 5))
    y = np.round(X[:, 0] + rng.normal(0, 0.3, 130)).clip(-2, 2)
    prediction = MLPHeadRegressor(loss=loss, hidden=(32,), epochs=80).fit(X, y).predict(X)
    assert np.all(np.isfinite(prediction))
    assert stats.spearmanr(y, prediction).statistic > 0.7


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("name", LEARNERS)
def test_save_load_round_trip_predicts_identically(problem, tmp_path: Path, name: str) -> None:
    X_train, y_train, X_test, _ = problem
    learner = make_learner(name, random_state=0)
    if name == "mlp":
        learner.set_params(model__epochs=10)
    learner.fit(X_train, y_train)
    path = tmp_path / f"{name}.skops"
    save_learner(learner, path)
    loaded = load_learner(path)
    assert type(loaded) is Pipeline
    np.testing.assert_array_equal(loaded.predict(X_test), learner.predict(X_test))


def test_loading_mlp_leaves_global_torch_rng_untouched(problem, tmp_path: Path) -> None:
    X, y = complete(problem)
    save_learner(small_mlp(epochs=2).fit(X, y), tmp_path / "head.skops")
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    load_learner(tmp_path / "head.skops")
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


def untrusted_pipeline(problem) -> Pipeline:
    X_train, y_train = problem[0], problem[1]
    keep = ~np.isnan(X_train).any(axis=1)
    forest = RandomForestRegressor(n_estimators=3, max_depth=2, random_state=0)
    return Pipeline([("scale", StandardScaler()), ("model", forest)]).fit(X_train[keep], y_train[keep])


def test_load_refuses_file_with_type_outside_allowlist(problem, tmp_path: Path) -> None:
    path = tmp_path / "forest.skops"
    sio.dump(untrusted_pipeline(problem), path)  # plain skops trusts all of sklearn; we do not
    with pytest.raises(FeatbankError, match="RandomForestRegressor"):
        load_learner(path)


def test_save_refuses_estimator_outside_allowlist_and_writes_nothing(problem, tmp_path: Path) -> None:
    path = tmp_path / "forest.skops"
    with pytest.raises(FeatbankError, match="RandomForestRegressor"):
        save_learner(untrusted_pipeline(problem), path)
    assert not path.exists()


def test_load_refuses_bound_method_reference(problem, tmp_path: Path) -> None:
    # Every class here is allowlisted; the bound method is not a learner part and must not load.
    X_train, y_train = problem[0], problem[1]
    pipeline = make_learner("ridge").fit(X_train, y_train)
    pipeline.named_steps["model"].hook_ = pipeline.named_steps["scale"].inverse_transform
    path = tmp_path / "method.skops"
    sio.dump(pipeline, path)
    with pytest.raises(FeatbankError, match="StandardScaler.inverse_transform"):
        load_learner(path)
    with pytest.raises(FeatbankError, match="StandardScaler.inverse_transform"):
        save_learner(pipeline, tmp_path / "method2.skops")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"], ids=["empty", "text", "bad-zip"])
def test_load_refuses_non_skops_file_with_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(content)
    with pytest.raises(FeatbankError, match="is not a skops learner file"):
        load_learner(path)


# ---------------------------------------------------------------- shared work across targets


def test_kernel_svr_predicts_as_libsvm_rbf_on_a_standardised_target(problem) -> None:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.svm import SVR

    from regressors.kernel_svr import KernelSVR

    X, y = complete(problem)
    reference = TransformedTargetRegressor(SVR(kernel="rbf", C=3.0, epsilon=0.1, gamma="scale"),
                                           transformer=StandardScaler()).fit(X, y)
    model = KernelSVR().fit(X, y)
    assert 0 < len(model.support_vectors_) <= len(X)
    np.testing.assert_allclose(model.predict(X[:20] + 0.1), reference.predict(X[:20] + 0.1), atol=1e-8)


@pytest.mark.parametrize("name", ["svr", "elasticnet", "lightgbm", "ridge"])
def test_fit_targets_equals_one_pipeline_per_target(problem, name: str) -> None:
    from regressors import fit_targets

    X, y, X_test, _ = problem
    Y = np.column_stack([y, -2 * y + 1, np.roll(y, 7)])
    fitted = fit_targets(name, X, Y, random_state=3)
    assert len(fitted) == Y.shape[1]
    for j, model in enumerate(fitted):
        alone = make_learner(name, random_state=3).fit(X, Y[:, j])
        np.testing.assert_allclose(model.predict(X_test), alone.predict(X_test), rtol=1e-7, atol=1e-8)


def test_svr_grid_search_on_precomputed_kernels_matches_libsvm_rbf() -> None:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import SVR

    from featbank.learning.metrics import rmse
    from regressors.svr_grid import SVRGridRegressor

    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 6))
    y = 3 + np.tanh(X[:, 0]) + 0.2 * rng.normal(size=120)
    grid = SVRGridRegressor(C_grid=(1.0, 8.0), gamma_grid=(0.05, 0.5, 2.0), random_state=1).fit(X, y)
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=1)
    scaler = MinMaxScaler().fit(X_fit)
    expected = [[rmse(y_val, SVR(C=C, gamma=g).fit(scaler.transform(X_fit), y_fit).predict(scaler.transform(X_val)))
                 for g in (0.05, 0.5, 2.0)] for C in (1.0, 8.0)]
    np.testing.assert_allclose(grid.validation_rmse_, expected, rtol=1e-5)  # libsvm's stopping tolerance


def test_mlp_fits_every_target_with_one_shared_trunk(problem, tmp_path: Path) -> None:
    from regressors import fit_targets

    X, y, X_test, truth_test = problem
    Y = np.column_stack([y, 10 * y + 50])  # same signal on another scale: each output keeps its units
    one, other = fit_targets("mlp", X, Y, random_state=0)
    assert one.steps[-1][1].estimator is other.steps[-1][1].estimator  # one head, fitted once
    first, second = one.predict(X_test), other.predict(X_test)
    assert stats.spearmanr(first, truth_test)[0] > 0.8
    np.testing.assert_allclose(second, 10 * first + 50, rtol=0.05, atol=1.0)
    save_learner(other, tmp_path / "column.skops")
    np.testing.assert_array_equal(load_learner(tmp_path / "column.skops").predict(X_test), second)
    single = fit_targets("mlp", X, y[:, None], random_state=0)[0]
    np.testing.assert_array_equal(single.predict(X_test), make_learner("mlp", random_state=0).fit(X, y).predict(X_test))


def test_elasticnet_hands_its_choice_to_fits_on_subsets(problem) -> None:
    X, y, X_test, _ = problem
    fitted = make_learner("elasticnet").fit(X, y)
    search = fitted.steps[-1][1]
    fixed = search.selected()
    assert (fixed.alpha, fixed.l1_ratio) == (search.alpha_, search.l1_ratio_)
    Z = fitted[:-1].transform(X)
    np.testing.assert_allclose(fixed.fit(Z, y).predict(fitted[:-1].transform(X_test)), fitted.predict(X_test),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["svr", "mlp"])
def test_predict_targets_equals_each_pipeline_predicting_alone(problem, name: str) -> None:
    from regressors import fit_targets, predict_targets

    X, y, X_test, _ = problem
    fitted = fit_targets(name, X, np.column_stack([y, 2 * y]), random_state=1)
    np.testing.assert_array_equal(predict_targets(fitted, X_test),
                                  np.column_stack([model.predict(X_test) for model in fitted]))
