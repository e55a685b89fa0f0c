"""Per-step features of several groups on one time grid, for temporal heads over joined blocks.

A temporal regression head over ``slowfast+liqe`` needs one ``(items, T, D_total)`` array, but
each group has its own step grid: key frames at 1 fps start each second at 0, 1, 2 ..., SlowFast
clips cover 1-s windows, audio has one step per second, FAST-VQA has one clip per video and an
imported table one pooled vector per item. :func:`align` puts them on one grid with these rules:

- **Reference grid, per item**: the valid steps (in time order) of the group with the most valid
  steps for that item; ties go to the group listed first. The densest grid loses no step of any
  group's finest resolution, and deciding per item lets a video whose audio failed, or a short
  video where one group clipped fewer steps, still use its best grid. The arrays have
  ``T = max over items of the reference step count`` steps.
- **Other groups**: at each reference time ``t``, the step whose interval contains ``t``. A step
  starts at its timestamp and lasts until the group's next step, so that is the latest step with
  timestamp ``<= t``; a ``t`` before all of a group's steps (a clip grid starting at 0.5 s
  sampled at 0 s) takes the group's first step, the one nearest in time, rather than nothing.
- **One step per item** (FAST-VQA, imported pooled features): by the same rule that step
  covers the whole video, so it is repeated at every reference step.
- **No valid step** (the item failed or is absent in a group): NaN in that group's columns. The
  reference step stays valid (``mask`` True) whenever the reference group has it, so an item
  keeps the groups that did work; a head must impute or skip NaN columns as it does for pooled
  features (``load_blocks`` lists failed rows in ``dropped``).
- **One group**: its arrays exactly as :func:`~featbank.bank.matrix.load_steps` read them
  (``T`` is that group's stored step count), so a one-group timeline costs no copy.

Work is vectorised over items: per group, one ``argsort`` of its timestamps and one
``np.searchsorted`` of every reference time against every item's steps at once, made possible
by keys ``item * M + rank(time)`` (integer, exact: ranks of the float32 timestamps, not sums of
floats that could round two times together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from featbank.bank.matrix import StepBlock, load_steps, manifest_rows
from featbank.errors import BankError, UsageError

if TYPE_CHECKING:
    from featbank.bank.store import FeatureBank
    from featbank.io.manifest import Manifest

COPY_BYTES = 64 << 20  # bytes gathered per pass when filling a group's columns (bounds temporaries)


@dataclass
class Timeline:
    """Per-step features of a joined block, in manifest order (see the module's rules)."""

    steps: np.ndarray  # (items, T, D_total) float32, NaN where mask is False
    mask: np.ndarray  # (items, T) bool
    timestamps: np.ndarray  # (items, T) float32 (NaN where masked)
    columns: list[str]  # D_total names "<group spec>:<feature name>" like FeatureBlocks.frame uses


@dataclass
class _Grid:
    """One group's valid steps per item in time order: ``order[i, :count[i]]`` are their indices."""

    order: np.ndarray  # (items, T_g) step indices, valid steps first, by timestamp (stable)
    count: np.ndarray  # (items,) valid steps
    times: np.ndarray  # (items, T_g) timestamps in ``order`` (inf past ``count``)

    @classmethod
    def of(cls, block: StepBlock, name: str) -> _Grid:
        valid = block.mask.astype(bool)
        if np.isnan(block.timestamps[valid]).any():
            raise BankError(f"{name} ({block.key}): some steps marked valid have no timestamp; the bank is "
                            f"damaged: run `featbank validate --repair`, then extract again")
        keyed = np.where(valid, block.timestamps, np.float32(np.inf))
        order = np.argsort(keyed, axis=1, kind="stable")
        return cls(order=order, count=valid.sum(axis=1), times=np.take_along_axis(keyed, order, axis=1))

    def valid(self) -> np.ndarray:
        """(items, T_g) which sorted positions hold a valid step."""
        return np.arange(self.order.shape[1])[None, :] < self.count[:, None]


def _check_names(names: Sequence[str]) -> None:
    """At least one group, each named once: the names prefix the columns."""
    if not names:
        raise UsageError("a timeline needs at least one feature group")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise UsageError(f"feature group(s) {', '.join(repeated)} named twice: their columns would clash")


def _check_blocks(blocks: Sequence[StepBlock], names: Sequence[str]) -> None:
    _check_names(names)
    if len(blocks) != len(names):
        raise UsageError(f"align got {len(blocks)} feature groups but {len(names)} names")
    sizes = {b.steps.shape[0] for b in blocks}
    if len(sizes) > 1:
        raise UsageError(f"the groups cover different numbers of items ({sorted(sizes)}): load them for "
                         f"the same manifest")


def _columns(blocks: Sequence[StepBlock], names: Sequence[str]) -> list[str]:
    return [f"{name}:{feature}" for block, name in zip(blocks, names) for feature in block.schema.step_names()]


def align(blocks: Sequence[StepBlock], names: Sequence[str]) -> Timeline:
    """Join per-step blocks (same items, same order) on each item's reference grid.

    ``names`` (one per block: the spec it was asked by) prefix the columns. See the module's
    docstring for the rules.
    """
    _check_blocks(blocks, names)
    columns = _columns(blocks, names)
    if len(blocks) == 1:
        only = blocks[0]
        return Timeline(steps=only.steps, mask=only.mask.astype(bool, copy=False), timestamps=only.timestamps,
                        columns=columns)
    grids = [_Grid.of(block, name) for block, name in zip(blocks, names)]
    n = blocks[0].steps.shape[0]
    counts = np.stack([g.count for g in grids], axis=1)
    ref = counts.argmax(axis=1)  # (first on ties)
    ref_count = counts[np.arange(n), ref]
    T = int(ref_count.max()) if n else 0
    mask = np.arange(T)[None, :] < ref_count[:, None]
    item, step = np.nonzero(mask)  # one query per valid reference step, item-major
    times = np.empty(item.size, dtype=np.float32)
    for g, grid in enumerate(grids):
        own = ref[item] == g
        times[own] = grid.times[item[own], step[own]]
    timestamps = np.full((n, T), np.nan, dtype=np.float32)
    timestamps[item, step] = times

    distinct = np.unique(np.concatenate([grid.times[grid.valid()] for grid in grids]))
    query = _keys(item, times, distinct)

    width = sum(b.steps.shape[2] for b in blocks)
    out = np.empty((n, T, width), dtype=np.float32)  # (every cell is written below: no NaN pass first)
    offset = 0
    for g, (block, grid) in enumerate(zip(blocks, grids)):
        own = ref[item] == g
        source = _sources(grid, distinct, query, item, np.where(own, step, -1))
        d = block.steps.shape[2]
        _copy(out[:, :, offset:offset + d], block.steps, item, step, source)
        offset += d
    out[~mask] = np.nan
    return Timeline(steps=out, mask=mask, timestamps=timestamps, columns=columns)


def _keys(item: np.ndarray, times: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """``item * (len(distinct) + 1) + rank of time among distinct``: integers ordered by item, then
    time, that every item's keys can be searched in at once (``times`` must be in ``distinct``)."""
    return item * (distinct.size + 1) + np.searchsorted(distinct, times)


def _sources(grid: _Grid, distinct: np.ndarray, query: np.ndarray, item: np.ndarray,
             own: np.ndarray) -> np.ndarray:
    """For each query, the index of the group's step to use; -1 where the item has none.

    ``own`` is the reference position of queries on this group's own grid (-1 elsewhere): those
    take that very step, even where two of its steps share a timestamp.
    """
    valid = grid.valid()
    keys = _keys(np.nonzero(valid)[0], grid.times[valid], distinct)
    first = np.concatenate([[0], np.cumsum(grid.count)[:-1]])  # where each item's keys start
    # the latest step at or before each reference time; the first step when none is
    within = np.maximum(np.searchsorted(keys, query, side="right") - first[item] - 1, 0)
    within = np.where(own >= 0, own, within)
    return np.where(grid.count[item] > 0, grid.order[item, within], -1)


def _copy(columns: np.ndarray, steps: np.ndarray, item: np.ndarray, step: np.ndarray, source: np.ndarray) -> None:
    """``columns[item, step] = steps[item, source]`` (NaN where ``source`` is -1), without temporaries
    the size of the result: when every step maps to itself (the reference group in the usual case)
    as one slice copy, else gathered a bounded pass at a time through one reused buffer."""
    T, d = columns.shape[1], columns.shape[2]
    if steps.shape[1] >= T and np.array_equal(source, step):
        columns[:] = steps[:, :T]  # (steps past an item's reference grid are masked by the caller)
        return
    missing = source < 0
    columns[item[missing], step[missing]] = np.nan
    item, step = item[~missing], step[~missing]
    flat = item * steps.shape[1] + source[~missing]
    rows = steps.reshape(-1, d)
    per_pass = max(1, COPY_BYTES // max(1, rows.itemsize * d))
    buffer = np.empty((min(flat.size, per_pass), d), dtype=rows.dtype)
    for lo in range(0, flat.size, per_pass):
        part = slice(lo, lo + per_pass)
        got = np.take(rows, flat[part], axis=0, out=buffer[:flat[part].size])
        columns[item[part], step[part]] = got


def load_timeline(bank: FeatureBank, manifest: Manifest, specs: Sequence[str]) -> Timeline:
    """Per-step features of the named groups for every manifest row, on one grid (:func:`align`).

    Each group is read by :func:`~featbank.bank.matrix.load_steps` (whole chunks of the covering
    row span, not one read per item) and named in the columns as it was asked for.
    """
    specs = list(specs)
    _check_names(specs)  # before reading anything
    rows = manifest_rows(bank, manifest)
    return align([load_steps(bank, manifest, spec, rows) for spec in specs], specs)
