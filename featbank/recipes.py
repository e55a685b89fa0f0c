"""Seed systems by name: a *recipe* says which extractors, feature blocks, learners and protocol
rebuild one published challenge system from featbank's frozen parts, and how featbank's version
differs from it.

Each recipe is one small TOML file in the top-level ``recipes`` package (shipped as data, as the
track files are), named by its file (``recipes/fiee.toml`` is ``fiee``). Loading checks it
against the frozen dataclasses below and against featbank's own tables (tracks, extractor names,
learner specs, protocols) and refuses unknown keys, so a typo fails at once, naming the file and
the field, instead of after hours of extraction. ``featbank recipe list / show / run`` and
:func:`run_recipe` read them; running one is ``featbank extract`` then ``featbank fit`` (and
``featbank predict`` for a test manifest) with the recipe's settings, through the same entry points.

A recipe file::

    title = "one line for `featbank recipe list`"
    track = "thqa"                          # default track (labels, official score, submission layout)
    description = "what the system is, in a few sentences"

    [source]                                # where it is published and what it scored
    system = "FIEE (FocusQ)"
    result = "NTIRE 2025 XGC talking heads, rank 6"
    score = 0.7921
    metric = "MainScore"
    card = "winning_recipes.md A5"
    report = "000_ba8e3311d2328f8f.txt §1.3.6"

    [[extractors]]                          # one table per extractor, specs as `featbank extract` takes them
    spec = "slowfast"
    role = "what it stands for in the published system"
    # random_weights = false                # it has no random-weights mode: --random-weights runs leave it out

    [fit]
    features = ["slowfast+timm:resnet50.tv_in1k/stages"]   # blocks of declared specs; A+B joins
    learners = ['mlp(hidden=(128,), loss="l1+plcc+srcc")']
    protocol = "kfold:5"
    stack = false
    ensemble = "refit"                      # or "mean": the split models' average

    [[differences]]                         # honest notes: where featbank's version differs
    published = "..."
    here = "..."
    consequence = "..."
"""

from __future__ import annotations

import re
import shlex
import textwrap
import tomllib
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import extractors
from featbank.errors import FeatbankError, UsageError

if TYPE_CHECKING:
    from featbank.extraction.orchestrate import ExtractReport
    from featbank.extraction.weights import WeightsPolicy
    from featbank.io.tracks import Track
    from featbank.learning.workflow import Outcome

SUFFIX = ".toml"
JOIN = "+"  # as featbank.learning.blocks.JOIN; not imported from there, which loads the bank modules
ENSEMBLES = ("refit", "mean")
"""The final-model modes of :func:`featbank.learning.ensemble.fit_final`."""
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


# --------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Source:
    """The published system a recipe rebuilds: who, where it placed, its score, where it is described."""

    system: str
    result: str
    """Challenge, track and rank, e.g. "NTIRE 2024 short-form UGC VQA (KVQ), rank 1"."""
    score: float
    """The published leaderboard score."""
    metric: str
    """What ``score`` measures (the leaderboard's formula)."""
    card: str
    """The recipe card in shared/docs/winning_recipes.md."""
    report: str
    """The challenge report (seed file and section)."""


@dataclass(frozen=True)
class ExtractorUse:
    """One extractor of a recipe: a spec ``featbank extract --extractor`` takes, and its role."""

    spec: str
    role: str
    random_weights: bool = True
    """False for an extractor without a random-weights mode (Q-Align): a ``--random-weights`` dry
    run leaves it out of extraction and of the feature blocks, and says so."""

    @property
    def name(self) -> str:
        return self.spec.partition(":")[0].strip()


@dataclass(frozen=True)
class FitPlan:
    """How the banked features are regressed: ``featbank fit`` options."""

    features: tuple[str, ...]
    """Feature blocks over the recipe's extractor specs; ``A+B`` joins groups into one matrix."""
    learners: tuple[str, ...]
    """Learner specs, ``name`` or ``name(key=value, ...)`` (:mod:`regressors.spec`)."""
    protocol: str
    """A protocol spec of :data:`featbank.learning.protocols.PROTOCOLS`."""
    stack: bool = False
    ensemble: str = "refit"
    """``refit`` on every row, or the ``mean`` of the protocol's split models."""


