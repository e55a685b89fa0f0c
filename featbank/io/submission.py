"""Organisers' files: submissions in each leaderboard's layout, and the label and pair files to score them.

A track TOML names its submission ``layout``; :data:`LAYOUTS` says what that means byte for byte:

* ``output_txt_zip``: a zip holding ``output.txt``, one ``name,value[,value...]`` line per item,
  no header, the name with its extension, ``\\n`` line ends, values in the track's label order
  (THQA-NTIRE, copied from the organisers' ``baseline_example.zip``; the other XGC/AIGC tracks of
  the same organisers, FineVD with its six values per line, by analogy [unsure]).
* ``kvq_prediction_zip``: a zip holding ``prediction.csv`` with header ``filename,score`` (the
  columns the KVQ organisers' ``metric_score.py`` reads).
* ``csv``: a plain CSV, header ``video_id,<labels>`` (benchmarks without a server).

:func:`write_submission` refuses to write a file with holes: every listed item needs a finite
prediction, or :class:`~featbank.errors.SubmissionError` names the ones that lack it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from featbank.errors import SubmissionError

if TYPE_CHECKING:
    from featbank.io.tracks import Track


@dataclass(frozen=True)
class Layout:
    """How one leaderboard wants predictions: zip member (or a plain file) and header line."""

    name: str
    description: str
    member: str | None
    """File inside the zip the server reads; ``None`` for a plain, unzipped file."""
    header: tuple[str, ...] | None
    """Header line; ``None`` for no header; ``()`` for ``video_id`` and the track's label names."""

    def header_for(self, labels: Sequence[str]) -> list[str] | None:
        if self.header is None:
            return None
        return list(self.header) or ["video_id", *labels]


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("output_txt_zip", "zip holding output.txt: name,value lines, no header", "output.txt", None),
        Layout("kvq_prediction_zip", "zip holding prediction.csv with header filename,score", "prediction.csv",
               ("filename", "score")),
        Layout("csv", "plain CSV with header video_id,<labels>", None, ()),
    )
}
"""Layout name (as a track TOML writes it) -> layout."""


def _resolve(track_or_layout: Track | str) -> tuple[Layout, tuple[str, ...] | None]:
    """The layout, and the label names when a track (not a bare layout) was given."""
    from featbank.io.tracks import Track, available, load_track

    if isinstance(track_or_layout, str):
        if track_or_layout in LAYOUTS and track_or_layout not in available():
            return LAYOUTS[track_or_layout], None
        track_or_layout = load_track(track_or_layout)
    assert isinstance(track_or_layout, Track)
    return LAYOUTS[track_or_layout.layout], track_or_layout.labels


def item_list(items, limit: int = 10) -> str:
    """The first ``limit`` item names for an error message, and how many more there are."""
    items = [str(i) for i in items]
    return ", ".join(items[:limit]) + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def refuse_duplicates(ids: pd.Index, what: str) -> None:
    """Raise a :class:`SubmissionError` naming the items ``ids`` lists more than once."""
    twice = ids[ids.duplicated()].unique()
    if len(twice):
        raise SubmissionError(f"{what}: {len(twice)} item(s) listed more than once: {item_list(twice)}")


