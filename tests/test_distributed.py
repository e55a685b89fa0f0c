"""Extraction on dask.distributed: same bank as one process, bit for bit, through worker and client kills;
the default mode picks a cluster only when it pays; clusters start their workers as configured and
leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import zarr
from dask.distributed import Client

from featbank.bank.store import OK, ROW_CHUNK, FeatureBank
from featbank.extraction import mode
from featbank.extraction.distributed import extract_distributed, local_cluster
from featbank.extraction.mode import Choice, WorkCosts, choose_workers, makespan
from featbank.extraction.orchestrate import extract_manifest
from featbank.demo.synth import write_video

from conftest import moving_frames

SPECS = ["handcrafted", "audio"]
N_ITEMS = 3 * ROW_CHUNK + 5  # four chunks, the last one partial


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Many tiny distinct videos (some silent), so the work spans several bank chunks."""
    root = tmp_path_factory.mktemp("many")
    rows = []
    for i in range(N_ITEMS):
        sound = None if i % 7 == 0 else (0.2 * np.sin(np.arange(8000) * (0.05 + i / 1000))).astype(np.float32)
        write_video(root / f"v{i:03d}.mp4", moving_frames(10, 32, 32, seed=i), 10.0, audio=sound)
        rows.append({"video_id": f"v{i:03d}", "path": f"v{i:03d}.mp4"})
    (root / "broken.mp4").write_bytes(b"\x00" * 512)
    rows.append({"video_id": "broken", "path": "broken.mp4"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> Path:
    bank = tmp_path_factory.mktemp("ref") / "bank.zarr"
    extract_manifest(manifest, bank, SPECS, progress=False)
    return bank


def assert_same_bank(a: Path, b: Path) -> None:
    """Every array of the two banks holds identical values (NaN where NaN), and both validate."""
    A, B = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    compared = 0
    for path, arr in A.members(max_depth=None):
        if isinstance(arr, zarr.Array):
            np.testing.assert_array_equal(arr[:], B[path][:], err_msg=path)
            compared += 1
    assert compared >= 20
    assert FeatureBank(a, mode="r").validate() == [] and FeatureBank(b, mode="r").validate() == []


@pytest.fixture
def cluster():
    with local_cluster(2) as c:
        yield c


def test_two_local_workers_build_the_same_bank_as_one_process(manifest, reference, tmp_path):
    report = extract_distributed(manifest, tmp_path / "bank.zarr", SPECS, workers=2, progress=False)
    assert report.n_failed == 2  # the broken file, for both extractors
    assert_same_bank(reference, tmp_path / "bank.zarr")
    again = extract_distributed(manifest, tmp_path / "bank.zarr", SPECS, workers=2, progress=False)
    assert again.already_done == N_ITEMS + 1  # nothing left: no cluster is even started


def _slow_down_workers() -> None:
    """Runs on each worker: make every decoded batch take a little longer, so a kill lands mid-run."""
    from featbank.extraction.item import StepRunner

    original = StepRunner.flush

    def slow(self):
        time.sleep(0.02)
        original(self)

    StepRunner.flush = slow


def test_killed_worker_loses_nothing_and_writes_nothing_twice(manifest, reference, tmp_path, cluster):
    bank = tmp_path / "bank.zarr"
    with Client(cluster) as client:
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        client.run(_slow_down_workers)
        pids = list(client.run(os.getpid).values())
        outcome: dict = {}
        run = threading.Thread(target=lambda: outcome.setdefault("report", extract_distributed(
            manifest, bank, SPECS, scheduler=cluster.scheduler_address, progress=False)))
        run.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(client.processing().values()):
            time.sleep(0.05)  # wait until the workers hold tasks
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGKILL)
        run.join(timeout=300)
        assert pids[0] not in client.run(os.getpid).values(), "the nanny replaced the killed worker"
    assert not run.is_alive()
    counts = outcome["report"].counts
    assert [c["ok"] for k, c in counts.items() if k.startswith("handcrafted@")] == [N_ITEMS]
    assert_same_bank(reference, bank)


@pytest.mark.parametrize("extra_delay", [0.0, 0.4], ids=["at-first-commit", "mid-chunk"])
def test_killed_client_and_cluster_resume_to_the_same_bank(manifest, reference, tmp_path, extra_delay):
    bank = tmp_path / "bank.zarr"
    # Workers as threads of the client process, so the slow-down reaches them and one killpg
    # takes down client, scheduler and workers together, as when a machine dies.
    script = (
        "import time\n"
        "from dask.distributed import LocalCluster\n"
        "from featbank.extraction.distributed import extract_distributed\n"
        "from featbank.extraction.item import StepRunner\n"
        "flush = StepRunner.flush\n"
        "StepRunner.flush = lambda self: (time.sleep(0.01), flush(self))[1]\n"
        "if __name__ == '__main__':\n"
        "    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:\n"
        f"        extract_distributed({str(manifest)!r}, {str(bank)!r}, {SPECS!r},\n"
        "                            scheduler=cluster.scheduler_address, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    key = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            b = FeatureBank(bank, mode="r")
            key = key or b.keys_for("handcrafted")[0]
            if (b.status(key) == OK).any():
                break
        except Exception:  # the bank is still being created by the client
            continue
    time.sleep(extra_delay)
    os.killpg(proc.pid, signal.SIGKILL)  # client, scheduler and every worker at once
    proc.wait()
    partial = FeatureBank(bank, mode="r")
    assert partial.validate() == []
    done = int((partial.status(key) == OK).sum())
    assert 0 < done < N_ITEMS, "the kill should land mid-run"
    report = extract_manifest(manifest, bank, SPECS, progress=False)
    assert all(c["pending"] == 0 and c["failed"] == 1 for c in report.counts.values())
    assert_same_bank(reference, bank)


def test_bank_on_an_fsspec_url_gives_the_same_bank(manifest, reference, tmp_path):
    url = (tmp_path / "bank.zarr").as_uri()  # file:///...: the FsspecStore path, as for s3:// or gs://
    report = extract_distributed(manifest, url, SPECS, workers=2, progress=False)
    assert report.n_failed == 2 and FeatureBank(url, mode="r").path == url
    assert_same_bank(reference, tmp_path / "bank.zarr")


# --- the default mode: a cluster only when it pays ------------------------------------------------

def test_makespan_hands_whole_chunks_to_the_first_free_worker():
    assert makespan([32, 32, 32, 5], 2) == 64  # 32+32 | 32+5
    assert makespan([32, 16], 2) == 32
    assert makespan([32, 16], 1) == 48
    assert makespan([10, 10, 10], 8) == 10  # never less than the largest chunk


def test_the_chooser_keeps_little_work_in_this_process():
    # 48 short clips at 0.25 s each: 12 s here; any cluster first pays its fixed start-up
    small = choose_workers([32, 16], WorkCosts(item_s=0.25, warmup_s=0.5, setup_s=1.5), slots=2)
    assert small.workers == 0 and small.cluster_workers == 2 and small.cluster_s > small.here_s
    assert "in this process" in small.describe()


def test_the_chooser_starts_a_cluster_when_the_work_dwarfs_its_start_up():
    # 128 clips at 2.3 s each (960x540): 294 s here, about half of it on 2 workers
    big = choose_workers([32] * 4, WorkCosts(item_s=2.3, warmup_s=0.5, setup_s=1.5), slots=2)
    assert big.workers == 2 and big.cluster_s * mode.MIN_GAIN <= big.here_s
    assert big.here_s == pytest.approx(128 * 2.3)
    assert "on 2 local workers" in big.describe()


def test_the_chooser_needs_two_slots_and_two_chunks_and_never_exceeds_the_chunks():
    costly = WorkCosts(item_s=60.0)
    assert choose_workers([32] * 4, costly, slots=1).workers == 0  # one core: nothing runs beside us
    assert choose_workers([32], costly, slots=16).workers == 0  # one chunk is one task
    assert choose_workers([32, 32, 7], costly, slots=16).workers == 3


def test_the_chooser_weighs_the_set_up_each_worker_repeats():
    work = [32] * 4
    light = choose_workers(work, WorkCosts(item_s=1.0, setup_s=1.0), slots=2)
    heavy = choose_workers(work, WorkCosts(item_s=1.0, setup_s=120.0), slots=2)  # a large model to load
    assert light.workers == 2 and heavy.workers == 0
    assert heavy.cluster_s - light.cluster_s == pytest.approx(119.0)


def test_free_slots_leave_out_the_cores_other_work_keeps_busy(monkeypatch):
    monkeypatch.setattr(mode, "default_workers", lambda device: 4)
    for load, free in ((0.9, 4), (1.4, 4), (2.0, 3), (4.0, 1), (12.0, 1)):  # the load counts this process
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert mode.free_slots("cpu") == free, load
    assert mode.free_slots("cuda") == 4  # GPUs are not shared with the load average


def test_the_default_mode_runs_little_work_here_and_builds_the_same_bank(manifest, reference, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(mode, "free_slots", lambda device: 2)  # as on an idle 2-core machine
    report = mode.extract(manifest, tmp_path / "bank.zarr", SPECS, progress=False)
    assert report.mode.startswith("in this process (estimated")  # tiny clips: a cluster cannot pay
    assert report.n_failed == 2
    assert_same_bank(reference, tmp_path / "bank.zarr")


def test_the_probed_rows_and_a_chosen_cluster_build_the_same_bank(manifest, reference, tmp_path, monkeypatch):
    """When the estimate says a cluster pays, the rows timed here are committed first and the rest
    of their chunk goes to a worker: no row is lost or computed twice."""
    chosen = []

    def pays(chunk_sizes, costs, slots):
        chosen.append((list(chunk_sizes), costs))
        return Choice(workers=2, here_s=100.0, cluster_s=10.0, cluster_workers=2)

    monkeypatch.setattr(mode, "choose_workers", pays)
    monkeypatch.setattr(mode, "free_slots", lambda device: 2)
    report = mode.extract(manifest, tmp_path / "bank.zarr", SPECS, progress=False)
    assert report.mode.startswith("on 2 local workers")
    (sizes, costs), = chosen
    assert sizes == [ROW_CHUNK - mode.PROBE_ITEMS, ROW_CHUNK, ROW_CHUNK, 6]  # the broken file is in the last
    assert costs.item_s > 0 and costs.setup_s > 0
    assert report.n_failed == 2
    assert_same_bank(reference, tmp_path / "bank.zarr")


# --- workers as configured, and nothing left behind ------------------------------------------------

def _worker_state() -> dict:
    """Runs on a worker: what its environment holds and which heavy modules it has imported."""
    heavy = ("torch", "open_clip", "timm", "pytorchvideo", "transformers")
    return {"malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "omp": os.environ.get("OMP_NUM_THREADS"),
            "heavy": sorted(m for m in heavy if m in sys.modules), "handcrafted": "extractors.handcrafted" in sys.modules}


def test_workers_keep_glibc_malloc_adaptive_and_import_only_the_extractors_they_run(manifest, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # as a user's shell has it
    with local_cluster(1) as c, Client(c) as client:
        extract_distributed(manifest, tmp_path / "bank.zarr", ["handcrafted"], scheduler=c.scheduler_address,
                            progress=False)
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        (state,) = client.run(_worker_state).values()
    assert state["malloc_trim"] is None  # dask's default would be 65536
    assert state["omp"] == "1"  # dask's other pre-spawn settings stay
    assert state["handcrafted"] and state["heavy"] == []


def _live_processes_in_session(sid: int) -> list[str]:
    """Processes of session ``sid`` that still run (zombies waiting for init to reap them do not)."""
    out = subprocess.run(["ps", "-eww", "-o", "sid=,stat=,pid=,args="], check=True, capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(sid) and not line.split()[1].startswith("Z")]


def _wait_until_gone(sid: int, seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _live_processes_in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize("stop", [None, signal.SIGTERM, signal.SIGINT], ids=["finished", "sigterm", "sigint"])
def test_a_cluster_run_ends_cleanly_and_leaves_no_process(manifest, tmp_path, stop):
    """The CLI on 2 local workers: a finished run prints no "still alive ... killing"; SIGTERM and
    Ctrl-C (to the whole process group, as a terminal sends it) end it with exit 130; either way no
    worker, nanny or helper process of the run outlives it. The finished run takes two chunks."""
    if stop is None:
        rows = pd.read_csv(manifest).tail(ROW_CHUNK + 8)  # the broken file is the last row
        manifest = manifest.with_name("two_chunks.csv")  # beside the videos: paths stay relative
        rows.to_csv(manifest, index=False)
    cmd = [str(Path(sys.executable).with_name("featbank")), "extract", "--manifest", str(manifest), "--extractor",
           ",".join(SPECS), "--bank", str(tmp_path / "bank.zarr"), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop is not None:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and \
                sum("spawn_main" in line for line in _live_processes_in_session(proc.pid)) < 2:
            time.sleep(0.1)  # until both workers run
        if proc.poll() is not None:
            pytest.skip("the run finished before its workers could be stopped")
        os.killpg(proc.pid, stop) if stop == signal.SIGINT else proc.send_signal(stop)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == (130 if stop else 6), err  # 6: the broken file failed, as it should
    assert "still alive" not in err and "killing" not in err, err
    assert _wait_until_gone(proc.pid) == []
    if stop is None:
        assert "ran on 2 local workers" in out
