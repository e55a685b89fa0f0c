"""What real clusters do to a bank: concurrent writers, a full disk, damaged files, read-only mounts.

Real processes and real files throughout: concurrent writers are ``featbank extract`` subprocesses;
the full disk is a size-limited tmpfs and the read-only bank a read-only bind mount (both need
root, which the test machines have; the tests skip where ``mount`` is refused); damage is done to
the chunk files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featbank.bank.lock import LOCK_NAME, BankLock
from featbank.bank.matrix import load_blocks, lookup_rows
from featbank.bank.store import ABSENT, OK, FeatureBank, damaged_rows
from featbank.cli import main
from featbank.demo.data import synthesize
from featbank.errors import BankError
from featbank.extraction.orchestrate import extract_manifest
from featbank.io.manifest import load_manifest

EXTRACTOR = "handcrafted"
N_MANIFESTS = 4


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """40 one-second clips in 4 manifests of 10 (one per source), and a bank of all of them made by
    one writer: the reference every other bank must equal, row for row by video."""
    root = tmp_path_factory.mktemp("clips")
    full = synthesize(root, N_MANIFESTS, 10, seconds=1, size=(48, 64), fps=8)
    table = pd.read_csv(full)
    parts = []
    for i, (_, part) in enumerate(table.groupby("group")):
        parts.append(root / f"part{i}.csv")
        part.to_csv(parts[-1], index=False)
    reference = root / "reference.zarr"
    extract_manifest(full, reference, [EXTRACTOR], progress=False)
    return {"root": root, "full": full, "parts": parts, "reference": reference}


def features_by_video(bank_path: Path, manifest: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pooled and per-step features of each of the manifest's videos, looked up by content."""
    with FeatureBank(bank_path, mode="r") as bank:
        m = load_manifest(manifest)
        rows = lookup_rows(bank, m)
        assert (rows >= 0).all(), "unregistered items"
        key = bank.keys_for(EXTRACTOR)[0]
        assert (bank.status(key, rows) == OK).all()
        pooled, steps = bank.read_rows(key, ("pooled", "steps"), rows)
        return {vid: (pooled[i], steps[i]) for i, vid in enumerate(m.video_ids)}


def assert_same_as_reference(bank_path: Path, clips: dict) -> None:
    got, want = features_by_video(bank_path, clips["full"]), features_by_video(clips["reference"], clips["full"])
    for vid, (pooled, steps) in want.items():
        np.testing.assert_array_equal(got[vid][0], pooled, err_msg=vid)
        np.testing.assert_array_equal(got[vid][1], steps, err_msg=vid)


def cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "featbank.cli", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ concurrent writers
def test_concurrent_extracts_into_one_new_bank_serialise_and_every_row_is_its_own_video(clips, tmp_path):
    """Four ``extract --workers 0`` on different manifests into one new bank, started together:
    one writes at a time (the others wait on the lock), all finish, and every row holds exactly
    the features a single writer computes for its video."""
    bank = tmp_path / "shared.zarr"
    runs = [cli("extract", "--manifest", str(m), "--extractor", EXTRACTOR, "--bank", str(bank), "--workers", "0",
                "--no-progress", "--wait-lock", "300") for m in clips["parts"]]
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
    assert not (bank / LOCK_NAME).exists()
    with FeatureBank(bank, mode="r") as b:
        assert b.count == 40 and b.validate() == []
    assert_same_as_reference(bank, clips)


def test_a_second_writer_is_refused_naming_the_holder_while_readers_go_on(clips, tmp_path, capsys):
    bank = tmp_path / "b.zarr"
    shutil.copytree(clips["reference"], bank)
    with BankLock(str(bank), command="featbank extract --manifest other.csv"):
        writer = cli("extract", "--manifest", str(clips["parts"][0]), "--extractor", "audio", "--bank",
                     str(bank), "--workers", "0", "--no-progress")
        code, _, err = writer.wait(timeout=120), *writer.communicate()
        assert code == 3 and "Traceback" not in err
        assert f"pid {os.getpid()}" in err and "other.csv" in err and "--break-lock" in err
        # readers never need the lock
        assert run_main(capsys, "info", "--bank", str(bank))[0] == 0
        assert run_main(capsys, "status", "--bank", str(bank))[0] == 0
        assert run_main(capsys, "validate", "--bank", str(bank))[0] == 0
        # a run with nothing to compute writes nothing, so it needs no lock either
        code, out, _ = run_main(capsys, "extract", "--manifest", str(clips["parts"][1]), "--extractor", EXTRACTOR,
                                "--bank", str(bank), "--workers", "0", "--no-progress")
        assert code == 0 and "10 already complete" in out
    assert not (bank / LOCK_NAME).exists()