def by_item_id(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``table`` indexed by item id as text (its ``video_id`` column if it has one), ids unique."""
    table = table.set_index("video_id") if "video_id" in table.columns else table.copy()
    table.index = table.index.astype(str).str.strip()
    table.index.name = "video_id"
    refuse_duplicates(table.index, what)
    return table


def write_submission(track: Track | str, video_ids: Sequence[str], predictions_df: pd.DataFrame,
                     path: str | Path) -> Path:
    """Write the predictions of ``video_ids`` (in that order) in the track's layout at ``path``.

    ``predictions_df`` is indexed by item id (or has a ``video_id`` column) with one column per
    track label. Every id needs a finite value in every label column; otherwise nothing is written
    and the error lists the items. Zipped layouts need a ``.zip`` path.
    """
    layout, labels = _resolve(track)
    assert labels is not None, "write_submission needs a track, which says the label columns"
    path = Path(path)
    if layout.member is not None and path.suffix.lower() != ".zip":
        raise SubmissionError(f"layout {layout.name} is a zip; give a path ending in .zip, not {path.name}")
    table = by_item_id(predictions_df, "the predictions")
    ids = pd.Index([str(v) for v in video_ids])
    refuse_duplicates(ids, "the item list")
    absent = [c for c in labels if c not in table.columns]
    if absent:
        raise SubmissionError(f"the predictions lack column(s) {', '.join(absent)}")
    values = table.reindex(ids)[list(labels)].apply(pd.to_numeric, errors="coerce")
    holes = values.index[~np.isfinite(values.to_numpy(dtype=np.float64)).all(axis=1)]
    if len(holes):
        raise SubmissionError(f"no finite prediction for {len(holes)} item(s); a submission must not go out "
                              f"with holes: {item_list(holes)}")
    lines = [",".join(layout.header_for(labels))] if layout.header_for(labels) is not None else []
    lines += [",".join([name, *(repr(float(v)) for v in row)]) for name, row in zip(ids, values.to_numpy())]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout.member is None:
        path.write_text(text, newline="")
    else:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(layout.member, text)
    return path


def _text_of(layout: Layout, path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return path.read_text()
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        member = layout.member if layout.member in names else None
        if member is None and len(names) == 1 and layout.member is None:
            member = names[0]
        if member is None:
            raise SubmissionError(f"{path} holds {item_list(names) or 'nothing'}; layout {layout.name} needs "
                                  f"{layout.member or 'exactly one file'}")
        return archive.read(member).decode("utf-8-sig")


def _numeric(values: pd.Series) -> bool:
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def read_submission(track_or_layout: Track | str, path: str | Path) -> pd.DataFrame:
    """A submission (the organiser's zip, or its text as a plain file) as a table indexed by item id.

    With a track, the value columns are named after its labels (a header naming them is matched by
    name, otherwise columns are taken in order); with a bare layout name, after the header or
    ``score``/``value_1..`` when there is none. Duplicate items or values that are not numbers
    are a :class:`SubmissionError`; NaN stays NaN for the scorer to name.
    """
    layout, labels = _resolve(track_or_layout)
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"no submission file at {path}")
    try:
        raw = pd.read_csv(io.StringIO(_text_of(layout, path)), header=None, dtype=str, skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, zipfile.BadZipFile) as exc:
        raise SubmissionError(f"{path} is not a readable submission (text lines of name,value): "
                              f"{str(exc).splitlines()[0][:200]}") from exc
    if raw.shape[1] < 2:
        raise SubmissionError(f"{path}: expected name,value lines, found {raw.shape[1]} column(s)")
    has_header = not _numeric(raw.iloc[0, 1:])
    names = [str(n).strip() for n in raw.iloc[0]] if has_header else None
    body = raw.iloc[1:] if has_header else raw
    table = pd.DataFrame(body.iloc[:, 1:].to_numpy(), index=body.iloc[:, 0].str.strip().to_numpy(),
                         columns=names[1:] if names else range(1, raw.shape[1]))
    if labels is not None:
        if names and set(labels) <= set(names[1:]):
            table = table[list(labels)]
        elif table.shape[1] == len(labels):
            table.columns = list(labels)
        else:
            raise SubmissionError(f"{path}: {table.shape[1]} value column(s), but the track scores "
                                  f"{len(labels)} ({', '.join(labels)})")
    elif not names:
        table.columns = ["score"] if table.shape[1] == 1 else [f"value_{i}" for i in table.columns]
    refuse_duplicates(table.index, str(path))
    values = table.apply(pd.to_numeric, errors="coerce")
    not_numbers = values.index[(values.isna() & table.notna()).any(axis=1)]
    if len(not_numbers):
        raise SubmissionError(f"{path}: value(s) that are not numbers for {item_list(not_numbers)}")
    values.index.name = "video_id"
    return values


def read_labels(track: Track | str, path: str | Path) -> pd.DataFrame:
    """Ground truth for scoring: a manifest-style CSV or the organiser's label file.

    The id column is ``video_id`` if present, else the first column (``Video`` in THQA-NTIRE's
    ``thqa_ntire_val.csv``, ``filename`` in KVQ's ``truth.csv``). Label columns are matched by the
    track's names; a one-label track also takes a file's single other numeric column (``Score``).
    A ``group`` column is kept for KVQ's homologous pairs.
    """
    from featbank.io.tracks import load_track

    track = load_track(track) if isinstance(track, str) else track
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"no label file at {path}")
    table = pd.read_csv(path)
    table = by_item_id(table.rename(columns={table.columns[0]: "video_id"}) if "video_id" not in table.columns
                       else table, str(path))
    if not set(track.labels) <= set(table.columns) and len(track.labels) == 1:
        candidates = [c for c in table.columns if c != "group" and _numeric(table[c].dropna())]
        if len(candidates) == 1:
            table = table.rename(columns={candidates[0]: track.labels[0]})
    absent = [c for c in track.labels if c not in table.columns]
    if absent:
        raise SubmissionError(f"{path} lacks label column(s) {', '.join(absent)} for track {track.name}")
    return table[[*track.labels, *(["group"] if "group" in table.columns else [])]]


PAIR_KINDS = {"homologous": True, "source": True, "non-homologous": False, "nonhomologous": False,
              "nonsource": False}
"""Pair kinds a pair file may name; ``source``/``nonsource`` are the KVQ organisers' sheet names."""


def read_pairs(path: str | Path) -> pd.DataFrame:
    """The organisers' ranking pairs as ``first, second, first_better, homologous``.

    Accepts the KVQ organisers' workbook (sheets ``source`` = homologous and ``nonsource``; rows
    ``video1, video2, rank`` with rank 1 when video1 is better, 2 otherwise; needs ``openpyxl``)
    or a CSV with columns ``video1,video2,rank,kind`` (kind: homologous / non-homologous, or
    source / nonsource).
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"no pair file at {path}")
    if path.suffix.lower() in (".xlsx", ".xls"):
        try:
            sheets = pd.read_excel(path, sheet_name=None)
        except ImportError as missing:
            raise SubmissionError(f"reading {path.name} needs openpyxl ({missing}); pip install openpyxl, "
                                  "or save the sheets as one CSV video1,video2,rank,kind") from None
        parts = [sheet.iloc[:, :3].set_axis(["video1", "video2", "rank"], axis=1).assign(kind=name)
                 for name, sheet in sheets.items()]
        table = pd.concat(parts, ignore_index=True)
    else:
        table = pd.read_csv(path)
    needed = ["video1", "video2", "rank", "kind"]
    if [c for c in needed if c not in table.columns]:
        raise SubmissionError(f"{path}: a pair file needs columns {','.join(needed)}; found "
                              f"{','.join(map(str, table.columns))}")
    kind = table["kind"].astype(str).str.strip().str.lower()
    bad = sorted(set(kind) - set(PAIR_KINDS))
    if bad:
        raise SubmissionError(f"{path}: unknown pair kind(s) {', '.join(bad)}; kinds: {', '.join(PAIR_KINDS)}")
    rank = pd.to_numeric(table["rank"], errors="coerce")
    if not rank.isin([1, 2]).all():
        raise SubmissionError(f"{path}: rank must be 1 (video1 better) or 2 (video2 better) on every row")
    return pd.DataFrame({"first": table["video1"].astype(str).str.strip(),
                         "second": table["video2"].astype(str).str.strip(),
                         "first_better": (rank == 1).to_numpy(), "homologous": kind.map(PAIR_KINDS).to_numpy()})
