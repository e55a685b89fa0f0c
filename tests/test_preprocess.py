"""Preprocessing fitted inside each fold: the median imputer, and ``--reduce pca:N``, a PCA fitted
inside each fit's training part, shared by learners and targets.

The engine's out-of-fold predictions are recomputed by hand with ``make_learner(..., reduce=)``
pipelines fitted on each training part alone, so a PCA fitted on rows it should not see (the
scored fold) would show up as a numerical mismatch; the saved model must carry the projection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featbank.errors import UsageError
from featbank.learning.engine import evaluate
from featbank.learning.ensemble import FittedEnsemble, fit_final
from featbank.learning.protocols import KFoldProtocol, fold_ids
from regressors import (
    fit_targets,
    load_learner,
    make_learner,
    predict_targets,
    prepare,
    save_learner,
)
from regressors.preprocess import FoldPCA, MedianImputer, parse_reduce

N, D, K, SEED = 80, 24, 4, 5


def wide_problem(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rank-3 signal spread over ``d`` noisy columns, two nonlinear targets, a few NaN."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    X = factors @ rng.normal(size=(3, d)) + 0.5 * rng.normal(size=(n, d))
    X[rng.random(X.shape) < 0.02] = np.nan
    Y = np.column_stack([np.tanh(factors[:, 0]) + factors[:, 1], factors[:, 2] ** 2])
    return X, Y + 0.1 * rng.normal(size=Y.shape)


def test_median_imputer_fills_as_scikit_learns_median_imputer() -> None:
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 7))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = np.nan  # a column without any value becomes zeros, and stays
    X[:, 5] = np.round(X[:, 5])  # ties, and an even count of values
    X[0, 5] = np.nan
    test = rng.normal(size=(10, 7))
    test[rng.random(test.shape) < 0.3] = np.nan
    ours = MedianImputer().fit(X)
    theirs = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    np.testing.assert_array_equal(ours.statistics_, theirs.statistics_)
    np.testing.assert_array_equal(ours.transform(test), theirs.transform(test))
    assert not np.isnan(test[~np.isnan(test)]).any() and np.isnan(test).any()  # its input is left as it was
    clean = rng.normal(size=(9, 4))
    np.testing.assert_array_equal(MedianImputer().fit(clean).statistics_, np.median(clean, axis=0))


@pytest.mark.parametrize("estimator", [MedianImputer(), FoldPCA(2)], ids=["MedianImputer", "FoldPCA"])
def test_preprocessing_steps_pass_scikit_learns_estimator_checks(estimator) -> None:
    from sklearn.utils.estimator_checks import check_estimator

    failed = [r for r in check_estimator(estimator, on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:200]) for r in failed]


def test_median_imputer_refuses_infinite_values() -> None:
    X = np.ones((5, 2))
    X[1, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        MedianImputer().fit(X)


@pytest.mark.parametrize(("spec", "expected"), [(None, None), ("none", None), ("pca:8", 8), (" pca:128 ", 128)])
def test_parse_reduce_reads_components(spec, expected) -> None:
    assert parse_reduce(spec) == expected


@pytest.mark.parametrize("spec", ["pca", "pca:0", "pca:-3", "svd:8", "pca:8.5", "umap:2"])
def test_parse_reduce_refuses_what_it_cannot_do(spec: str) -> None:
    with pytest.raises(UsageError, match="pca:N"):
        parse_reduce(spec)


def test_fold_pca_projects_wide_blocks_and_passes_narrow_ones() -> None:
    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(size=(30, 12)), rng.normal(size=(30, 5))
    assert FoldPCA(5).fit(wide).transform(wide).shape == (30, 5)
    np.testing.assert_array_equal(FoldPCA(5).fit(narrow).transform(narrow), narrow)
    assert FoldPCA(50).fit(wide[:8]).transform(wide).shape == (30, 8)  # never more components than rows


def test_make_learner_puts_the_reduction_between_scaler_and_model() -> None:
    assert [name for name, _ in make_learner("svr", reduce="pca:4").steps] == ["impute", "scale", "reduce", "model"]
    assert [name for name, _ in make_learner("svr").steps] == ["impute", "scale", "model"]
    temporal = make_learner("temporal", reduce="pca:4")  # per-step heads read their input unreduced
    assert [name for name, _ in temporal.steps] == ["impute", "scale", "model"]


def test_one_preparation_shared_by_learners_equals_each_pipeline_alone() -> None:
    X, Y = wide_problem()
    prepared = prepare("ridge", X[:60], random_state=3, reduce="pca:6")
    for learner in ("ridge", "svr", "elasticnet"):
        shared = fit_targets(learner, X[:60], Y[:60], random_state=3, prepared=prepared)
        for j, model in enumerate(shared):
            alone = make_learner(learner, random_state=3, reduce="pca:6").fit(X[:60], Y[:60, j])
            np.testing.assert_allclose(model.predict(X[60:]), alone.predict(X[60:]), rtol=1e-10, atol=1e-10)


def test_reduced_learner_survives_save_and_load(tmp_path: Path) -> None:
    X, Y = wide_problem()
    model = make_learner("svr", reduce="pca:6").fit(X, Y[:, 0])
    save_learner(model, tmp_path / "svr.skops")
    np.testing.assert_array_equal(load_learner(tmp_path / "svr.skops").predict(X), model.predict(X))


def test_engine_with_reduce_equals_pipelines_fitted_without_each_fold_by_hand() -> None:
    X, Y = wide_problem()
    result = evaluate({"wide": X}, Y, ["a", "b"], ["ridge", "svr"], KFoldProtocol(K, 1, seed=SEED), stack=False,
                      n_jobs=1, reduce="pca:6")
    assert result.reduce == "pca:6" and "pca:6" in result.describe()
    folds = fold_ids(N, K, 1, seed=SEED)[0]
    oof = result.predictions
    for learner in ("ridge", "svr"):
        for t, target in enumerate(("a", "b")):
            expected = np.empty(N)
            for f in range(K):
                test = folds == f
                pipeline = make_learner(learner, random_state=SEED, reduce="pca:6").fit(X[~test], Y[~test, t])
                expected[test] = pipeline.predict(X[test])
            part = oof[(oof["model"] == f"wide/{learner}") & (oof["target"] == target)].sort_values("sample")
            np.testing.assert_allclose(part["y_pred"].to_numpy(), expected, rtol=1e-8, atol=1e-8)


def test_reduced_stack_refits_and_predicts_with_the_projection_it_was_scored_with(tmp_path: Path) -> None:
    X, Y = wide_problem()
    blocks = {"wide": X, "narrow": X[:, :3]}
    result = evaluate(blocks, Y, ["a", "b"], ["ridge", "svr"], KFoldProtocol(K, 1, seed=SEED), n_jobs=1,
                      reduce="pca:6")
    final = fit_final(blocks, Y, ["a", "b"], ["ridge", "svr"], result)
    reducers = {base: dict(model.steps)["reduce"] for base, model in final.models["a"].items()}
    assert reducers and all(r.pca_ is not None for b, r in reducers.items() if b.startswith("wide/"))
    assert all(r.pca_ is None for b, r in reducers.items() if b.startswith("narrow/"))  # 3 columns: unchanged
    final.save(tmp_path / "model")
    np.testing.assert_allclose(FittedEnsemble.load(tmp_path / "model").predict(blocks), final.predict(blocks))


def test_predict_targets_accepts_inputs_already_prepared() -> None:
    X, Y = wide_problem()
    prepared = prepare("svr", X[:60], reduce="pca:5")
    models = fit_targets("svr", X[:60], Y[:60], prepared=prepared)
    from sklearn.pipeline import Pipeline

    Z = Pipeline(prepared.steps).transform(X[60:])
    np.testing.assert_array_equal(predict_targets(models, X[60:], Z=Z), predict_targets(models, X[60:]))


def test_cli_fit_with_reduce_and_ring_stack_records_both_and_predicts_with_the_projection(tmp_path, capsys) -> None:
    import json

    import pandas as pd

    from featbank.cli import main
    from featbank.learning.ensemble import load_model

    X, Y = wide_problem(n=60)
    ids = [f"clip{i:02d}" for i in range(60)]
    pd.DataFrame(X, columns=[f"c{j}" for j in range(D)]).assign(id=ids, mos=Y[:, 0]).to_csv(
        tmp_path / "t.csv", index=False)
    bank = str(tmp_path / "b.zarr")
    assert main(["import", "--features", str(tmp_path / "t.csv"), "--labels", str(tmp_path / "t.csv"),
                 "--id-column", "id", "--label-columns", "mos", "--name", "wide", "--bank", bank,
                 "--manifest-out", str(tmp_path / "m.csv")]) == 0
    fit = ["fit", "--manifest", str(tmp_path / "m.csv"), "--features", "wide", "--bank", bank, "--learners",
           "ridge,svr", "--folds", "5", "--stack", "--no-progress", "--jobs", "1"]
    assert main([*fit, "--reduce", "svd:3", "--out", str(tmp_path / "bad")]) == 2
    assert "pca:N" in capsys.readouterr().err and not (tmp_path / "bad").exists()  # refused before any fit
    assert main([*fit, "--reduce", "pca:4", "--stack-mode", "ring", "--out", str(tmp_path / "fit")]) == 0
    run = json.loads((tmp_path / "fit" / "run.json").read_text())
    assert run["reduce"] == "pca:4" and run["stack_mode"] == "ring"
    assert "pca:4" in (tmp_path / "fit" / "report.md").read_text()
    model = load_model(tmp_path / "fit" / "model")
    pipelines = [p for per_target in model.models.values() for p in per_target.values()]
    assert pipelines and all(dict(p.steps)["reduce"].pca_.n_components_ == 4 for p in pipelines)
    assert main(["predict", "--manifest", str(tmp_path / "m.csv"), "--model", str(tmp_path / "fit" / "model"),
                 "--bank", bank, "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    assert pd.read_csv(tmp_path / "p.csv").shape[0] == 60
