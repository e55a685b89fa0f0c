"""Fast bank reads: chunk files read directly, imported groups stored once, status without zarr."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from featbank.bank.chunkfiles import ChunkFiles, ChunkReport
from featbank.bank.localview import LocalBankView, open_for_counting
from featbank.bank.schema import IMPORT_SPEC_PREFIX, GroupLayout, GroupSchema
from featbank.bank.store import (
    ABSENT,
    FAILED,
    OK,
    PENDING,
    ROW_CHUNK,
    FeatureBank,
    StepFeatures,
    damaged_rows,
)
from featbank.errors import BankError

LAYOUT = GroupLayout(pooled_dim=5, max_steps=3, step_dim=2, frames_per_step=1)
EXTRACTED = GroupSchema(extractor="x", spec="x", version="1", layout=LAYOUT)
IMPORTED = GroupSchema(extractor="v", spec=IMPORT_SPEC_PREFIX + "v", version="1",
                       layout=GroupLayout(pooled_dim=5, max_steps=1, step_dim=5, frames_per_step=0))
N = 2 * ROW_CHUNK + 7  # three chunks, the last one partial


def digest(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big")


def extracted_row(r: int) -> StepFeatures:
    n = 1 + r % 3
    return StepFeatures(status=OK, pooled=np.arange(5, dtype=np.float32) + r,
                        steps=np.full((n, 2), r, np.float32), mask=np.ones(n, bool),
                        timestamps=np.arange(n, dtype=np.float32), frame_indices=np.full((n, 1), r, np.int32))


def imported_row(r: int) -> StepFeatures:
    x = np.arange(5, dtype=np.float32) * r
    x[r % 5] = np.nan  # imports keep genuine gaps
    return StepFeatures(status=OK, pooled=x, steps=x[None], mask=np.ones(1, bool),
                        timestamps=np.zeros(1, np.float32))


@pytest.fixture
def bank(tmp_path):
    """A local bank: an extracted group with OK / FAILED / ABSENT / PENDING rows, and an import."""
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", EXTRACTED)
    bank.ensure_group("v@2", IMPORTED)
    rows = bank.register([digest(i) for i in range(N)])
    extracted = {int(r): extracted_row(int(r)) for r in rows if r % 7}
    extracted.update({7: StepFeatures(status=FAILED, error="broken"), 14: StepFeatures(status=ABSENT)})
    imported = {int(r): imported_row(int(r)) for r in rows if r != 3}
    bank.commit(rows, {}, {"x@1": extracted, "v@2": imported})
    return bank


def test_direct_reads_equal_zarr_for_every_array_and_row_selection(bank):
    group = bank.group("x@1")
    for name in ("status", "pooled", "steps", "mask", "timestamps", "frame_indices"):
        files = bank.chunk_files(f"features/x@1/{name}")
        assert files is not None, name
        for lo, hi in ((0, N), (3, ROW_CHUNK + 2), (ROW_CHUNK, 2 * ROW_CHUNK), (N - 1, N), (5, 5)):
            np.testing.assert_array_equal(files.read(lo, hi), group[name][lo:hi], err_msg=f"{name} {lo}:{hi}")
    for sel in (np.arange(N), np.array([N - 1, 2, 2, ROW_CHUNK]), np.array([], dtype=np.int64)):
        fast = bank.read_rows("x@1", ("pooled", "steps", "mask", "status"), sel)
        for got, name in zip(fast, ("pooled", "steps", "mask", "status")):
            np.testing.assert_array_equal(got, group[name][:N][sel])
    np.testing.assert_array_equal(bank.digests(), bank.items["digest"][:N])


def test_a_missing_chunk_reads_as_its_fill_and_a_truncated_one_is_refused(bank):
    folder = bank.chunk_files("features/x@1/pooled").folder
    (folder / "c" / "1" / "0").unlink()
    report = ChunkReport()
    values = ChunkFiles.open(folder).read(0, N, report)
    assert report.missing == {1} and np.isnan(values[ROW_CHUNK:2 * ROW_CHUNK]).all()
    with pytest.raises(BankError, match="marked done but their features are missing"):
        bank.pooled("x@1", np.arange(N))
    chunk = folder / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(BankError, match=r"chunk 0 \(rows 0-31\) is unreadable: 100 bytes.*validate"):
        bank.pooled("x@1", np.arange(N))
    assert any("x@1/pooled: chunk 0 (rows 0-31) unreadable" in p for p in bank.validate())


def test_layouts_the_direct_reader_does_not_know_go_through_zarr(tmp_path):
    zarr.create_array(tmp_path / "blosc.zarr", shape=(40, 3), chunks=(8, 3), dtype="float32",
                      compressors=zarr.codecs.BloscCodec())
    zarr.create_array(tmp_path / "sharded.zarr", shape=(40,), chunks=(8,), shards=(16,), dtype="int8")
    zarr.create_array(tmp_path / "columns.zarr", shape=(40, 6), chunks=(8, 3), dtype="float32")
    for name in ("blosc", "sharded", "columns"):
        assert ChunkFiles.open(tmp_path / f"{name}.zarr") is None, name
    assert ChunkFiles.open(tmp_path / "nothing.zarr") is None


def test_imported_groups_store_their_matrix_once_and_read_back_steps(bank):
    group = bank.group("v@2")
    assert sorted(group.array_keys()) == ["pooled", "status"]
    assert group.attrs["schema"] == 2 and bank.group("x@1").attrs["schema"] == 1
    rows = np.arange(N)
    pooled, status = bank.pooled("v@2", rows)
    assert status[3] == PENDING and (np.delete(status, 3) == OK).all()
    steps, mask, timestamps = bank.read_rows("v@2", ("steps", "mask", "timestamps"), rows)
    assert steps.shape == (N, 1, 5) and mask.shape == timestamps.shape == (N, 1)
    np.testing.assert_array_equal(steps[:, 0], pooled)
    assert mask[:, 0].tolist() == (status == OK).tolist()
    assert (timestamps[status == OK] == 0).all() and np.isnan(timestamps[3]).all()
    assert bank.validate() == []


def test_imported_groups_of_the_old_layout_still_read(tmp_path):
    """Imports written before (schema 1) also stored steps, mask and timestamps: reads ignore them."""
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("v@2", IMPORTED)
    group = bank.group("v@2")
    attrs = group.attrs.asdict()
    group.attrs.put({**attrs, "schema": 1})
    for name, spec in (("steps", dict(shape=(0, 1, 5), chunks=(ROW_CHUNK, 1, 5), dtype="float32",
                                      fill_value=np.nan)),
                       ("mask", dict(shape=(0, 1), chunks=(ROW_CHUNK, 1), dtype="bool", fill_value=False))):
        group.create_array(name, **spec)
    rows = bank.register([digest(0), digest(1)])
    bank.commit(rows, {}, {"v@2": {0: imported_row(1), 1: imported_row(2)}})
    assert bank.group("v@2")["steps"].shape == (ROW_CHUNK, 1, 5)  # grown with the bank
    pooled, _ = bank.pooled("v@2", rows)
    (steps,) = bank.read_rows("v@2", ("steps",), rows)
    np.testing.assert_array_equal(steps[:, 0], pooled)
    assert bank.validate() == []


def test_damage_rule_in_blocks_matches_the_rule_row_by_row():
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(700, 6)).astype(np.float32)
    pooled[[5, 300, 699], 2] = np.nan
    pooled[[256, 512], 0] = np.inf
    pooled[[255, 600], 1] = 3e33
    pooled[[100, 400]] = np.nan
    status = np.full(700, OK)
    status[[5, 400]] = ABSENT
    for imported in (False, True):
        expected = [s == OK and (bool(np.isinf(x).any()) or not np.isfinite(x).any()
                                 or bool((np.abs(np.nan_to_num(x)) > 1e30).any())
                                 or (not imported and not np.isfinite(x).all()))
                    for x, s in zip(pooled, status)]
        assert damaged_rows(pooled, status, imported).tolist() == expected


def test_the_local_view_counts_like_the_bank(bank):
    view = open_for_counting(bank.path)
    assert isinstance(view, LocalBankView) and view.count == bank.count == N
    assert view.group_keys() == bank.group_keys() == ["v@2", "x@1"]
    some = np.array([0, 7, 14, N - 1])
    for key in view.group_keys():
        assert view.counts(key) == bank.counts(key) and view.counts(key, some) == bank.counts(key, some)
    assert view.rows_of([digest(5), digest(999)]).tolist() == bank.rows_of([digest(5), digest(999)]).tolist()
    assert view.hash_cache() == bank.hash_cache()
    (bank.chunk_files("features/x@1/status").folder / "zarr.json").unlink()
    with pytest.raises(BankError, match="features/x@1/status is missing or unreadable.*validate"):
        view.status("x@1")


def test_the_local_view_leaves_urls_and_non_banks_to_the_bank(tmp_path, bank):
    assert isinstance(open_for_counting(f"file://{bank.path}"), FeatureBank)
    with pytest.raises(BankError, match="no feature bank"):
        open_for_counting(tmp_path / "nothing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["title"] = "someone else's"
    with pytest.raises(BankError, match="not a featbank bank"):
        open_for_counting(tmp_path / "other.zarr")


def test_status_command_reads_the_bank_without_importing_zarr(bank):
    code = ("import sys\nfrom featbank.cli import main\n"
            f"assert main(['status', '--bank', {bank.path!r}]) == 0\n"
            "assert not {'zarr', 'fsspec'} & set(sys.modules), 'zarr imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for key in ("x@1", "v@2"):
        counts = ", ".join(f"{n} {name}" for name, n in bank.counts(key).items())
        assert any(line.strip().startswith(key) and line.endswith(counts) for line in done.stdout.splitlines())
