"""Per-step features of several groups on one grid (featbank/bank/timeline.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featbank.bank import timeline
from featbank.bank.hashing import virtual_digest
from featbank.bank.matrix import StepBlock, load_steps
from featbank.bank.schema import IMPORT_SPEC_PREFIX, GroupLayout, GroupSchema
from featbank.bank.store import FAILED, OK, PENDING, FeatureBank, StepFeatures
from featbank.bank.timeline import align, load_timeline
from featbank.errors import BankError, UsageError
from featbank.io.manifest import VirtualItem, load_manifest

Steps = list[tuple[float, np.ndarray]] | None  # one item's valid steps (time, features); None: failed


def to_block(key: str, items: list[Steps], max_steps: int, width: int) -> StepBlock:
    """A StepBlock as load_steps returns it: valid steps first, NaN and masked past them."""
    n = len(items)
    steps = np.full((n, max_steps, width), np.nan, np.float32)
    mask = np.zeros((n, max_steps), bool)
    times = np.full((n, max_steps), np.nan, np.float32)
    for i, item in enumerate(items):
        for j, (t, x) in enumerate(item or []):
            steps[i, j], mask[i, j], times[i, j] = x, True, t
    status = np.array([FAILED if item is None else OK for item in items], np.int8)
    layout = GroupLayout(pooled_dim=width, max_steps=max_steps, step_dim=width, frames_per_step=1)
    schema = GroupSchema(extractor=key, spec=key, version="1", layout=layout,
                         feature_names=tuple(f"{key}{c}" for c in range(width)))
    return StepBlock(key=f"{key}@0", schema=schema, steps=steps, mask=mask, timestamps=times, status=status)


def expected(groups: list[list[Steps]], widths: list[int]) -> list[list[tuple[float, np.ndarray]]]:
    """The documented rules, item by item and step by step: (time, joined features) per reference step."""
    out = []
    for i in range(len(groups[0])):
        per = [sorted(g[i] or [], key=lambda s: s[0]) for g in groups]  # (stable: ties keep their order)
        ref = max(range(len(per)), key=lambda g: (len(per[g]), -g))
        rows = []
        for k, (t, _) in enumerate(per[ref]):
            parts = []
            for g, steps in enumerate(per):
                if not steps:
                    parts.append(np.full(widths[g], np.nan, np.float32))
                    continue
                j = k if g == ref else max([j for j, (s, _) in enumerate(steps) if s <= t], default=0)
                parts.append(steps[j][1])
            rows.append((t, np.concatenate(parts)))
        out.append(rows)
    return out


def check(tl: timeline.Timeline, rows: list[list[tuple[float, np.ndarray]]]) -> None:
    T = max(map(len, rows))
    assert tl.steps.shape[:2] == tl.mask.shape == tl.timestamps.shape == (len(rows), T)
    assert tl.steps.dtype == np.float32 and tl.timestamps.dtype == np.float32
    for i, item in enumerate(rows):
        n = len(item)
        assert tl.mask[i].tolist() == [True] * n + [False] * (T - n), i
        np.testing.assert_array_equal(tl.timestamps[i, :n], [t for t, _ in item])
        if n:
            np.testing.assert_array_equal(tl.steps[i, :n], np.stack([x for _, x in item]))
        assert np.isnan(tl.steps[i, n:]).all() and np.isnan(tl.timestamps[i, n:]).all()


def value(group: int, item: int, step: int, width: int) -> np.ndarray:
    """Features that say where they came from: group, item and step, one column apart."""
    return (1000 * group + 100 * item + step + 0.01 * np.arange(width)).astype(np.float32)


def seconds(group: int, item: int, starts: list[float], width: int) -> Steps:
    return [(t, value(group, item, j, width)) for j, t in enumerate(starts)]


def test_frames_clips_audio_and_a_one_step_group_on_one_grid():
    frames = [seconds(0, 0, [0, 1, 2, 3], 2), seconds(0, 1, [0, 1], 2), seconds(0, 2, [0, 1, 2], 2)]
    clips = [seconds(1, 0, [0.5, 1.5, 2.5], 3), seconds(1, 1, [0.5, 1.5, 2.5], 3), None]  # item 2 failed
    fast = [seconds(2, 0, [0.7], 1), seconds(2, 1, [0.2], 1), seconds(2, 2, [0.0], 1)]
    audio = [seconds(3, 0, [0, 1, 2, 3], 2), seconds(3, 1, [0], 2), seconds(3, 2, [0, 1, 2, 3, 4], 2)]
    blocks = [to_block("frames", frames, 6, 2), to_block("clips", clips, 4, 3), to_block("fast", fast, 1, 1),
              to_block("audio", audio, 6, 2)]
    tl = align(blocks, ["keyframes", "slowfast", "fastvqa", "audio"])
    assert tl.columns == ["keyframes:frames0", "keyframes:frames1", "slowfast:clips0", "slowfast:clips1",
                          "slowfast:clips2", "fastvqa:fast0", "audio:audio0", "audio:audio1"]
    # worked out by hand from the rules: (reference times, then each group's step at each time)
    hand = [  # item 0: frames and audio tie at 4 steps, frames listed first; clips' first step covers t=0
        ([0, 1, 2, 3], {0: [0, 1, 2, 3], 1: [0, 0, 1, 2], 2: [0, 0, 0, 0], 3: [0, 1, 2, 3]}),
        # item 1: clips has the most steps; frames holds its last second, audio its only one
        ([0.5, 1.5, 2.5], {0: [0, 1, 1], 1: [0, 1, 2], 2: [0, 0, 0], 3: [0, 0, 0]}),
        # item 2: audio is longest; frames repeats its last step; clips failed: NaN
        ([0, 1, 2, 3, 4], {0: [0, 1, 2, 2, 2], 1: None, 2: [0, 0, 0, 0, 0], 3: [0, 1, 2, 3, 4]}),
    ]
    widths = [2, 3, 1, 2]
    rows = [[(t, np.concatenate([value(g, i, js[g][k], widths[g]) if js[g] is not None
                                 else np.full(widths[g], np.nan, np.float32) for g in range(4)]))
             for k, t in enumerate(times)] for i, (times, js) in enumerate(hand)]
    check(tl, rows)
    assert tl.mask.shape == (3, 5)
    check(tl, expected([frames, clips, fast, audio], widths))  # the oracle agrees with the hand


def test_ties_go_to_the_group_listed_first():
    a = [seconds(0, 0, [0, 1], 1)]
    b = [seconds(1, 0, [0.25, 1.25], 1)]
    blocks = [to_block("a", a, 2, 1), to_block("b", b, 2, 1)]
    assert align(blocks, ["a", "b"]).timestamps.tolist() == [[0, 1]]
    swapped = align(blocks[::-1], ["b", "a"])
    assert swapped.timestamps.tolist() == [[0.25, 1.25]]
    np.testing.assert_array_equal(swapped.steps[0], [[1000, 0], [1001, 1]])


def test_groups_with_nothing_to_give():
    """No items; every item failed everywhere; one group failed for every item."""
    empty = align([to_block("a", [], 2, 1), to_block("b", [], 3, 2)], ["a", "b"])
    assert empty.steps.shape == (0, 0, 3) and empty.mask.shape == empty.timestamps.shape == (0, 0)
    failed = align([to_block("a", [None, None], 2, 1), to_block("b", [None, None], 3, 2)], ["a", "b"])
    assert failed.steps.shape == (2, 0, 3) and failed.mask.shape == (2, 0)
    a = [seconds(0, 0, [0, 1], 1), seconds(0, 1, [0], 1)]
    half = align([to_block("a", a, 2, 1), to_block("b", [None, None], 3, 2)], ["a", "b"])
    check(half, expected([a, [None, None]], [1, 2]))
    assert half.mask.tolist() == [[True, True], [True, False]] and np.isnan(half.steps[:, :, 1:]).all()


def random_group(rng: np.random.Generator, g: int, n: int, width: int) -> tuple[list[Steps], int]:
    """Items of one of the grids extractors make, with random lengths and failures."""
    kind = g % 4
    items: list[Steps] = []
    for i in range(n):
        if rng.random() < 0.15:
            items.append(None)
            continue
        if kind == 0:  # 1 fps key frames or audio seconds
            starts = list(range(rng.integers(1, 7)))
        elif kind == 1:  # clips half a second in
            starts = [0.5 + s for s in range(rng.integers(1, 6))]
        elif kind == 2:  # one clip per video, anywhere
            starts = [float(rng.uniform(0, 3))]
        else:  # FAST-VQA clips of a video shorter than one clip: all start at frame 0
            starts = [0.0] * int(rng.integers(1, 5))
        items.append([(float(np.float32(t)), rng.standard_normal(width).astype(np.float32)) for t in starts])
    return items, 7 if kind != 2 else 1


@pytest.mark.parametrize("copy_bytes", [None, 20])
def test_random_grids_follow_the_rules_item_by_item(monkeypatch, copy_bytes):
    if copy_bytes:  # gathered a few rows per pass, as a group far wider than memory would be
        monkeypatch.setattr(timeline, "COPY_BYTES", copy_bytes)
    rng = np.random.default_rng(0)
    for trial in range(12):
        n, k = int(rng.integers(1, 40)), int(rng.integers(2, 5))
        first = int(rng.integers(0, 4))
        groups, widths, blocks = [], [], []
        for g in range(k):
            width = int(rng.integers(1, 4))
            items, max_steps = random_group(rng, first + g, n, width)
            groups.append(items)
            widths.append(width)
            blocks.append(to_block(f"g{g}", items, max_steps, width))
        tl = align(blocks, [f"g{g}" for g in range(k)])
        check(tl, expected(groups, widths))
        assert tl.steps.shape[2] == len(tl.columns) == sum(widths), trial


def test_the_order_steps_are_stored_in_does_not_matter():
    """Steps out of time order, and masked steps between valid ones, read as their time order."""
    rng = np.random.default_rng(1)
    n = 25
    frames = [seconds(0, i, list(range(1 + i % 6)), 2) for i in range(n)]
    clips = [seconds(1, i, [0.5 + s for s in range(i % 4)], 1) or None for i in range(n)]
    blocks = [to_block("frames", frames, 8, 2), to_block("clips", clips, 8, 1)]
    before = align(blocks, ["f", "c"])
    for b in blocks:
        for i in range(n):  # the same steps, each item's step axis shuffled (masked slots included)
            p = rng.permutation(b.steps.shape[1])
            b.steps[i], b.mask[i], b.timestamps[i] = b.steps[i, p], b.mask[i, p], b.timestamps[i, p]
    after = align(blocks, ["f", "c"])
    for name in ("steps", "mask", "timestamps"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
    check(after, expected([frames, clips], [2, 1]))


def test_one_group_is_load_steps_unchanged_and_bad_calls_are_refused():
    block = to_block("frames", [seconds(0, 0, [0, 1], 2), None], 4, 2)
    tl = align([block], ["hc"])
    assert tl.steps is block.steps and tl.timestamps is block.timestamps
    np.testing.assert_array_equal(tl.mask, block.mask)
    assert tl.columns == ["hc:frames0", "hc:frames1"]
    with pytest.raises(UsageError, match="at least one"):
        align([], [])
    with pytest.raises(UsageError, match="2 feature groups but 1 names"):
        align([block, block], ["a"])
    with pytest.raises(UsageError, match="a named twice"):
        align([block, block], ["a", "a"])
    other = to_block("x", [seconds(0, 0, [0], 1)], 1, 1)
    with pytest.raises(UsageError, match=r"different numbers of items \(\[1, 2\]\)"):
        align([block, other], ["a", "b"])
    block.timestamps[0, 1] = np.nan
    with pytest.raises(BankError, match="marked valid have no timestamp"):
        align([block, block], ["a", "b"])


def test_load_timeline_reads_a_bank_in_manifest_order(tmp_path):
    n = 37  # two row chunks
    ids = [f"v{i:02d}" for i in range(n)]
    bank = FeatureBank(tmp_path / "b.zarr")
    rows = bank.register([virtual_digest(VirtualItem("ds", v)) for v in ids])
    layout = GroupLayout(pooled_dim=2, max_steps=6, step_dim=2, frames_per_step=1)
    bank.ensure_group("frames@1", GroupSchema(extractor="frames", spec="frames", version="1", layout=layout,
                                              feature_names=("r", "g")))
    clips_layout = GroupLayout(pooled_dim=3, max_steps=5, step_dim=3, frames_per_step=4)
    bank.ensure_group("clips@2", GroupSchema(extractor="clips", spec="clips", version="1", layout=clips_layout))
    imported = GroupLayout(pooled_dim=2, max_steps=1, step_dim=2, frames_per_step=0)
    bank.ensure_group("tab@3", GroupSchema(extractor="tab", spec=IMPORT_SPEC_PREFIX + "tab", version="1",
                                           layout=imported))
    frames = [seconds(0, i, list(range(1 + i % 6)), 2) for i in range(n)]
    clips = [None if i % 9 == 4 else seconds(1, i, [0.5 + s for s in range(1 + i % 5)], 3) for i in range(n)]
    table = [seconds(2, i, [0.0], 2) for i in range(n)]

    def commit(items: list[Steps]) -> dict[int, StepFeatures]:
        out = {}
        for r, item in zip(rows, items):
            if item is None:
                out[int(r)] = StepFeatures(status=FAILED, error="broken")
                continue
            steps = np.stack([x for _, x in item])
            out[int(r)] = StepFeatures(status=OK, pooled=steps.mean(0), steps=steps,
                                       mask=np.ones(len(item), bool),
                                       timestamps=np.array([t for t, _ in item], np.float32),
                                       frame_indices=np.zeros((len(item), 1), np.int32))
        return out

    bank.commit(rows, {}, {"frames@1": commit(frames), "clips@2": commit(clips), "tab@3": commit(table)})
    order = np.random.default_rng(2).permutation(n)  # the manifest lists the items in another order
    pd.DataFrame({"video_id": [ids[i] for i in order],
                  "path": [f"featbank-import://ds/{ids[i]}" for i in order]}).to_csv(tmp_path / "m.csv", index=False)
    manifest = load_manifest(tmp_path / "m.csv")
    reader = FeatureBank(tmp_path / "b.zarr", mode="r")

    tl = load_timeline(reader, manifest, ["frames", "clips", "tab"])
    assert tl.columns == ["frames:r", "frames:g", "clips:f0", "clips:f1", "clips:f2", "tab:f0", "tab:f1"]
    check(tl, expected([[g[i] for i in order] for g in (frames, clips, table)], [2, 3, 2]))
    assert np.isnan(tl.steps[order == 4][0, :, 2:5]).all() and tl.mask[order == 4].sum() == 5  # clips failed

    one = load_timeline(reader, manifest, ["frames"])
    block = load_steps(reader, manifest, "frames")
    for name in ("steps", "mask", "timestamps"):
        np.testing.assert_array_equal(getattr(one, name), getattr(block, name), err_msg=name)
    with pytest.raises(UsageError, match="frames named twice"):
        load_timeline(reader, manifest, ["frames", "frames"])
    bank.commit(np.array([rows[0]]), {}, {"tab@3": {int(rows[0]): StepFeatures(status=PENDING)}})
    with pytest.raises(BankError, match="no tab@3 features yet"):
        load_timeline(FeatureBank(tmp_path / "b.zarr", mode="r"), manifest, ["frames", "tab"])
