"""The bank's guarantees: content keys, chunk-wise commits, resumability, validation."""

import json
from dataclasses import replace

import numpy as np
import pytest
import zarr

from featbank.bank.schema import BANK_FORMAT, SCHEMA_VERSION, GroupSchema, readable_names

from featbank.bank.store import ABSENT, FAILED, OK, PENDING, ROW_CHUNK, FeatureBank, GroupLayout, ItemRecord, StepFeatures
from featbank.errors import BankError
from featbank.extraction.media import MediaInfo

LAYOUT = GroupLayout(pooled_dim=4, max_steps=3, step_dim=2, frames_per_step=1)
SCHEMA = GroupSchema(extractor="x", spec="x", version="1", layout=LAYOUT)
INFO = MediaInfo(n_frames=30, fps=15.0, width=8, height=6, has_audio=False)


def digest(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big")  # never all zeros, like a real SHA-256


def ok_row(value: float) -> StepFeatures:
    return StepFeatures(status=OK, pooled=np.full(4, value, np.float32),
                        steps=np.full((2, 2), value, np.float32), mask=np.array([True, True]),
                        timestamps=np.array([0.0, 1.0], np.float32),
                        frame_indices=np.array([[0], [15]], np.int32))


def test_register_is_idempotent_and_dedups(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    rows = bank.register([digest(1), digest(2), digest(1)])
    assert rows.tolist() == [0, 1, 0]
    assert bank.register([digest(2), digest(3)]).tolist() == [1, 2]
    assert bank.count == 3 and bank.capacity == ROW_CHUNK
    reopened = FeatureBank(tmp_path / "b.zarr", mode="r")
    assert reopened.rows_of([digest(3), digest(9)]).tolist() == [2, -1]


def test_growth_past_one_chunk_keeps_groups_aligned(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    bank.register([digest(i) for i in range(ROW_CHUNK + 5)])
    assert bank.group("x@1")["pooled"].shape == (2 * ROW_CHUNK, 4)
    assert bank.validate() == []


def test_commit_writes_rows_and_records_failures(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    rows = bank.register([digest(i) for i in range(3)])
    bank.commit(rows, {0: ItemRecord(INFO, 10), 1: ItemRecord(None, 0), 2: ItemRecord(INFO, 12)},
                {"x@1": {0: ok_row(1.0), 1: StepFeatures(status=FAILED, error="broken file"),
                         2: StepFeatures(status=ABSENT, error="no audio track")}},
                ids={0: "a", 1: "b", 2: "c"})
    assert bank.status("x@1").tolist() == [OK, FAILED, ABSENT]
    X, status = bank.pooled("x@1", np.array([2, 0]))
    assert np.isnan(X[0]).all() and X[1].tolist() == [1.0] * 4
    g = bank.group("x@1")
    assert g["mask"][0].tolist() == [True, True, False]  # third step beyond this item's length
    assert g["frame_indices"][0, :, 0].tolist() == [0, 15, -1]
    assert bank.items["fps"][0] == 15.0 and bank.items["probe"][1] == FAILED
    failures = bank.failures("x@1")
    assert [f["video_id"] for f in failures.values()] == ["b"]
    assert bank.validate() == []
    # a later success clears the failure record
    bank.commit(np.array([1]), {1: ItemRecord(INFO, 5)}, {"x@1": {1: ok_row(2.0)}}, ids={1: "b"})
    assert bank.failures("x@1") == {} and bank.status("x@1").tolist() == [OK, OK, ABSENT]


def test_pooled_reads_any_row_selection_across_chunks(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    n = 2 * ROW_CHUNK + 3
    rows = bank.register([digest(i) for i in range(n)])
    bank.commit(rows, {}, {"x@1": {int(r): ok_row(float(r)) for r in rows}})
    for sel in (np.arange(n), np.arange(5, ROW_CHUNK + 9), np.array([ROW_CHUNK + 1, 3, 3, 40]),
                np.array([4, 6, 7])):
        X, status = bank.pooled("x@1", sel)
        assert X[:, 0].tolist() == sel.astype(float).tolist() and (status == OK).all()


def test_validate_detects_broken_invariants(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    bank.register([digest(1), digest(2), digest(3), digest(4)])
    g = bank.group("x@1")
    g["status"][0] = OK  # committed status without data: a half-written row
    g["status"][1] = FAILED  # failed without an error record
    g["status"][2] = ABSENT  # absent stream, yet data
    g["mask"][2, 0] = True
    g["mask"][3, 0] = True  # pending with data: a commit killed before its status, harmless
    problems = bank.validate()
    assert any("non-finite pooled" in p for p in problems)
    assert any("without an error record" in p for p in problems)
    assert any("absent but with valid steps" in p for p in problems)
    # row 0 (OK) has no data at all: each data array's chunk is missing, and it has no step
    # rows were marked by hand, never committed: row 0 (OK) has no data at all
    # (the mask chunk exists: rows 2 and 3 set it)
    assert {p for p in problems if "chunk(s) [0] of committed rows are missing" in p} == {
        f"{name}: chunk(s) [0] of committed rows are missing"
        for name in ("x@1/pooled", "x@1/steps", "x@1/timestamps", "x@1/frame_indices")}
    assert any("without any valid step" in p for p in problems)
    assert not any("pending" in p for p in problems) and len(problems) == 8


def test_layout_mismatch_and_missing_bank_are_errors(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    with pytest.raises(BankError, match="layout"):
        bank.ensure_group("x@1", replace(SCHEMA, layout=GroupLayout(5, 3, 2, 1)))
    with pytest.raises(BankError, match="no feature bank"):
        FeatureBank(tmp_path / "absent.zarr", mode="r")
    with pytest.raises(BankError, match="no feature group"):
        bank.group("y@2")


def test_uncommitted_rows_stay_pending(tmp_path):
    """Data written without its status chunk (a kill between the two) is invisible and redone."""
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    bank.register([digest(1)])
    bank.group("x@1")["pooled"][0] = np.ones(4)
    assert bank.status("x@1").tolist() == [PENDING]
    assert bank.validate() == []


def test_group_schema_round_trips_and_reads_format_1_groups(tmp_path):
    schema = replace(SCHEMA, config={"q": 2}, feature_names=("a", "b"), pooled_names=("a_mean", "b_mean", "a_std", "b_std"),
                     weights={"filename": "w.pt", "random": True}, details={"inf_to_nan": 3})
    assert GroupSchema.from_attrs(json.loads(json.dumps(schema.to_attrs()))) == schema
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", schema)
    stored = bank.schema("x@1")
    assert stored.created and replace(stored, created=None) == schema and stored.random_weights
    assert stored.column_names() == ["a_mean", "b_mean", "a_std", "b_std"]
    # A group as featbank wrote them before the schema version was stored: no "schema" key.
    old = {k: v for k, v in bank.group("x@1").attrs.asdict().items() if k != "schema"}
    bank.group("x@1").attrs.put(old)
    reopened = FeatureBank(tmp_path / "b.zarr", mode="r")
    assert replace(reopened.schema("x@1"), created=None) == schema
    assert bank.group("x@1").attrs["inf_to_nan"] == 3  # details stay flat, as format 1 stored them


def test_newer_versions_are_refused_naming_both(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1", SCHEMA)
    bank.group("x@1").attrs["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(BankError, match=rf"group schema {SCHEMA_VERSION + 1}.*reads schema ≤ {SCHEMA_VERSION}"):
        bank.schema("x@1")
    bank.root.attrs.update({"format": BANK_FORMAT + 1, "created_by": "featbank 9.0"})
    with pytest.raises(BankError, match=rf"featbank 9.0 in bank format {BANK_FORMAT + 1}.*reads format ≤ {BANK_FORMAT}"):
        FeatureBank(tmp_path / "b.zarr", mode="r")


def test_paths_that_are_not_banks_get_actionable_messages(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"x")
    for mode in ("r", "a"):
        with pytest.raises(BankError, match=r"not a feature bank \(no zarr.json; it holds cat.jpg\)"):
            FeatureBank(folder, mode=mode)
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["title"] = "someone else's"
    with pytest.raises(BankError, match="not a featbank bank"):
        FeatureBank(tmp_path / "other.zarr")
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.register([digest(1)])
    (tmp_path / "b.zarr" / "zarr.json").unlink()
    for mode in ("r", "a"):
        with pytest.raises(BankError, match=r"root metadata \(zarr.json\) is missing, though its items"):
            FeatureBank(tmp_path / "b.zarr", mode=mode)
    (tmp_path / "b.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(BankError, match="unreadable"):
        FeatureBank(tmp_path / "b.zarr", mode="r")


def test_bank_on_a_memory_store_as_context_manager():
    store = zarr.storage.MemoryStore()
    with FeatureBank(store) as bank:
        bank.ensure_group("x@1", SCHEMA)
        rows = bank.register([digest(0), digest(1)])
        bank.commit(rows, {}, {"x@1": {0: ok_row(3.0), 1: ok_row(4.0)}})
    with FeatureBank(store, mode="r") as bank:  # the caller's store is not closed by the bank
        X, status = bank.pooled("x@1", np.array([1, 0]))
        assert X[:, 0].tolist() == [4.0, 3.0] and (status == OK).all()
        steps, mask = bank.read_rows("x@1", ("steps", "mask"), np.array([0]))
        assert steps.shape == (1, 3, 2) and mask.tolist() == [[True, True, False]]
        assert bank.validate() == [] and bank.path.startswith("memory://")
        with pytest.raises(BankError, match="cannot reopen"):  # dask workers reopen banks by name
            bank.location
    with pytest.raises(BankError, match="no feature bank"):
        FeatureBank(zarr.storage.MemoryStore(), mode="r")


def test_readable_names_are_the_shortest_unambiguous():
    keys = ["handcrafted@5d3ee49b35", "clip@0123456789", "clip@0123ffffff", "videval@aa00000000", "plain"]
    assert readable_names(keys) == {"handcrafted@5d3ee49b35": "handcrafted", "clip@0123456789": "clip@01234",
                                    "clip@0123ffffff": "clip@0123f", "videval@aa00000000": "videval",
                                    "plain": "plain"}
    assert readable_names(["a@12345678", "a@abcdef00"]) == {"a@12345678": "a@1234", "a@abcdef00": "a@abcd"}


def test_groups_lists_readable_names_dims_and_counts(tmp_path):
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.ensure_group("x@1aaaa", SCHEMA)
    bank.ensure_group("x@2bbbb", SCHEMA)
    bank.ensure_group("y@3cccc", replace(SCHEMA, extractor="y", spec="y"))
    rows = bank.register([digest(0), digest(1)])
    bank.commit(rows[:1], {}, {"y@3cccc": {0: ok_row(1.0)}})
    infos = {g.key: g for g in bank.groups()}
    assert [infos[k].name for k in sorted(infos)] == ["x@1aaa", "x@2bbb", "y"]
    y = infos["y@3cccc"]
    assert (y.pooled_dim, y.steps, y.counts["ok"], y.counts["pending"]) == (4, (3, 2), 1, 1)
    assert bank.summary()["groups"]["y@3cccc"]["name"] == "y"


def test_a_track_being_recorded_by_another_writer_is_left_out_of_the_hash_cache(tmp_path):
    """Commands read the bank's remembered tracks before taking the lock; a track another process
    has created but not yet described (as a reader could catch it before tracks were written in one
    metadata write) must not stop them: its files are simply hashed again."""
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x" * 10)
    bank = FeatureBank(tmp_path / "b.zarr")
    bank.save_track(tmp_path / "m.csv", ["a"], [video], [b"\x01" * 32])
    bank.root["tracks"].create_group("in_progress")
    stat = video.stat()
    assert bank.hash_cache() == {(str(video.resolve()), stat.st_size, stat.st_mtime_ns): b"\x01" * 32}
    assert [t["items"] for t in bank.tracks()] == [1]
