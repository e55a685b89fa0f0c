"""Recipes: every bundled recipe validates; bad files fail naming file and field; list / show; runs.

End-to-end runs use ``--random-weights`` on a handful of tiny synthetic clips and images, with the
recipe's protocol replaced by a 2-fold one (``--protocol``: its 5- or 10-split protocol needs more
items than a test can afford to extract). The video recipes share one bank, so SlowFast runs once.
Not run end to end here, and why:

* ``rqvqa-frozen``: Q-Align needs a GPU and the ``featbank[qalign]`` extra and has no random-weights
  mode; checked structurally (its dry-run plan leaves Q-Align out, the rest stays).
* ``elasticnet-bag``: LIQE and DINOv2-B at 518 px take minutes on two CPU cores; checked structurally.

``siglip-templates`` runs with random weights and no tokenizer files: the dry-run stand-in
tokenizer (:func:`extractors.templates.hashed_words`) embeds its templates.
"""

from __future__ import annotations

import shlex
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import extractors
from featbank.cli import build_parser, main
from featbank.demo.data import synthesize
from featbank.demo.synth import write_image
from featbank.errors import UsageError
from featbank.io.submission import read_submission
from featbank.io.tracks import available as tracks
from featbank.io.tracks import load_track
from featbank.recipes import available, commands, describe, load_recipe, parse_recipe
from regressors import learner_entry, make_learner, parse_learner

QUICK = "kfold:2"
"""The protocol the end-to-end runs use instead of the recipe's (see the module docstring)."""


def recipe_text(name: str) -> str:
    return (Path(__file__).resolve().parents[1] / "recipes" / f"{name}.toml").read_text()


# ------------------------------------------------------------------------------------ structure


def test_the_brief_s_recipes_are_bundled():
    assert {"rqvqa-frozen", "simplevqa", "qa-team-av", "fiee", "clip-svr", "siglip-templates",
            "elasticnet-bag"} <= set(available())


@pytest.mark.parametrize("name", available())
def test_every_bundled_recipe_loads_and_validates(name):
    """Depends on the ``templates`` extractor and the ``temporal`` learner being registered
    (siglip-templates, elasticnet-bag; simplevqa, qa-team-av)."""
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.track in tracks()
    assert all(use.name in extractors.available() for use in recipe.extractors)
    assert {p for block in recipe.fit.features for p in block.split("+")} <= set(recipe.specs)
    assert [parse_learner(spec).name for spec in recipe.fit.learners] == [
        spec.partition("(")[0] for spec in recipe.fit.learners]
    assert 0 < recipe.source.score <= 1 and recipe.differences, "a recipe states its published score and its differences"


def test_every_bundled_learner_spec_builds_and_fits_a_tiny_problem():
    """Loss names are only read when a head trains: fit each spec once on random data shaped as
    its learner reads features (pooled vectors or per-step arrays)."""
    rng = np.random.default_rng(0)
    specs = {spec for name in available() for spec in load_recipe(name).fit.learners}
    for spec in sorted(specs):
        model = make_learner(spec)
        if "epochs" in model.named_steps["model"].get_params():
            model.set_params(model__epochs=3)  # the loss is what is checked, not the training
        steps = learner_entry(spec).inputs == "steps"
        X = rng.normal(size=(12, 3, 5) if steps else (12, 5))
        y = rng.normal(size=12)
        assert np.isfinite(model.fit(X, y).predict(X)).all(), spec


def test_a_random_weights_dry_run_of_rqvqa_leaves_out_q_align_only():
    """Q-Align needs a GPU and `featbank[qalign]`, and has no random-weights mode: checked here by
    plan, not run."""
    recipe = load_recipe("rqvqa-frozen")
    uses, blocks, left_out = recipe.dry_run_plan(random_weights=True)
    assert left_out == ["qalign"] and [u.spec for u in uses] == [s for s in recipe.specs if s != "qalign"]
    assert blocks == [recipe.fit.features[0].replace("+qalign", "")]
    assert recipe.dry_run_plan(random_weights=False) == (list(recipe.extractors), list(recipe.fit.features), [])
    assert recipe.fit.protocol == "random:10" and recipe.fit.ensemble == "mean"


# ------------------------------------------------------------------------------------ bad files

VALID = recipe_text("fiee")