@dataclass(frozen=True)
class Difference:
    """One place where featbank's version differs from the published system, and what it costs."""

    published: str
    here: str
    consequence: str


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (see the module docstring for the file format)."""

    name: str
    path: str
    title: str
    track: str
    description: str
    source: Source
    extractors: tuple[ExtractorUse, ...]
    fit: FitPlan
    differences: tuple[Difference, ...] = ()

    @property
    def specs(self) -> list[str]:
        return [use.spec for use in self.extractors]

    def dry_run_plan(self, random_weights: bool) -> tuple[list[ExtractorUse], list[str], list[str]]:
        """The extractors and feature blocks a run uses, and the specs it leaves out.

        Only a random-weights run leaves anything out: the extractors that have no random-weights
        mode, their parts of joined blocks, and blocks made of nothing else.
        """
        left_out = [u.spec for u in self.extractors if random_weights and not u.random_weights]
        uses = [u for u in self.extractors if u.spec not in left_out]
        blocks = [JOIN.join(p for p in _parts(block) if p not in left_out) for block in self.fit.features]
        return uses, [b for b in blocks if b], left_out


def _parts(block: str) -> list[str]:
    return [p.strip() for p in block.split(JOIN)]


def _origin(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _convert(value: Any, kind: Any, where: str, file: str) -> Any:
    """``value`` read from TOML as the annotated ``kind``, or a UsageError naming file and field."""
    def refuse(expected: str) -> typing.NoReturn:
        raise UsageError(f"recipe {file}: {where} must be {expected}, not {type(value).__name__} {value!r}")

    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            refuse("a list")
        item = typing.get_args(kind)[0]
        return tuple(_convert(v, item, f"{where}[{i}]", file) for i, v in enumerate(value))
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        if not isinstance(value, dict):
            refuse("a table")
        return _build(kind, value, where, file)
    if kind is bool:
        return value if isinstance(value, bool) else refuse("true or false")
    if kind is float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else refuse("a number")
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            refuse("a non-empty string")
        return value.strip()
    raise TypeError(f"recipe schema: no conversion for {kind!r}")  # a field type this module does not read


def _build(cls: type, table: dict, where: str, file: str, **given: Any) -> Any:
    """A ``cls`` from a TOML table: every required key present, no unknown key, each value typed."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.name not in given]
    unknown = [k for k in table if k not in names]
    if unknown:
        raise UsageError(f"recipe {file}: unknown key{'s' * (len(unknown) > 1)} "
                         f"{', '.join(_origin(where, k) for k in unknown)}; "
                         f"{'the top level' if not where else where} takes {', '.join(names)}")
    values = dict(given)
    for f in fields(cls):
        if f.name in given:
            continue
        if f.name not in table:
            if f.default is MISSING:
                raise UsageError(f"recipe {file}: missing {_origin(where, f.name)}")
            continue
        values[f.name] = _convert(table[f.name], hints[f.name], _origin(where, f.name), file)
    return cls(**values)


# ---------------------------------------------------------------------------------- validation


def _check(recipe: Recipe) -> None:
    """What the schema cannot say: names that must exist in featbank's tables, blocks over
    declared specs. Cheap: nothing here imports torch, scikit-learn or an extractor module."""
    from featbank.io.tracks import available as tracks
    from regressors.spec import parse_learner

    file = recipe.path

    def refuse(where: str, message: str) -> typing.NoReturn:
        raise UsageError(f"recipe {file}: {where}: {message}")

    if recipe.track not in tracks():
        refuse("track", f"unknown track {recipe.track!r}; tracks: {', '.join(tracks())}")
    seen: set[str] = set()
    for i, use in enumerate(recipe.extractors):
        if use.name not in extractors.available():
            refuse(f"extractors[{i}].spec", f"extractor {use.name!r} ({use.spec}) is not available in this "
                                            f"featbank; available: {', '.join(extractors.available())}")
        if use.spec in seen:
            refuse(f"extractors[{i}].spec", f"{use.spec} is listed twice")
        seen.add(use.spec)
    if not recipe.extractors:
        refuse("extractors", "a recipe needs at least one extractor")
    for i, block in enumerate(recipe.fit.features):
        undeclared = [p for p in _parts(block) if p not in seen]
        if undeclared:
            refuse(f"fit.features[{i}]", f"{', '.join(map(repr, undeclared))} is not one of the recipe's "
                                         f"extractor specs ({', '.join(recipe.specs)})")
    for what in ("features", "learners"):
        if not getattr(recipe.fit, what):
            refuse(f"fit.{what}", "must list at least one")
    for i, spec in enumerate(recipe.fit.learners):
        try:
            parse_learner(spec)
        except UsageError as error:
            refuse(f"fit.learners[{i}]", str(error))
    try:
        check_protocol(recipe.fit.protocol)
    except UsageError as error:
        refuse("fit.protocol", str(error))
    if recipe.fit.ensemble not in ENSEMBLES:
        refuse("fit.ensemble", f"{recipe.fit.ensemble!r} is not one of {', '.join(ENSEMBLES)}")


def check_protocol(spec: str) -> None:
    """Refuse a protocol spec that cannot be built, before any extraction.

    ``holdout:COLUMN=VALUE`` reads a manifest column, so without a manifest only its syntax is
    checked; every other protocol is built from its spec alone.
    """
    from featbank.learning.protocols import PROTOCOLS, parse_protocol

    name, _, arg = spec.strip().partition(":")
    if name == "holdout":
        column, sep, _ = arg.partition("=")
        if not (sep and column):
            raise UsageError(f"bad protocol {spec!r} (syntax {PROTOCOLS[name].syntax})")
        return
    parse_protocol(spec)