def test_stale_locks_are_taken_over_on_this_host_and_broken_by_hand_elsewhere(clips, tmp_path, capsys):
    bank = tmp_path / "b.zarr"
    args = ("extract", "--manifest", str(clips["parts"][0]), "--extractor", "test-mean", "--bank", str(bank),
            "--workers", "0", "--no-progress")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    bank.mkdir()
    lock = {"host": os.uname().nodename, "pid": int(gone.stdout), "started": "2026-01-01T00:00:00+00:00",
            "command": "featbank extract (killed)"}
    (bank / LOCK_NAME).write_text(json.dumps(lock))
    with pytest.warns(UserWarning, match="no longer running"):
        code, _, _ = run_main(capsys, *args)  # a dead pid on this host: taken over
    assert code == 0 and not (bank / LOCK_NAME).exists()

    (bank / LOCK_NAME).write_text(json.dumps({**lock, "host": "another-node", "pid": 1}))
    code, _, err = run_main(capsys, *args[:4], "test-clip", *args[5:])  # cannot tell: refused
    assert code == 3 and "another-node" in err
    code, out, _ = run_main(capsys, "validate", "--bank", str(bank), "--break-lock")
    assert code == 0 and "removed the write lock of pid 1 on another-node" in out
    assert run_main(capsys, *args[:4], "test-clip", *args[5:])[0] == 0


def test_fsspec_urls_share_the_lock_and_a_killed_holder_is_taken_over(clips, tmp_path, capsys):
    """A ``file://`` bank is locked by the same file as its path; a holder killed with SIGKILL (a
    real process) leaves a stale lock that the next writer takes over with a warning."""
    bank = tmp_path / "b.zarr"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from featbank.bank.lock import BankLock; "
                               f"BankLock('file://{bank}').acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ("extract", "--manifest", str(clips["parts"][0]), "--extractor", "test-mean", "--workers", "0",
                "--no-progress", "--bank")
        code, _, err = run_main(capsys, *args, str(bank))
        assert code == 3 and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="no longer running"):
        assert run_main(capsys, *args, f"file://{bank}")[0] == 0


def test_other_fsspec_stores_get_a_best_effort_lock():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/locked.zarr/" + LOCK_NAME, json.dumps({"host": "node7", "pid": 1, "command": "x"}).encode())
    with pytest.raises(BankError, match="pid 1 on node7"):
        BankLock("memory://locked.zarr").acquire()
    BankLock("memory://locked.zarr").break_lock()
    with BankLock("memory://locked.zarr") as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert not fs.exists("/locked.zarr/" + LOCK_NAME)


# ------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (a full disk that frees instantly); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("free_kib", [8, 48, 96, 200])
def test_a_full_disk_stops_with_one_message_leaves_a_valid_bank_and_a_rerun_completes(
        clips, small_disk, capsys, free_kib):
    """ENOSPC from a real full tmpfs. With 8 KiB free the items table's creation is cut short,
    with 48 KiB the registration, with 96 KiB the group's creation (half its arrays made), with
    200 KiB the second chunk's commit (the first 32 rows are committed and kept). Each time: one
    message, exit 3, a valid bank, and after freeing the space a rerun ends with the single
    writer's features."""
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - free_kib * 1024))
    bank = small_disk / "b.zarr"
    args = ("extract", "--manifest", str(clips["full"]), "--extractor", EXTRACTOR, "--bank", str(bank),
            "--workers", "0", "--no-progress")
    code, _, err = run_main(capsys, *args)
    assert code == 3 and "no space left on the device" in err and "MiB free" in err, err
    assert err.count("error:") == 1 and not (bank / LOCK_NAME).exists()
    filler.unlink()
    if (bank / "zarr.json").exists():
        assert run_main(capsys, "validate", "--bank", str(bank))[0] == 0
    code, out, _ = run_main(capsys, *args)
    assert code == 0 and (free_kib < 200 or "32 already complete" in out), out
    assert run_main(capsys, "validate", "--bank", str(bank))[0] == 0
    assert_same_as_reference(bank, clips)


# ------------------------------------------------------------------ damage
def _target(bank: Path, array: str) -> Path:
    """The file to damage: ``array`` (``items/<name>`` or a group's array) or its first chunk file."""
    group = next(p for p in sorted((bank / "features").iterdir()) if p.is_dir())
    base = bank / array if array.startswith("items/") else group / array
    if base.name == "zarr.json":
        return base
    return next(p for p in sorted(base.rglob("*")) if p.is_file() and p.name != "zarr.json")


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(len(path.read_bytes())))