@pytest.mark.parametrize("edit, field, says", [
    (lambda t: t.replace('track = "thqa"', 'track = "thqa"\ntrack_name = "x"'), "track_name", "unknown key"),
    (lambda t: t.replace('card = "winning_recipes.md A5"', 'card = "A5"\nurl = "x"'), "source.url", "unknown key"),
    (lambda t: t.replace("ensemble = \"refit\"", "ensemble = \"refit\"\nfolds = 3"), "fit.folds", "unknown key"),
    (lambda t: t.replace('learners = [\'mlp(hidden=(128,), loss="l1+plcc+srcc")\']', 'learners = ["mlpp"]'),
     "fit.learners[0]", "unknown learner 'mlpp'"),
    (lambda t: t.replace('learners = [\'mlp(hidden=(128,), loss="l1+plcc+srcc")\']', 'learners = ["mlp(3)"]'),
     "fit.learners[0]", "keyword values only"),
    (lambda t: t.replace('spec = "slowfast"', 'spec = "slowfastt"'), "extractors[0].spec",
     "extractor 'slowfastt' (slowfastt) is not available in this featbank; available: audio, clip"),
    (lambda t: t.replace('features = ["slowfast+', 'features = ["liqe+'), "fit.features[0]",
     "'liqe' is not one of the recipe's extractor specs"),
    (lambda t: t.replace('protocol = "kfold:5"', 'protocol = "folds:5"'), "fit.protocol", "unknown protocol"),
    (lambda t: t.replace('protocol = "kfold:5"', 'protocol = "random:x"'), "fit.protocol", "bad protocol"),
    (lambda t: t.replace('track = "thqa"', 'track = "thqq"'), "track", "unknown track 'thqq'"),
    (lambda t: t.replace("score = 0.7921", 'score = "high"'), "source.score", "must be a number"),
    (lambda t: t.replace("stack = false", 'stack = "no"'), "fit.stack", "must be true or false"),
    (lambda t: t.replace("[source]", "[sauce]"), "sauce", "unknown key"),
    (lambda t: t.replace('role = "motion:', 'rol = "motion:'), "extractors[0].rol", "unknown key"),
    (lambda t: t.replace('metric = "MainScore', '# metric = "MainScore'), "source.metric", "missing source.metric"),
    (lambda t: t.replace('ensemble = "refit"', 'ensemble = "median"'), "fit.ensemble", "'median' is not one of"),
])
def test_a_bad_recipe_is_refused_naming_file_and_field(tmp_path, edit, field, says):
    text = edit(VALID)
    assert text != VALID
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_recipe(path)
    message = str(error.value)
    assert message.startswith(f"recipe {path}") and field in message and says in message, message