# -------------------------------------------------------------------------------------- loading


def _bundled() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("recipes")
    return {f.name.removesuffix(SUFFIX): f for f in folder.iterdir() if f.name.endswith(SUFFIX)}


def available() -> list[str]:
    """Names of the bundled recipes."""
    return sorted(_bundled())


def parse_recipe(text: str, name: str, path: str) -> Recipe:
    """A validated recipe from TOML ``text`` (``path`` names it in messages)."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"recipe {path}: a recipe's name (its file name) must be lower-case letters, digits, "
                         f"'-' and '_', not {name!r}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"recipe {path} is not valid TOML: {error}") from None
    recipe = _build(Recipe, table, "", path, name=name, path=path)
    _check(recipe)
    return recipe


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A bundled recipe by name, or a recipe file (``*.toml``) by path; UsageError otherwise."""
    text = str(name_or_path)
    if text.endswith(SUFFIX):
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"recipe file {path} does not exist")
        return parse_recipe(path.read_text(encoding="utf-8"), path.stem, str(path))
    bundled = _bundled()
    if text not in bundled:
        raise UsageError(f"unknown recipe {text!r}; recipes: {', '.join(sorted(bundled))} "
                         f"(or give the path of a recipe .toml file)")
    return parse_recipe(bundled[text].read_text(encoding="utf-8"), text, f"recipes/{text}{SUFFIX}")


# -------------------------------------------------------------------------------------- display


def commands(recipe: Recipe, manifest: str = "TRAIN.csv", test: str | None = "TEST.csv",
             track: str | None = None, out: str | None = None) -> list[str]:
    """The ``featbank`` commands that do what ``featbank recipe run`` does with this recipe."""
    track = track or recipe.track
    out = out or f"runs/{recipe.name}"
    fit = recipe.fit
    lines = [f"featbank extract --manifest {shlex.quote(manifest)} --track {track} --extractor "
             + shlex.quote(",".join(recipe.specs)),
             f"featbank fit --manifest {shlex.quote(manifest)} --track {track} --features "
             + shlex.quote(",".join(fit.features)) + " --learners " + shlex.quote(",".join(fit.learners))
             + f" --protocol {fit.protocol} --ensemble {fit.ensemble}" + (" --stack" if fit.stack else "")
             + f" --out {out}/fit"]
    if test is not None:
        lines.append(f"featbank predict --manifest {shlex.quote(test)} --model {out}/fit/model --track {track} "
                     f"--out {out}/{submission_name(track)}")
    return lines


def submission_name(track: str) -> str:
    """File name of a track's submission: zipped layouts need ``.zip``."""
    from featbank.io.submission import LAYOUTS
    from featbank.io.tracks import load_track

    return "submission.zip" if LAYOUTS[load_track(track).layout].member else "submission.csv"


def describe(recipe: Recipe, width: int = 100) -> str:
    """The whole recipe as text: what ``featbank recipe show`` prints."""
    from featbank.io.tracks import load_track

    track = load_track(recipe.track)
    src = recipe.source

    def para(text: str, indent: str = "  ") -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)

    def item(label: str, text: str, indent: str = "  ") -> str:
        head = f"{indent}{label:<13}"
        return textwrap.fill(" ".join(text.split()), width, initial_indent=head,
                             subsequent_indent=" " * len(head), break_on_hyphens=False)

    out = [f"{recipe.name}: {recipe.title}", "",
           item("published", f"{src.system}; {src.result}: {src.score:g} ({src.metric})"),
           item("described in", f"{src.card}; {src.report}"),
           item("track", f"{track.name} ({track.title}; official score {track.score}, "
                         f"submission layout {track.layout})"),
           item("file", recipe.path), "", para(recipe.description), "", "extractors"]
    for use in recipe.extractors:
        note = "" if use.random_weights else " [no random-weights mode: --random-weights runs leave it out]"
        out += [f"  {use.spec}", para(use.role + note, indent="      ")]
    fit = recipe.fit
    protocol = f"{fit.protocol}, final model: " + ("the mean of the split models" if fit.ensemble == "mean"
                                                   else "refitted on every row")
    out += ["", "fit",
            *(item("features" if i == 0 else "", block) for i, block in enumerate(fit.features)),
            *(item("learners" if i == 0 else "", spec) for i, spec in enumerate(fit.learners)),
            item("protocol", protocol), item("stack", "yes" if fit.stack else "no")]
    if recipe.differences:
        out += ["", "where featbank's version differs from the published system"]
        for d in recipe.differences:
            out += [item("published", d.published, indent="  - "), item("here", d.here, indent="    "),
                    item("consequence", d.consequence, indent="    ")]
    out += ["", "equivalent commands (what `featbank recipe run` does)",
            *(f"  {line}" for line in commands(recipe))]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ run


