"""Packing finished groups (`featbank compact`): same values, few files, safe to cut short, and
writes after it get their row chunks back."""

import os
import shutil

import numpy as np
import pytest

from featbank.bank import compact
from featbank.bank.compact import compact_bank
from featbank.bank.localview import LocalBankView
from featbank.bank.schema import IMPORT_SPEC_PREFIX, GroupLayout, GroupSchema
from featbank.bank.store import (
    FAILED,
    OK,
    PENDING,
    ROW_CHUNK,
    FeatureBank,
    StepFeatures,
)
from featbank.cli import main

LAYOUT = GroupLayout(pooled_dim=6, max_steps=2, step_dim=3, frames_per_step=0)
DONE = GroupSchema(extractor="x", spec="x", version="1", layout=LAYOUT)
IMPORTED = GroupSchema(extractor="v", spec=IMPORT_SPEC_PREFIX + "v", version="1",
                       layout=GroupLayout(pooled_dim=6, max_steps=1, step_dim=6, frames_per_step=0))
N = 3 * ROW_CHUNK + 5


def digest(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big")


def row(r: int) -> StepFeatures:
    return StepFeatures(status=OK, pooled=np.arange(6, dtype=np.float32) + r, steps=np.full((2, 3), r, np.float32),
                        mask=np.ones(2, bool), timestamps=np.arange(2, dtype=np.float32))


@pytest.fixture
def bank(tmp_path, monkeypatch):
    """Finished groups x@1 and v@2 (one failed row), unfinished y@3; packed chunks of 64 rows."""
    monkeypatch.setattr(compact, "PACKED_BYTES", 64 * 6 * 4)  # several packed chunks at this size
    bank = FeatureBank(tmp_path / "b.zarr")
    for key, schema in (("x@1", DONE), ("v@2", IMPORTED), ("y@3", DONE)):
        bank.ensure_group(key, schema)
    rows = bank.register([digest(i) for i in range(N)])
    done = {int(r): row(int(r)) for r in rows}
    done[5] = StepFeatures(status=FAILED, error="broken")
    bank.commit(rows, {}, {"x@1": done, "v@2": done, "y@3": {0: row(0)}}, ids={5: "five"})
    return bank


def snapshot(bank: FeatureBank) -> dict:
    rows = np.arange(bank.count)
    return {key: (bank.read_rows(key, ("pooled", "status", "steps", "mask"), rows),
                  bank.group(key)["pooled"][:bank.count], bank.counts(key)) for key in bank.group_keys()}


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        for a, b in zip([*before[key][0], before[key][1]], [*after[key][0], after[key][1]]):
            np.testing.assert_array_equal(a, b, err_msg=key)
        assert before[key][2] == after[key][2]


def files_of(bank: FeatureBank, key: str, name: str) -> int:
    folder = bank.chunk_files(f"features/{key}/{name}").folder
    return sum(len(fs) for _, _, fs in os.walk(folder)) - 1  # zarr.json


def test_compact_packs_finished_groups_into_few_files_with_the_same_values(bank):
    before = snapshot(bank)
    lines = compact_bank(bank)
    assert lines[0].startswith("v@2: packed status (4 files -> 1), pooled (4 files -> 2)")
    assert lines[1].startswith("x@1: packed") and f"y@3: {N - 1} rows pending; left as is" in lines[2]
    assert lines[3].startswith("items: packed digest (4 files -> ")  # (1.5 kB chunks: 32 rows here)
    assert files_of(bank, "x@1", "pooled") == 2 and files_of(bank, "y@3", "pooled") == 1
    assert not (bank.chunk_files("features/x@1/pooled").folder / "c").exists()
    assert_same(before, snapshot(bank))
    assert bank.validate() == []
    view = LocalBankView.open(bank.path)
    assert view.counts("x@1") == bank.counts("x@1") and compact_bank(bank)[1] == "x@1: already packed"


def test_writes_after_compact_get_row_chunks_back_and_keep_every_row(bank):
    compact_bank(bank)
    before = snapshot(bank)
    rows = bank.register([digest(i) for i in range(N + 3)])  # three new items: every group grows
    np.testing.assert_array_equal(bank.pooled("x@1", np.arange(N))[0], before["x@1"][0][0])  # grown, packed
    assert bank.items["digest"].chunks[0] == ROW_CHUNK and bank.rows_of([digest(N + 2)]).tolist() == [N + 2]
    bank.ensure_group("x@1", DONE)  # what every writer calls first
    assert bank.group("x@1")["pooled"].chunks[0] == ROW_CHUNK and bank.group("v@2")["pooled"].chunks[0] != ROW_CHUNK
    bank.commit(rows[-3:], {}, {"x@1": {int(r): row(int(r)) for r in rows[-3:]},
                                "v@2": {int(r): row(int(r)) for r in rows[-3:]}})  # v@2 unpacked on write
    X, status = bank.pooled("x@1", rows)
    np.testing.assert_array_equal(X[:N], before["x@1"][0][0])
    assert X[N:, 0].tolist() == [N, N + 1, N + 2] and (status[N:] == OK).all()
    np.testing.assert_array_equal(bank.pooled("v@2", rows[:N])[0], before["v@2"][0][0])
    assert bank.validate() == []
    assert compact_bank(bank)[1].startswith("x@1: packed")


def test_a_compact_cut_short_before_or_after_the_switch_leaves_the_same_bank(bank, monkeypatch, tmp_path):
    before = snapshot(bank)
    real_replace = os.replace

    def killed_at_switch(src, dst):
        if str(dst).endswith("zarr.json"):
            raise KeyboardInterrupt  # the kill lands between the new files and the switch
        return real_replace(src, dst)

    monkeypatch.setattr(compact.os, "replace", killed_at_switch)
    with pytest.raises(KeyboardInterrupt):
        compact_bank(bank)
    monkeypatch.setattr(compact.os, "replace", real_replace)
    assert bank.group("x@1")["pooled"].chunks[0] == ROW_CHUNK  # not switched: row chunks, stray files beside
    assert_same(before, snapshot(bank))
    assert bank.validate() == []
    # killed after the switch, before the old files were removed: they are stray, never read
    folder = bank.chunk_files("features/x@1/pooled").folder
    shutil.copytree(folder / "c", tmp_path / "old_c")
    compact_bank(bank)
    shutil.copytree(tmp_path / "old_c", folder / "c")
    for stale in (folder / "c").rglob("*"):  # zeros: were they ever read, the values would differ
        if stale.is_file():
            stale.write_bytes(bytes(stale.stat().st_size))
    assert_same(before, snapshot(bank))
    bank.ensure_group("x@1", DONE)  # unpacking overwrites them
    assert_same(before, snapshot(bank))
    assert bank.validate() == []


def test_damage_in_a_packed_chunk_is_found_and_repaired(bank, capsys):
    compact_bank(bank)
    chunk = bank.chunk_files("features/x@1/pooled").path(1)  # rows 64-127
    chunk.write_bytes(chunk.read_bytes()[:50])
    with pytest.raises(Exception, match="chunk 1 .*unreadable"):
        bank.pooled("x@1", np.arange(N))
    problems = bank.validate()
    assert any(f"x@1/pooled: chunk 1 (rows 64-{N - 1}) unreadable" in p for p in problems), problems
    assert main(["validate", "--bank", bank.path, "--repair"]) == 0
    out = capsys.readouterr().out
    assert "unpacked pooled of x@1" in out and f"marked {N - 64} damaged rows pending" in out
    reopened = FeatureBank(bank.path, mode="r")
    status = reopened.status("x@1")
    assert (status[64:] == PENDING).all() and (np.delete(status[:64], 5) == OK).all()
    assert reopened.validate() == []


def test_compact_command_refuses_banks_it_cannot_pack(bank, tmp_path, capsys):
    assert main(["compact", "--bank", bank.path]) == 0
    assert "x@1: packed" in capsys.readouterr().out
    assert main(["compact", "--bank", f"file://{bank.path}"]) == 3
    assert "local folder" in capsys.readouterr().err
    assert main(["compact", "--bank", str(tmp_path / "none.zarr")]) == 3


def test_pack_finished_packs_large_finished_groups_only_and_survives_a_failed_packing(bank, monkeypatch):
    from featbank.bank.compact import is_packed, pack_finished

    before = snapshot(bank)
    assert pack_finished(bank, ["x@1", "y@3"]) == []  # N rows < AUTO_PACK_ROWS: nothing to gain
    monkeypatch.setattr(compact, "AUTO_PACK_ROWS", N)
    real = compact.relayout

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compact, "relayout", disk_full)
    with pytest.warns(UserWarning, match="x@1: left in row chunks"):  # extract's user sees it too
        lines = pack_finished(bank, ["x@1", "y@3"])  # y@3 has rows pending: skipped
    assert len(lines) == 1 and lines[0].startswith("x@1: left in row chunks") and "No space" in lines[0]
    assert not is_packed(bank.chunk_files("features/x@1/pooled"))
    assert_same(before, snapshot(bank))
    monkeypatch.setattr(compact, "relayout", real)
    assert pack_finished(bank, ["x@1", "y@3"])[0].startswith("x@1: packed")
    assert is_packed(bank.chunk_files("features/x@1/pooled"))
    assert not is_packed(bank.chunk_files("features/y@3/pooled"))
    assert_same(before, snapshot(bank))
