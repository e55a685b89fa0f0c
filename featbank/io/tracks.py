"""Tracks: what a challenge's manifest must contain, checked before hours of extraction start.

A generic manifest accepts any numeric label columns. A *track* (``manifests/tracks/<name>.toml``)
pins down one challenge's shape: which label columns it scores, whether items are videos or
images, whether each item needs its text prompt (AI-generated content) and a group (prompt or
source id, so folds never split one), where the released labels fix it, the label range, and how
the organisers judge it: its official ``score`` (a name in
:data:`featbank.learning.official.SCORES`) and its submission ``layout`` (a name in
:data:`featbank.io.submission.LAYOUTS`). An unknown score or layout name fails at load time.
``manifests/examples/<name>.csv`` is a template of a conforming manifest.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from featbank.errors import ManifestError
from featbank.io.manifest import Manifest, row_list
from featbank.io.submission import LAYOUTS
from featbank.learning.official import SCORES

_MEDIA = ("video", "image")


@dataclass(frozen=True)
class Track:
    """One challenge track's manifest requirements (see the module docstring)."""

    name: str
    title: str
    media: str
    labels: tuple[str, ...]
    prompt: bool = False
    group: bool = False
    range: tuple[float, float] | None = None
    score: str = "main_score_poly3"
    layout: str = "csv"

    def problems(self, manifest: Manifest) -> list[str]:
        """Every way ``manifest`` falls short of this track, as readable lines."""
        table = manifest.table
        problems = []
        missing = [c for c in self.labels if c not in manifest.label_columns]
        if missing and manifest.label_columns:  # none at all: an unlabelled test list, fine for predict
            problems.append(f"missing label column(s) {', '.join(missing)} (track {self.name} scores "
                            f"{', '.join(self.labels)})")
        for column, needed in (("prompt", self.prompt), ("group", self.group)):
            if needed and (column not in table.columns or table[column].isna().any()):
                problems.append(f"every item needs a {column!r} (track {self.name})")
        from featbank.extraction.decode import IMAGE_SUFFIXES  # imports av and PIL: only when checking

        is_image = table["path"].map(lambda p: "." + str(p).rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES)
        wrong = table.index[is_image != (self.media == "image")]
        if len(wrong):
            problems.append(f"track {self.name} takes {self.media}s, but {row_list(wrong)} "
                            f"{'are not images' if self.media == 'image' else 'are images'}")
        if self.range is not None:
            low, high = self.range
            for column in [c for c in self.labels if c in table.columns]:
                values = pd.to_numeric(table[column], errors="coerce")
                outside = table.index[(values < low) | (values > high)]
                if len(outside):
                    problems.append(f"label {column!r} outside [{low:g}, {high:g}] at {row_list(outside)}")
        return problems

    def check(self, manifest: Manifest) -> None:
        """Raise one :class:`ManifestError` listing every problem, or return quietly."""
        problems = self.problems(manifest)
        if problems:
            raise ManifestError(f"manifest {manifest.source} does not fit track {self.name}:\n  - "
                                + "\n  - ".join(problems))


def _track_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("manifests") / "tracks"
    return {f.name.removesuffix(".toml"): f for f in folder.iterdir() if f.name.endswith(".toml")}


def available() -> list[str]:
    """Names of the shipped tracks."""
    return sorted(_track_files())


def load_track(name: str) -> Track:
    """The track called ``name``; :class:`ManifestError` naming the valid ones otherwise."""
    files = _track_files()
    if name not in files:
        raise ManifestError(f"unknown track {name!r}; tracks: {', '.join(sorted(files))}")
    spec = tomllib.loads(files[name].read_text())
    if spec.get("media") not in _MEDIA:
        raise ManifestError(f"track {name}: media must be one of {_MEDIA}, got {spec.get('media')!r}")
    _check_named(name, "score", spec.get("score"), SCORES)
    _check_named(name, "layout", spec.get("layout"), LAYOUTS)
    if spec["score"] == "kvq_final" and len(spec["labels"]) != 1:
        raise ManifestError(f"track {name}: kvq_final scores one MOS column, not {spec['labels']}")
    return Track(
        name=name,
        title=spec["title"],
        media=spec["media"],
        labels=tuple(spec["labels"]),
        prompt=bool(spec.get("prompt", False)),
        group=bool(spec.get("group", False)),
        range=tuple(spec["range"]) if "range" in spec else None,
        score=spec["score"],
        layout=spec["layout"],
    )


def _check_named(track: str, field: str, value: object, known: dict) -> None:
    if value not in known:
        raise ManifestError(f"track {track}: unknown {field} {value!r}; {field}s: {', '.join(sorted(known))}")


def example_manifest(name: str) -> resources.abc.Traversable:
    """The shipped template manifest of track ``name``."""
    load_track(name)
    return resources.files("manifests") / "examples" / f"{name}.csv"
