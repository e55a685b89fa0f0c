"""The temporal head, its losses and learner specs: per-step regression pooled over time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import check_estimator

from featbank.errors import UsageError
from featbank.learning import engine
from featbank.learning.ensemble import fit_final, load_model
from featbank.learning.metrics import score
from featbank.learning.protocols import parse_protocol
from regressors import learner_entry, make_learner
from regressors.losses import l1_loss, plcc_loss, resolve_loss, soft_rank, srcc_loss
from regressors.spec import on_device, parse_learner, split_learners
from regressors.temporal import TemporalHead


def sequences(n: int = 160, T: int = 8, D: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items of 2..T steps (NaN after), labelled by the mean of a nonlinear per-step score and by their worst step."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, D)).astype(np.float32)
    lengths = rng.integers(2, T + 1, size=n)
    for i, length in enumerate(lengths):
        X[i, length:] = np.nan
    per_step = np.tanh(2 * X[..., 0]) + 0.5 * X[..., 1]
    Y = np.column_stack([np.nanmean(per_step, axis=1), np.nanmin(X[..., 2], axis=1)])
    return X, Y + 0.02 * rng.normal(size=Y.shape)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_the_head_honours_scikit_learns_estimator_checks(pooling):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(TemporalHead(hidden=16, epochs=20, pooling=pooling), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed and len(results) > 40


def test_absent_steps_change_nothing_and_a_seed_fixes_the_result():
    X, Y = sequences(n=60)
    head = TemporalHead(hidden=16, epochs=10).fit(X, Y[:, 0])
    padded = np.concatenate([X, np.full((60, 5, X.shape[2]), np.nan, np.float32)], axis=1)
    np.testing.assert_allclose(head.predict(padded), head.predict(X), rtol=1e-5, atol=1e-6)
    again = TemporalHead(hidden=16, epochs=10).fit(X, Y[:, 0])
    np.testing.assert_array_equal(again.predict(X), head.predict(X))
    shuffled_steps = X[:, ::-1]  # mean pooling is order-free over the valid steps
    np.testing.assert_allclose(head.predict(shuffled_steps), head.predict(X), rtol=1e-4, atol=1e-5)


def test_mean_pooling_learns_a_per_step_mean_and_attention_a_worst_step():
    X, Y = sequences()
    train, test = np.arange(120), np.arange(120, 160)
    mean_head = TemporalHead(hidden=32, epochs=60).fit(X[train], Y[train])
    assert mean_head.predict(X[test]).shape == (40, 2)
    assert score(Y[test, 0], mean_head.predict(X[test])[:, 0])["srcc"] > 0.9
    attention = TemporalHead(hidden=32, epochs=60, pooling="attention").fit(X[train], Y[train, 1])
    assert score(Y[test, 1], attention.predict(X[test]))["srcc"] > 0.8


def test_soft_ranks_and_the_srcc_loss_follow_the_exact_ranks():
    x = torch.tensor([0.3, -1.0, 2.0, 0.9])
    np.testing.assert_allclose(soft_rank(x, temperature=1e-3).numpy(), [1.5, 0.5, 3.5, 2.5], atol=1e-3)
    assert srcc_loss(x, x * 3 + 1).item() < 0.01
    assert srcc_loss(-x, x).item() > 1.9
    x.requires_grad_(True)
    srcc_loss(x, torch.tensor([1.0, 2.0, 3.0, 4.0])).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_loss_expressions_are_weighted_sums_of_named_losses():
    pred, target = torch.tensor([0.1, 0.5, 0.2, 0.9]), torch.tensor([0.0, 1.0, 0.5, 1.5])
    fiee = resolve_loss("l1+plcc+srcc")(pred, target)
    assert fiee.item() == pytest.approx((l1_loss(pred, target) + plcc_loss(pred, target)
                                         + srcc_loss(pred, target)).item())
    weighted = resolve_loss("plcc+0.1*mae")(pred, target)
    assert weighted.item() == pytest.approx((plcc_loss(pred, target) + 0.1 * l1_loss(pred, target)).item())
    for bad in ("huber", "plcc+", "x*plcc"):
        with pytest.raises(ValueError, match="loss must be one of"):
            resolve_loss(bad)


def test_learner_specs_set_parameters_and_refuse_what_they_cannot():
    assert parse_learner("mlp").name == "mlp"
    spec = parse_learner("temporal(hidden=64, pooling='attention', loss=\"l1+plcc+srcc\")")
    assert spec.params == (("hidden", 64), ("pooling", "attention"), ("loss", "l1+plcc+srcc"))
    assert str(spec) == "temporal(hidden=64, pooling='attention', loss='l1+plcc+srcc')"
    model = make_learner("mlp(hidden=(128,), loss='l1+plcc+srcc')").steps[-1][1]
    assert model.hidden == (128,) and model.loss == "l1+plcc+srcc"
    assert learner_entry("temporal(hidden=8)").inputs == "steps"
    assert split_learners("svr, mlp(hidden=(64, 32), loss='l1'),temporal") == [
        "svr", "mlp(hidden=(64, 32), loss='l1')", "temporal"]
    for bad, message in [("mlp(64)", "keyword values only"), ("nope", "unknown learner"),
                         ("mlp(hidden=open('x'))", "must be a literal"), ("mlp(widht=3)", "has no parameter widht"),
                         ("mlp(loss='a/b')", "must not contain '/'"), ("mlp(", "is not NAME"),
                         ("mlp(loss='huber')", "loss must be one of"),
                         ("temporal(pooling='max')", "pooling must be one of")]:
        with pytest.raises(UsageError, match=message):
            make_learner(bad)


def test_fit_on_a_device_moves_only_the_torch_heads_there():
    assert on_device("temporal(hidden=8)", "cuda") == "temporal(hidden=8, device='cuda')"
    assert on_device("mlp", "cuda:1") == "mlp(device='cuda:1')"
    assert on_device("svr", "cuda") == "svr"
    assert on_device("mlp(device='cpu')", "cuda") == "mlp(device='cpu')"  # the spec's own choice stays
    assert on_device("temporal", "cpu") == "temporal"


def test_the_engine_scores_the_head_beside_pooled_learners_and_the_final_model_predicts_steps(tmp_path):
    X, Y = sequences(n=90)
    pooled = np.concatenate([np.nanmean(X, 1), np.nanstd(X, 1)], axis=1)
    learners = ["ridge", "temporal(hidden=16, epochs=15)"]
    evaluation = engine.evaluate({"x": pooled}, Y, ["a", "b"], learners, parse_protocol("kfold:3"),
                                 steps={"x": X}, stack=True, n_jobs=1)
    assert set(evaluation.bases) == {"x/ridge", "x/temporal(hidden=16, epochs=15)"}
    final = fit_final({"x": pooled}, Y, ["a", "b"], learners, evaluation, steps={"x": X}, n_jobs=1)
    final.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.step_dims == {"x": X.shape[2]}
    np.testing.assert_allclose(loaded.predict({"x": pooled}, {"x": X}), final.predict({"x": pooled}, {"x": X}))
    with pytest.raises(Exception, match="per-step feature block 'x'"):
        loaded.predict({"x": pooled})
    with pytest.raises(Exception, match="reads per-step features"):
        engine.evaluate({"x": pooled}, Y, ["a", "b"], learners, parse_protocol("kfold:3"), n_jobs=1)