def test_malformed_toml_and_missing_files_are_clear(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(VALID.replace('title = "FIEE', 'title = FIEE'))
    with pytest.raises(UsageError, match=rf"recipe {path} is not valid TOML: .*line 2"):
        load_recipe(path)
    with pytest.raises(UsageError, match="recipe file .*absent.toml does not exist"):
        load_recipe(tmp_path / "absent.toml")
    with pytest.raises(UsageError, match="unknown recipe 'fie'; recipes: clip-svr, "):
        load_recipe("fie")
    with pytest.raises(UsageError, match="must be lower-case"):
        parse_recipe(VALID, "Fiee", "Fiee.toml")


def test_a_recipe_naming_an_unavailable_extractor_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "face.toml"
    path.write_text(VALID.replace('spec = "timm:resnet50.tv_in1k/stages"', 'spec = "topiq:gfiqa"')
                    .replace("slowfast+timm:resnet50.tv_in1k/stages", "slowfast+topiq:gfiqa"))
    for action in (["show", str(path)], ["run", str(path), "--manifest", str(tmp_path / "m.csv")]):
        assert main(["recipe", *action]) == 2
        err = capsys.readouterr().err
        assert f"recipe {path}: extractors[1].spec: extractor 'topiq' (topiq:gfiqa) is not available" in err
        assert f"available: {', '.join(extractors.available())}" in err


# ------------------------------------------------------------------------------------ list/show


def test_recipe_list_prints_name_track_score_and_title(capsys):
    assert main(["recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "track", "score", "system"]
    assert len(lines) == 1 + len(available())
    for line, name in zip(lines[1:], available()):
        recipe = load_recipe(name)
        assert line.split()[:3] == [name, recipe.track, f"{recipe.source.score:.4f}"]
        assert line.endswith(recipe.title)


@pytest.mark.parametrize("name", ["fiee", "simplevqa", "qa-team-av", "clip-svr"])
def test_recipe_show_prints_everything_and_commands_featbank_accepts(capsys, name):
    recipe = load_recipe(name)
    assert main(["recipe", "show", name]) == 0
    out = capsys.readouterr().out
    assert out == describe(recipe) + "\n"
    flat = " ".join(out.split())  # long fields are wrapped
    texts = [recipe.title, recipe.description, recipe.source.report, *recipe.specs, *recipe.fit.learners,
             recipe.fit.protocol, *(getattr(d, f) for d in recipe.differences for f in ("published", "here",
                                                                                          "consequence"))]
    assert all(" ".join(text.split()) in flat for text in texts)
    extract, fit, predict = commands(recipe)
    assert all(line in out for line in (extract, fit, predict))
    parser = build_parser()
    extract_args = parser.parse_args(shlex.split(extract)[1:])
    assert extract_args.extractor == recipe.specs and extract_args.track == recipe.track
    fit_args = parser.parse_args(shlex.split(fit)[1:])
    assert fit_args.features == list(recipe.fit.features) and fit_args.learners == list(recipe.fit.learners)
    assert fit_args.protocol == recipe.fit.protocol and fit_args.stack == recipe.fit.stack
    assert parser.parse_args(shlex.split(predict)[1:]).track == recipe.track


# ------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """Six 1-s clips of three sources, labelled with the demo's FineVD-style dimensions, and a bank."""
    root = tmp_path_factory.mktemp("recipe_clips")
    manifest = synthesize(root / "data", n_sources=3, variants=2, seconds=1.0, size=(64, 80), fps=8, seed=0)
    return manifest, root / "bank.zarr"


def run(name: str, manifest: Path, bank: Path, out: Path, *extra: str) -> int:
    return main(["recipe", "run", name, "--manifest", str(manifest), "--bank", str(bank), "--random-weights",
                 "--protocol", QUICK, "--jobs", "1", "--out", str(out), "--no-progress", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fiee", "simplevqa", "qa-team-av", "siglip-templates"])
def test_video_recipes_run_end_to_end_with_random_weights(clips, tmp_path, capsys, name):
    """simplevqa and qa-team-av fit the ``temporal`` head on per-second features."""
    manifest, bank = clips
    recipe = load_recipe(name)
    assert run(name, manifest, bank, tmp_path, "--track", "finevd", "--test", str(manifest)) == 0
    out = capsys.readouterr().out
    assert f"under {QUICK} (track finevd)" in out and "official score of track finevd" in out
    assert (tmp_path / "fit" / "report.md").is_file() and (tmp_path / "recipe.txt").read_text() == describe(recipe) + "\n"
    scores = pd.read_csv(tmp_path / "fit" / "summary.csv")
    assert set(scores["target"]) == set(load_track("finevd").labels)
    assert all(learner in model for model in scores["model"] for learner in recipe.fit.learners)
    submitted = read_submission("finevd", tmp_path / "submission.zip")
    ids = pd.read_csv(manifest)["video_id"]
    assert sorted(submitted.index) == sorted(ids) and np.isfinite(submitted.to_numpy()).all()


@pytest.mark.slow
def test_clip_svr_runs_end_to_end_on_its_own_track(tmp_path, capsys):
    """The cheap recipe, on its default track (AI-generated images with prompts and groups)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        write_image(tmp_path / "img" / f"p{i // 2}_{i % 2}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        rows.append({"video_id": f"p{i // 2}_{i % 2}", "path": f"img/p{i // 2}_{i % 2}.png", "group": f"p{i // 2}",
                     "prompt": f"a red bicycle number {i // 2}", "mos": float(rng.uniform(1, 5))})
    manifest = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    test = tmp_path / "test.csv"
    pd.DataFrame(rows).drop(columns="mos").iloc[:4].to_csv(test, index=False)
    assert run("clip-svr", manifest, tmp_path / "bank.zarr", tmp_path / "out", "--test", str(test)) == 0
    assert "official score of track aigc_image" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "out" / "submission.zip") as archive:
        assert archive.namelist() == ["output.txt"]
    submitted = read_submission("aigc_image", tmp_path / "out" / "submission.zip")
    assert list(submitted.index) == [r["video_id"] for r in rows[:4]]


def test_a_run_checks_the_manifest_against_the_track_before_extracting(clips, tmp_path, capsys):
    manifest, _ = clips
    assert run("fiee", manifest, tmp_path / "bank.zarr", tmp_path / "out") == 2  # demo labels, not THQA's mos
    assert "does not fit track thqa" in capsys.readouterr().err
    assert not (tmp_path / "bank.zarr").exists() and not (tmp_path / "out").exists()
