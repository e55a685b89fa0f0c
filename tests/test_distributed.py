"""Extraction on dask.distributed: same bank as one process, bit for bit, through worker and client kills."""

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
from dask.distributed import Client, LocalCluster

from featbank.bank.store import OK, ROW_CHUNK, FeatureBank
from featbank.extraction.distributed import extract_distributed
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
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
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