@dataclass
class RecipeRun:
    """What :func:`run_recipe` did and where it wrote it."""

    recipe: Recipe
    track: Track
    extraction: ExtractReport
    outcome: Outcome
    left_out: list[str]
    """Extractor specs a random-weights run left out (no random-weights mode)."""
    submission: Path | None = None

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        """Training items whose extraction failed (left out of the fit): (video_id, group, error)."""
        return self.extraction.failures


def run_recipe(recipe: Recipe | str | Path, manifest: str | Path, *, track: str | None = None,
               test: str | Path | None = None, bank: str | Path = "featbank.zarr",
               out_dir: str | Path | None = None, device: str = "cpu", weights: WeightsPolicy | None = None,
               protocol: str | None = None, pairs: str | Path | None = None, seed: int = 0, n_jobs: int = -1,
               progress: bool = True, echo: Callable[[str], None] = lambda line: None) -> RecipeRun:
    """Run a recipe: extract what the bank lacks, fit with the recipe's protocol and learners,
    write the report, and with ``test`` predict it into the track's submission layout.

    ``device`` runs the extractors and trains the torch heads there (``fit --device``).
    ``track`` replaces the recipe's default track (e.g. ``finevd`` for the demo's labels);
    ``protocol`` replaces its protocol (a quick check on few items). ``weights`` is the extraction's
    weights policy: with ``random=True`` extractors without a random-weights mode are left out (and
    listed in the result). Everything is checked before any extraction starts: manifests against
    the track, the protocol, every learner spec built. ``echo`` receives one line per stage.
    """
    from featbank.extraction.mode import extract
    from featbank.extraction.weights import WeightsPolicy
    from featbank.io.manifest import load_manifest
    from featbank.io.submission import read_pairs
    from featbank.io.tracks import load_track
    from featbank.learning.workflow import fit_manifest, predict_manifest
    from regressors import make_learner

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    weights = weights or WeightsPolicy()
    chosen = load_track(track or recipe.track)
    manifest = Path(manifest)
    chosen.check(load_manifest(manifest))
    if test is not None:
        test = Path(test)
        chosen.check(load_manifest(test))
    protocol = protocol or recipe.fit.protocol
    check_protocol(protocol)
    for spec in recipe.fit.learners:
        make_learner(spec)  # an unknown parameter fails here, not after the extraction
    uses, blocks, left_out = recipe.dry_run_plan(weights.random)
    if not blocks:
        raise UsageError(f"recipe {recipe.name}: with --random-weights every feature block is left out "
                         f"({', '.join(left_out)} have no random-weights mode)")
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.txt").write_text(describe(recipe) + "\n", encoding="utf-8")
    if left_out:
        echo(f"random-weights dry run: leaving out {', '.join(left_out)} (no random-weights mode)")

    specs = [u.spec for u in uses]
    echo(f"[1/{3 if test else 2}] extracting {', '.join(specs)} for {manifest}")
    report = extract(manifest, bank, specs, device=device, weights=weights, progress=progress)
    if len(report.counts) != len(specs):
        raise FeatbankError(f"recipe {recipe.name}: two of its extractor specs fill the same bank group "
                            f"({', '.join(specs)} -> {', '.join(report.counts)}); list each once")
    keys = dict(zip(specs, report.counts))
    features = [JOIN.join(keys[p] for p in _parts(block)) for block in blocks]

    echo(f"[2/{3 if test else 2}] fitting {', '.join(recipe.fit.learners)} on {', '.join(blocks)} "
         f"under {protocol} (track {chosen.name})")
    outcome = fit_manifest(manifest, bank, features, list(chosen.labels), list(recipe.fit.learners),
                           protocol=protocol, stack=recipe.fit.stack, out_dir=out / "fit", seed=seed,
                           n_jobs=n_jobs, progress=progress, track=chosen,
                           pairs=None if pairs is None else read_pairs(Path(pairs)), ensemble=recipe.fit.ensemble,
                           device=device)
    result = RecipeRun(recipe, chosen, report, outcome, left_out)
    if test is not None:
        result.submission = out / submission_name(chosen.name)
        echo(f"[3/3] predicting {test} into {result.submission}")
        predict_manifest(test, bank, outcome.model_dir, result.submission, device=device, weights=weights,
                         progress=progress, track=chosen)
    return result


__all__ = ["Difference", "ExtractorUse", "FitPlan", "Recipe", "RecipeRun", "Source", "available", "check_protocol",
           "commands", "describe", "load_recipe", "parse_recipe", "run_recipe", "submission_name"]