DAMAGE = {
    "pooled chunk deleted": ("pooled", _delete, "chunk(s) [0] of committed rows are missing"),
    "pooled chunk truncated": ("pooled", _truncate, "unreadable"),
    "pooled chunk random bytes": ("pooled", _garble, "missing or non-finite pooled"),
    "steps chunk deleted": ("steps", _delete, "steps: chunk(s) [0] of committed rows are missing"),
    "steps chunk truncated": ("steps", _truncate, "unreadable"),
    "steps chunk random bytes": ("steps", _garble, "unreadable"),
    "mask chunk deleted": ("mask", _delete, "without any valid step"),
    "timestamps chunk deleted": ("timestamps", _delete, "timestamps: chunk(s) [0]"),
    "frame_indices chunk truncated": ("frame_indices", _truncate, "unreadable"),
    "status chunk random bytes": ("status", _garble, "status: chunk 0 (rows 0-31) unreadable"),
    "status metadata deleted": ("status/zarr.json", _delete, "status: metadata missing"),
    "steps metadata deleted": ("steps/zarr.json", _delete, "steps: metadata missing"),
    "items fact metadata deleted": ("items/n_frames/zarr.json", _delete, "items/n_frames: metadata missing"),
    "items fact chunk truncated": ("items/fps", _truncate, "items/fps: chunk 0"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_validate_finds_damage_repair_marks_it_pending_and_extract_redoes_it(clips, tmp_path, capsys, case):
    array, damage, expected = DAMAGE[case]
    bank = tmp_path / "b.zarr"
    shutil.copytree(clips["reference"], bank)
    damage(_target(bank, array))

    code, out, err = run_main(capsys, "validate", "--bank", str(bank))
    assert code == 3 and expected in err and "--repair" in err, err
    code, out, err = run_main(capsys, "validate", "--bank", str(bank), "--repair")
    assert code == 0 and "repaired:" in out and out.strip().endswith("OK"), out + err
    code, out, _ = run_main(capsys, "extract", "--manifest", str(clips["full"]), "--extractor", EXTRACTOR,
                            "--bank", str(bank), "--workers", "0", "--no-progress")
    assert code == 0
    assert run_main(capsys, "validate", "--bank", str(bank))[0] == 0
    assert_same_as_reference(bank, clips)


def test_lost_digests_cannot_be_repaired_and_say_so(clips, tmp_path, capsys):
    bank = tmp_path / "b.zarr"
    shutil.copytree(clips["reference"], bank)
    _delete(_target(bank, "items/digest"))
    code, _, err = run_main(capsys, "validate", "--bank", str(bank), "--repair")
    assert code == 3 and "re-extract into a new bank" in err


def test_rows_marked_done_with_lost_features_never_reach_a_learner(clips, tmp_path):
    """A deleted pooled chunk reads as NaN under status OK: loading refuses, pointing at repair."""
    bank = tmp_path / "b.zarr"
    shutil.copytree(clips["reference"], bank)
    _delete(_target(bank, "pooled"))
    with FeatureBank(bank, mode="r") as b, pytest.raises(BankError, match="validate .*--repair"):
        load_blocks(b, load_manifest(clips["full"]), [EXTRACTOR])


def test_damage_rule_keeps_absent_rows_and_import_gaps_legitimate():
    nan, inf = np.nan, np.inf
    status = np.array([OK, ABSENT, OK, OK, OK])
    pooled = np.array([[1, 2], [nan, nan], [nan, nan], [1, inf], [1, 3e33]], dtype=np.float32)
    assert damaged_rows(pooled, status, imported=False).tolist() == [False, False, True, True, True]
    gaps = np.array([[1, nan], [nan, nan], [nan, nan], [1, inf], [1, 3e33]], dtype=np.float32)
    assert damaged_rows(gaps, status, imported=True).tolist() == [False, False, True, True, True]


# ------------------------------------------------------------------ read-only bank
@pytest.fixture
def read_only_bank(clips, tmp_path):
    """A copy of the reference bank behind a read-only bind mount (EROFS even for root)."""
    source, mount = tmp_path / "src.zarr", tmp_path / "ro.zarr"
    shutil.copytree(clips["reference"], source)
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        pytest.skip("cannot remount the bind mount read-only here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_bank_extracts_nothing_quietly_and_refuses_work_clearly(clips, read_only_bank, capsys):
    args = ("extract", "--manifest", str(clips["full"]), "--bank", str(read_only_bank), "--workers", "0",
            "--no-progress", "--extractor")
    code, out, _ = run_main(capsys, *args, EXTRACTOR)
    assert code == 0 and "40 already complete" in out
    code, _, err = run_main(capsys, *args, "test-mean")
    assert code == 3 and "cannot be written (Read-only file system" in err and err.count("error:") == 1
    assert run_main(capsys, "info", "--bank", str(read_only_bank))[0] == 0
