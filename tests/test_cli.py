"""The command line end to end on a tiny synthesized track: extract → info/validate → fit → predict.

Runs ``featbank.cli.main`` in-process (what the console script calls) and checks exit codes, the
files each command promises, and that bad input is reported with the documented exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featbank.cli import main
from featbank.demo.data import synthesize
from featbank.learning.protocols import load_rounds

FAST = ["--learners", "ridge,svr", "--jobs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def track(tmp_path_factory) -> Path:
    """Five sources × three variants of 2-s clips with audio, plus one corrupt file."""
    root = tmp_path_factory.mktemp("track")
    manifest = synthesize(root, n_sources=5, variants=3, seconds=2, size=(64, 80), fps=10, seed=3)
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x01" * 2000)
    table = pd.read_csv(manifest)
    bad_row = table.iloc[[0]].assign(video_id="corrupt", path="videos/corrupt.mp4")
    pd.concat([table, bad_row]).to_csv(root / "with_corrupt.csv", index=False)
    return root


@pytest.fixture(scope="module")
def extracted(track, tmp_path_factory) -> Path:
    bank = tmp_path_factory.mktemp("bank") / "bank.zarr"
    code = main(["extract", "--manifest", str(track / "with_corrupt.csv"), "--extractor", "handcrafted,audio",
                 "--bank", str(bank), "--no-progress"])
    assert code == 6, "a corrupt item must not stop the run, but must show in the exit code"
    return bank


def test_extract_reports_failures_and_resumes_without_work(track, extracted, capsys):
    code = main(["extract", "--manifest", str(track / "manifest.csv"), "--extractor", "handcrafted",
                 "--bank", str(extracted), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "15 items, 15 already complete" in out


def test_info_lists_contents_and_failures(extracted, capsys):
    assert main(["info", "--bank", str(extracted), "--json", "--failures"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 16
    failures = summary["failures"]
    assert {rec["video_id"] for recs in failures.values() for rec in recs.values()} == {"corrupt"}
    assert main(["info", "--bank", str(extracted), "--failures"]) == 0
    assert "FAILED" in capsys.readouterr().out


def test_validate_accepts_a_good_bank_and_rejects_a_missing_one(extracted, tmp_path, capsys):
    assert main(["validate", "--bank", str(extracted)]) == 0
    assert main(["validate", "--bank", str(tmp_path / "nothing.zarr")]) == 3
    assert "error" in capsys.readouterr().err


def test_fit_then_predict_writes_models_reports_and_a_submission(track, extracted, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["fit", "--manifest", str(track / "with_corrupt.csv"), "--features", "handcrafted,audio",
                 "--targets", "blur,overall", "--bank", str(extracted), "--stack", "--folds", "5",
                 "--out", str(run), *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 item(s) left out because extraction failed (e.g. corrupt" in out
    assert "protocol `kfold:5x1`: 5-fold cross-validation" in out and "grouped by `group`" in out
    for name in ("predictions.csv", "scores.csv", "summary.csv", "splits.npz", "run.json", "report.md",
                 "model/ensemble.json"):
        assert (run / name).is_file(), name
    oof = pd.read_csv(run / "predictions.csv")
    assert set(oof["target"]) == {"blur", "overall"} and "stack" in set(oof["model"])
    assert set(oof["video_id"]) == set(pd.read_csv(track / "manifest.csv")["video_id"])
    # grouped folds: every source sits in exactly one fold
    assert (oof.assign(src=oof["video_id"].str[:5]).groupby("src")["fold"].nunique() == 1).all()
    assert {p.name for p in run.glob("*.png")} == {"main_score.png", "scatter_blur.png", "scatter_overall.png"}

    submission = tmp_path / "sub.csv"
    args = ["predict", "--manifest", str(track / "with_corrupt.csv"), "--model", str(run / "model"),
            "--out", str(submission), "--bank", str(extracted), "--no-progress"]
    capsys.readouterr()
    assert main(args) == 6, "an unscorable item stops the submission: it must never go out with a hole"
    assert "1 item(s) have no features, so no prediction: corrupt" in capsys.readouterr().err
    assert not submission.exists()
    assert main([*args, "--fill-missing", "median"]) == 6  # written, filled on request, still flagged
    assert "filled by the median prediction: corrupt" in capsys.readouterr().err
    preds = pd.read_csv(submission)
    assert list(preds.columns) == ["video_id", "blur", "overall"] and len(preds) == 16
    filled = preds.set_index("video_id").loc["corrupt"]
    others = preds.set_index("video_id").drop(index="corrupt")
    np.testing.assert_allclose(filled.to_numpy(float), others.median().to_numpy(float))


def test_predict_extracts_missing_features_for_new_items(track, extracted, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--targets", "temporal", "--bank", str(extracted), "--out", str(run), *FAST]) == 0
    fresh = tmp_path / "fresh"
    manifest = synthesize(fresh, n_sources=1, variants=2, seconds=2, size=(64, 80), fps=10, seed=9)
    bank_copy = tmp_path / "bank.zarr"
    shutil.copytree(extracted, bank_copy)
    assert main(["predict", "--manifest", str(manifest), "--model", str(run / "model"),
                 "--out", str(tmp_path / "p.csv"), "--bank", str(bank_copy), "--no-progress"]) == 0
    assert pd.read_csv(tmp_path / "p.csv")["temporal"].notna().all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.assign(blur=[np.nan] + list(t["blur"][1:])), "label 'blur' is non-numeric or NaN at line(s) 2"),
        (lambda t: pd.concat([t, t.iloc[[0]]]), "duplicate video_id"),
        (lambda t: t.assign(path=["../escape.mp4"] + list(t["path"][1:])), "escapes the manifest root"),
        (lambda t: t.assign(path=["videos/absent.mp4"] + list(t["path"][1:])), "file not found"),
    ],
)
def test_malformed_manifest_exits_2_before_any_work(track, tmp_path, capsys, edit, message):
    bad = track / f"bad_{abs(hash(message))}.csv"
    edit(pd.read_csv(track / "manifest.csv")).to_csv(bad, index=False)
    bank = tmp_path / "bank.zarr"
    assert main(["extract", "--manifest", str(bad), "--extractor", "handcrafted", "--bank", str(bank)]) == 2
    assert message in capsys.readouterr().err
    assert not bank.exists(), "nothing is written for an invalid manifest"


def test_unknown_extractor_and_learner_are_usage_errors(track, extracted, tmp_path, capsys):
    assert main(["extract", "--manifest", str(track / "manifest.csv"), "--extractor", "nope",
                 "--bank", str(tmp_path / "b.zarr")]) == 2
    assert "unknown extractor 'nope'" in capsys.readouterr().err
    assert main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--bank", str(extracted), "--learners", "xgb", "--out", str(tmp_path / "r")]) == 2
    assert "unknown learner 'xgb'" in capsys.readouterr().err


def test_fit_on_features_never_extracted_names_the_missing_group(track, extracted, tmp_path, capsys):
    code = main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "test-mean",
                 "--bank", str(extracted), "--out", str(tmp_path / "r"), *FAST])
    assert code in (1, 3) and "test-mean" in capsys.readouterr().err


def test_demo_refuses_a_halo_outside_0_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--halo", "1.5"])
    assert exit_info.value.code == 2 and "--halo" in capsys.readouterr().err


def test_help_teaches_the_workflow(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "typical session" in out and "exit codes" in out


def test_deep_extractor_without_its_checkpoint_exits_4_naming_file_and_source(track, tmp_path, capsys):
    code = main(["extract", "--manifest", str(track / "manifest.csv"), "--extractor", "slowfast",
                 "--bank", str(tmp_path / "b.zarr"), "--weights-dir", str(tmp_path), "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 4 and "SLOWFAST_8x8_R50.pyth" in err and "dl.fbaipublicfiles.com" in err
    assert not (tmp_path / "b.zarr").exists()  # refused before any bank write or decoding


def test_status_counts_a_manifests_items_including_unregistered_ones(track, extracted, tmp_path, capsys):
    assert main(["status", "--bank", str(extracted), "--manifest", str(track / "with_corrupt.csv"),
                 "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert {k.split("@")[0]: v for k, v in groups.items()}["handcrafted"] == \
        {"pending": 0, "ok": 15, "failed": 1, "absent": 0}
    fresh = synthesize(tmp_path / "fresh", n_sources=1, variants=2, seconds=1, size=(32, 32), fps=10, seed=5)
    assert main(["status", "--bank", str(extracted), "--manifest", str(fresh)]) == 0
    assert "2 pending" in capsys.readouterr().out


def test_workers_0_extracts_in_process(track, tmp_path, capsys):
    bank = tmp_path / "b.zarr"
    assert main(["extract", "--manifest", str(track / "manifest.csv"), "--extractor", "handcrafted",
                 "--bank", str(bank), "--workers", "0", "--no-progress"]) == 0
    assert "15 items, 0 already complete" in capsys.readouterr().out


def test_evaluate_saves_splits_and_scores_bases_and_stack_side_by_side(track, extracted, tmp_path, capsys):
    run = tmp_path / "eval"
    code = main(["evaluate", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--targets", "temporal", "--protocol", "kfold:3x2", "--stack", "--bank", str(extracted),
                 "--out", str(run), *FAST])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "median ± std over rounds" in out and "handcrafted/ridge" in out  # readable names
    summary = pd.read_csv(run / "summary.csv")
    assert sorted(m.split("@")[0] + "/" + m.split("/")[-1] if "/" in m else m for m in summary["model"]) == \
        ["handcrafted/ridge", "handcrafted/svr", "stack"]
    assert (summary["rounds"] == 2).all()  # 2 repeats of 3 folds
    assert json.loads((run / "run.json").read_text())["splits"] == 6
    ids = pd.read_csv(track / "manifest.csv")["group"].to_numpy()
    protocol = load_rounds(run / "splits.npz")
    for train, test in protocol.split(np.empty(len(ids))):  # grouped: no source on both sides of a split
        assert not set(ids[train]) & set(ids[test])
    assert "# featbank evaluate report" in (run / "report.md").read_text()


def test_fit_on_random_splits_with_a_joined_block_then_predict(track, extracted, tmp_path, capsys):
    run = tmp_path / "random"
    code = main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted+audio,audio",
                 "--targets", "overall", "--protocol", "random:3:0.6", "--stack", "--bank", str(extracted),
                 "--out", str(run), *FAST])
    assert code == 0, capsys.readouterr().err
    summary = pd.read_csv(run / "summary.csv")
    joined = [m for m in summary["model"] if "+" in m]
    assert len(joined) == 2 and all(m.startswith("handcrafted@") and "+audio@" in m for m in joined)
    assert (summary["rounds"] == 3).all()
    ensemble = json.loads((run / "model" / "ensemble.json").read_text())
    dims = ensemble["blocks"]
    joined_key = next(k for k in dims if "+" in k)
    audio_key = next(k for k in dims if "+" not in k)
    assert joined_key.endswith("+" + audio_key) and dims[joined_key] > dims[audio_key]  # audio's columns and more
    submission = tmp_path / "sub.csv"
    assert main(["predict", "--manifest", str(track / "manifest.csv"), "--model", str(run / "model"),
                 "--out", str(submission), "--bank", str(extracted), "--no-progress"]) == 0
    assert np.isfinite(pd.read_csv(submission)["overall"]).all()


def test_the_temporal_head_fits_per_step_features_of_a_joined_block_then_predicts(track, extracted, tmp_path,
                                                                                   capsys):
    """``temporal`` reads each block per step (hand-crafted steps and audio seconds on one time grid)
    beside a pooled learner, is stacked with it, saved and used by ``predict``."""
    run = tmp_path / "temporal"
    code = main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted+audio",
                 "--targets", "temporal,overall", "--protocol", "kfold:3", "--stack", "--bank", str(extracted),
                 "--out", str(run), "--learners", "ridge,temporal(hidden=16, epochs=20, loss='l1+plcc')",
                 "--jobs", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = pd.read_csv(run / "summary.csv")
    assert {m.rsplit("/", 1)[-1] for m in summary["model"]} == {
        "ridge", "temporal(hidden=16, epochs=20, loss='l1+plcc')", "stack"}
    ensemble = json.loads((run / "model" / "ensemble.json").read_text())
    (joined, width), = ensemble["step_blocks"].items()
    assert "+" in joined and width == ensemble["blocks"][joined] // 2  # pooled is mean and std of the steps
    submission = tmp_path / "sub.csv"
    assert main(["predict", "--manifest", str(track / "manifest.csv"), "--model", str(run / "model"),
                 "--out", str(submission), "--bank", str(extracted), "--no-progress"]) == 0
    assert np.isfinite(pd.read_csv(submission)[["temporal", "overall"]].to_numpy()).all()


def test_protocol_and_folds_together_are_a_usage_error(track, extracted, tmp_path, capsys):
    assert main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--protocol", "kfold:3", "--folds", "4", "--bank", str(extracted),
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "either --protocol or --folds" in capsys.readouterr().err


def test_evaluate_holdout_and_bad_protocols(track, extracted, tmp_path, capsys):
    run = tmp_path / "holdout"
    assert main(["evaluate", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--targets", "blur", "--protocol", "holdout:meta_level_stutter=0", "--bank", str(extracted),
                 "--out", str(run), *FAST]) == 0
    scores = pd.read_csv(run / "scores.csv")
    table = pd.read_csv(track / "manifest.csv")
    held_out = int((table["meta_level_stutter"] != 0).sum())
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(scores) == 2 and len(predictions) == 2 * held_out
    for spec in ("nope", "holdout:missing=1", "kfold:x"):
        assert main(["evaluate", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                     "--protocol", spec, "--bank", str(extracted), "--out", str(tmp_path / "x"), *FAST]) == 2
        assert "protocol" in capsys.readouterr().err or spec.startswith("holdout:missing")


REPO = Path(__file__).resolve().parents[1]


def _prepared_venv() -> bool:
    """run.sh would (re)install the venv when its stamp is stale: too slow, and networked, for a test."""
    stamp = REPO / ".venv" / ".featbank-installed"
    if not stamp.is_file():
        return False
    want = subprocess.run("cat setup.cfg pyproject.toml | sha256sum | cut -c1-16", shell=True, cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.strip()
    return stamp.read_text().strip() == want


@pytest.mark.skipif(not _prepared_venv(), reason="run.sh needs a prepared .venv (./run.sh once)")
def test_run_sh_keeps_relative_paths_and_the_default_bank_in_the_callers_folder(tmp_path):
    np.save(tmp_path / "f.npy", np.arange(24, dtype=np.float32).reshape(6, 4))
    pd.DataFrame({"id": list("abcdef"), "mos": np.linspace(1, 5, 6)}).to_csv(tmp_path / "l.csv", index=False)
    env = {k: v for k, v in os.environ.items() if k not in ("FEATBANK_BANK", "FEATBANK_VENV")}
    run_sh = str(REPO / "run.sh")
    imported = subprocess.run([run_sh, "featbank", "import", "--features", "f.npy", "--labels", "l.csv",
                               "--id-column", "id", "--name", "tiny", "--manifest-out", "m.csv"],
                              cwd=tmp_path, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "featbank.zarr").is_dir() and (tmp_path / "m.csv").is_file()
    assert not (REPO / "m.csv").exists()
    checked = subprocess.run([run_sh, "featbank", "check", "--manifest", "m.csv"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "6 items" in checked.stdout, checked.stderr


def _with_mos(track: Path, out: Path) -> Path:
    """The demo manifest with KVQ's label column (`mos`, here the demo's overall score)."""
    table = pd.read_csv(track / "manifest.csv")
    table.assign(mos=table["overall"]).to_csv(out, index=False)
    return out


def test_fit_and_evaluate_with_a_track_print_its_official_score_first(track, extracted, tmp_path, capsys):
    manifest = _with_mos(track, track / "kvq.csv")
    for command in ("fit", "evaluate"):
        run = tmp_path / command
        code = main([command, "--manifest", str(manifest), "--features", "handcrafted", "--track", "kvq",
                     "--protocol", "kfold:3", "--stack", "--bank", str(extracted), "--out", str(run), *FAST])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert out.index("official score of track kvq: kvq_final") < out.index("== mos")
        official = pd.read_csv(run / "official.csv")
        parts = official[official["target"] == "mos"].set_index("model")
        total = official[official["target"] == "kvq_final"].set_index("model")["score"]
        for model, row in parts.iterrows():  # the leaderboard formula, from its own parts
            assert total[model] == pytest.approx(0.45 * row["srocc"] + 0.45 * row["plcc"] + 0.05 * row["rank1"]
                                                 + 0.05 * row["rank2"])
        assert {"rank1", "rank2"} <= set(pd.read_csv(run / "official_summary.csv").columns)
        assert "official score of track kvq" in (run / "report.md").read_text()


def test_finevd_track_reports_the_mean_of_six_dimensions_and_needs_all_six(track, extracted, tmp_path, capsys):
    run = tmp_path / "finevd"
    assert main(["evaluate", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--track", "finevd", "--protocol", "kfold:3", "--bank", str(extracted), "--out", str(run),
                 *FAST]) == 0
    official = pd.read_csv(run / "official.csv")
    for model, part in official.groupby("model"):
        dims = part[part["target"] != "xgc_ugc"]
        assert len(dims) == 6
        assert part[part["target"] == "xgc_ugc"]["score"].iloc[0] == pytest.approx(dims["score"].mean())
    capsys.readouterr()
    assert main(["evaluate", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted",
                 "--track", "finevd", "--targets", "blur", "--protocol", "kfold:3", "--bank", str(extracted),
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "needs predictions of color, noise" in capsys.readouterr().err


def test_ensemble_mean_of_random_splits_predicts_the_members_mean_with_spread(track, extracted, tmp_path, capsys):
    run = tmp_path / "mean"
    assert main(["fit", "--manifest", str(track / "manifest.csv"), "--features", "handcrafted", "--targets",
                 "blur", "--protocol", "random:4:0.7", "--ensemble", "mean", "--stack", "--bank", str(extracted),
                 "--out", str(run), *FAST]) == 0
    description = json.loads((run / "model" / "ensemble.json").read_text())
    assert description["kind"] == "mean" and len(description["members"]) == 4
    submission = tmp_path / "sub.csv"
    assert main(["predict", "--manifest", str(track / "manifest.csv"), "--model", str(run / "model"),
                 "--out", str(submission), "--bank", str(extracted), "--no-progress"]) == 0
    from featbank.learning.ensemble import FittedEnsemble
    from featbank.learning.workflow import training_data

    data = training_data(track / "manifest.csv", extracted, ["handcrafted"], ["blur"])
    members = [FittedEnsemble.load(run / "model" / name).predict(data.blocks)["blur"].to_numpy()
               for name in description["members"]]
    preds = pd.read_csv(submission)
    np.testing.assert_allclose(preds["blur"], np.mean(members, axis=0), rtol=1e-9)
    spread = pd.read_csv(submission.with_name("sub.csv.spread.csv"))
    np.testing.assert_allclose(spread["blur"], np.std(members, axis=0), rtol=1e-9, atol=1e-12)


def test_predict_with_a_track_writes_the_organisers_layout(track, extracted, tmp_path, capsys):
    from featbank.io.submission import read_submission

    run = tmp_path / "thqa"
    manifest = track / "thqa.csv"
    table = pd.read_csv(track / "manifest.csv")
    table[["video_id", "path", "group"]].assign(mos=table["overall"]).to_csv(manifest, index=False)
    assert main(["fit", "--manifest", str(manifest), "--features", "handcrafted", "--targets", "mos",
                 "--protocol", "kfold:3", "--bank", str(extracted), "--out", str(run), *FAST]) == 0
    zipped = tmp_path / "submission.zip"
    assert main(["predict", "--manifest", str(manifest), "--model", str(run / "model"), "--track", "thqa",
                 "--out", str(zipped), "--bank", str(extracted), "--no-progress"]) == 0
    back = read_submission("thqa", zipped)
    assert len(back) == len(table)
