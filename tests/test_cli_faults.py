"""Every error a user can cause ends in one clear message and a documented exit code, never a traceback.

One table, :data:`FAULTS`, sweeps the command line with the faults users meet: missing or garbage
manifests, paths that are folders or sit under a regular file, bank paths that are not banks, bad
``--bank`` URLs, unknown tracks, protocols, learners and extractors, bad weights directories and
configuration, fits that cannot work (a constant target, too few rows). Each runs through
``featbank.cli.main`` in-process (what the console script calls): an exception escaping ``main`` is
the traceback a user would see, so the sweep fails on it, and on a wrong exit code or a message
that does not say what went wrong. Root ignores file permissions, so "cannot write there" is
provoked with a path under a regular FILE (``NotADirectoryError``), which every user hits alike.
Two checks run real processes: a fault through the installed ``featbank`` entry point, and an
extraction interrupted with SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featbank.cli import main
from featbank.demo.data import synthesize

FAST = ["--learners", "ridge", "--jobs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: six tiny clips extracted into a bank, manifests good and bad, a regular file."""
    root = tmp_path_factory.mktemp("faults")
    manifest = synthesize(root, n_sources=3, variants=3, seconds=1, size=(32, 40), fps=8, seed=5)
    table = pd.read_csv(manifest)
    table.to_csv(root / "good.csv", index=False)
    table.assign(overall=3.0).to_csv(root / "constant.csv", index=False)
    table.drop_duplicates("group").to_csv(root / "three.csv", index=False)  # one variant per source
    (root / "garbage.csv").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "a_file").write_text("a regular file, not a folder\n")
    (root / "README.md").write_text("# not a checkpoint, not a bank, not a manifest\n" * 10)
    (root / "folder").mkdir()
    table[["video_id", "overall"]].rename(columns={"overall": "mos"}).to_csv(root / "labels.csv", index=False)
    assert main(["extract", "--manifest", str(root / "good.csv"), "--extractor", "handcrafted",
                 "--bank", str(root / "bank.zarr"), "--workers", "0", "--no-progress"]) == 0
    return root


@dataclass(frozen=True)
class Fault:
    """One mistake: the command line (``{ws}`` is the workspace), its exit code, and a regex the
    one-line message on stderr must match."""

    name: str
    argv: str
    code: int
    message: str
    env: tuple[tuple[str, str], ...] = ()

    def args(self, ws: Path) -> list[str]:
        return self.argv.format(ws=ws).split()


BANK = "--bank {ws}/bank.zarr"
FIT = f"fit --manifest {{ws}}/good.csv --features handcrafted --targets overall --folds 3 {BANK} " + " ".join(FAST)
EXTRACT = "extract --extractor handcrafted --workers 0 --no-progress --manifest {ws}/good.csv"
UNDER_FILE = "{ws}/a_file/sub"  # NotADirectoryError: what "permission denied" is to root
IS_A_FILE = (r"a_file(/\S*)?: (a part of this path is a regular file, not a folder|it exists and is a regular file, "
             r"but a folder is needed there)")
FAULTS = [
    # manifests
    Fault("manifest_missing", "check --manifest {ws}/nope.csv", 2, r"nope.csv.*(not found|does not exist|no such)"),
    Fault("manifest_garbage", "check --manifest {ws}/garbage.csv", 2, r"cannot read manifest"),
    Fault("manifest_is_a_folder", "check --manifest {ws}/folder", 2, r"manifest .*/folder does not exist"),
    Fault("manifest_under_a_file", f"check --manifest {UNDER_FILE}.csv", 2, r"a_file/sub.csv"),
    Fault("manifest_is_readme", "check --manifest {ws}/README.md", 2, r"README.md"),
    Fault("extract_manifest_missing", f"extract --extractor handcrafted --manifest {{ws}}/nope.csv {BANK}", 2,
          r"nope.csv"),
    # banks
    Fault("bank_missing", "info --bank {ws}/no_bank.zarr", 3, r"no_bank.zarr"),
    Fault("bank_is_a_file", "info --bank {ws}/README.md", 3, r"README.md"),
    Fault("bank_under_a_file", f"info --bank {UNDER_FILE}.zarr", 3, r"a_file/sub.zarr"),
    Fault("validate_bank_missing", "validate --bank {ws}/no_bank.zarr", 3, r"no_bank.zarr"),
    Fault("status_bank_is_a_file", "status --bank {ws}/README.md", 3, r"README.md"),
    Fault("extract_into_bank_under_a_file", f"{EXTRACT} --bank {UNDER_FILE}.zarr", 1,
          IS_A_FILE),
    Fault("extract_bank_is_a_file", f"{EXTRACT} --bank {{ws}}/README.md", 3, r"README.md is a file, not a feature bank"),
    Fault("bank_url_unknown_protocol", f"{EXTRACT} --bank nosuchproto://bucket/bank.zarr", 3,
          r"cannot open bank nosuchproto://bucket/bank.zarr: Protocol not known"),
    Fault("info_bank_url_unknown_protocol", "info --bank nosuchproto://bucket/bank.zarr", 3, r"protocol"),
    Fault("fit_bank_missing", FIT.replace("bank.zarr", "no_bank.zarr"), 3, r"no_bank.zarr"),
    # names that name nothing
    Fault("unknown_track", "check --manifest {ws}/good.csv --track nosuchtrack", 2, r"nosuchtrack"),
    Fault("unknown_extractor", f"{EXTRACT} --extractor nosuchnet {BANK}", 2,
          r"unknown extractor 'nosuchnet'; available: .*handcrafted"),
    Fault("unknown_protocol", FIT.replace("--folds 3", "--protocol nosuch:3"), 2, r"unknown protocol 'nosuch:3'; use one of: kfold"),
    Fault("unknown_learner", FIT.replace("--learners ridge", "--learners nosuchlearner"), 2,
          r"unknown learner 'nosuchlearner'; valid learners: .*ridge"),
    Fault("unknown_feature_block", FIT.replace("--features handcrafted", "--features nosuchblock"), 3,
          r"nosuchblock"),
    Fault("unknown_target", FIT.replace("--targets overall", "--targets nosuchlabel"), 2, r"nosuchlabel"),
    Fault("protocol_and_folds", f"{FIT} --protocol kfold:3 --folds 3", 2, r"either --protocol or --folds"),
    Fault("folds_one", f"{FIT} --folds 1", 2, r"n_splits must be at least 2, got 1"),
    # fits that cannot work (guards in featbank/learning)
    Fault("fit_constant_target", FIT.replace("good.csv", "constant.csv"), 2,
          r"constant target\(s\), nothing to learn or rank: overall"),
    Fault("fit_too_few_rows_for_stack", FIT.replace("good.csv", "three.csv") + " --stack", 2,
          r"round 0 .*sample\(s\).* (at least|need)"),  # the learning engine's guard, before any fit
    # weights and configuration
    Fault("weights_dir_is_a_file", f"{EXTRACT} --extractor slowfast --weights-dir {{ws}}/README.md {BANK}", 4,
          r"SLOWFAST_8x8_R50.pyth was not found \(looked in .*README.md/SLOWFAST_8x8_R50.pyth"),
    Fault("weights_import_missing_file", "weights import {ws}/nope.pyth --extractor slowfast --weights-dir {ws}/w",
          4, r"nope.pyth does not exist"),
    Fault("weights_import_readme", "weights import {ws}/README.md --extractor slowfast --weights-dir {ws}/w", 4,
          r"README.md is not a PyTorch checkpoint"),
    Fault("weights_import_without_dir", "weights import {ws}/README.md --extractor slowfast", 1,
          r"needs a weights directory"),
    Fault("extract_missing_weights", f"{EXTRACT} --extractor slowfast --weights-dir {{ws}}/folder {BANK}", 4,
          r"SLOWFAST_8x8_R50.pyth was not found"),
    Fault("bad_precision_env", f"{EXTRACT} --extractor timm:resnet18 --random-weights --device cpu {BANK}", 2,
          r"\$FEATBANK_PRECISION must be one of fp32, fp16, bf16, not 'fp64'", env=(("FEATBANK_PRECISION", "fp64"),)),
    Fault("unknown_device", f"{EXTRACT} --extractor timm:resnet18 --random-weights --device tpu9 {BANK}", 2,
          r"--device 'tpu9' is not a torch device .*use cpu, cuda or cuda:N"),
    Fault("cuda_device_out_of_range", f"{EXTRACT} --extractor timm:resnet18 --random-weights --device cuda:64 "
                                      f"{BANK}", 2, r"--device cuda:64: this machine has \d+ usable CUDA device"),
    # outputs that cannot be written
    Fault("fit_out_under_a_file", f"{FIT} --out {UNDER_FILE}", 1, IS_A_FILE),
    Fault("export_out_under_a_file", f"export --manifest {{ws}}/good.csv --features handcrafted {BANK} "
                                     f"--out {UNDER_FILE}.parquet", 1, IS_A_FILE),
    Fault("export_out_is_a_folder", f"export --manifest {{ws}}/good.csv --features handcrafted {BANK} "
                                    f"--out {{ws}}/folder", 1, r"folder: export writes .h5, .hdf5, .parquet"),
    Fault("predict_model_missing", f"predict --manifest {{ws}}/good.csv --model {{ws}}/no_model "
                                   f"--out {{ws}}/sub.csv {BANK}", 1, r"no_model"),
    Fault("demo_out_under_a_file", f"demo --out {UNDER_FILE} --sources 2 --variants 1 --no-progress", 1, IS_A_FILE),
    # scoring and importing
    Fault("score_unknown_track", "score --track konvid1k --labels {ws}/good.csv --predictions {ws}/good.csv", 2,
          r"unknown track 'konvid1k'; tracks: .*kvq"),
    Fault("score_labels_lack_the_tracks_column", "score --track kvq --labels {ws}/good.csv --predictions "
                                                 "{ws}/good.csv", 2, r"good.csv lacks label column\(s\) mos"),
    Fault("score_missing_predictions", "score --track ugc --labels {ws}/labels.csv --predictions {ws}/nope.csv", 2,
          r"no submission file at .*nope.csv"),
    Fault("score_garbage_predictions", "score --track ugc --labels {ws}/labels.csv --predictions {ws}/garbage.csv",
          2, r"garbage.csv is not a readable submission"),
    Fault("import_without_label_columns", "import --features {ws}/garbage.csv --labels {ws}/good.csv --name g "
                                          "--manifest-out {ws}/g.csv --bank {ws}/import_bank.zarr", 1,
          r"name the label column\(s\) with --label-columns"),
    Fault("import_garbage_features", "import --features {ws}/garbage.csv --labels {ws}/good.csv --name g "
                                     "--label-columns overall --manifest-out {ws}/g.csv --bank {ws}/import_bank.zarr",
          1, r"cannot read feature file .*garbage.csv"),
    Fault("import_features_missing", "import --features {ws}/nope.npy --labels {ws}/good.csv --name g "
                                     "--label-columns overall --manifest-out {ws}/g.csv --bank {ws}/import_bank.zarr",
          1, r"feature file .*nope.npy does not exist"),
]


def run_cli(argv: list[str], capsys, monkeypatch, env: tuple[tuple[str, str], ...] = ()) -> tuple[int, str]:
    """``main(argv)``'s exit code and stderr; an exception escaping it fails with its traceback."""
    for name, value in env:
        monkeypatch.setenv(name, value)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors: a usage line and exit 2, no traceback
        code = exc.code
    except BaseException:
        pytest.fail(f"featbank {' '.join(argv)} raised instead of exiting:\n{traceback.format_exc()}")
    return code, capsys.readouterr().err


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_a_user_fault_ends_in_one_clear_message_and_its_exit_code(fault: Fault, ws, capsys, monkeypatch):
    argv = fault.args(ws)
    code, err = run_cli(argv, capsys, monkeypatch, fault.env)
    assert "Traceback" not in err, err
    assert code == fault.code, f"exit {code}, expected {fault.code}: {err}"
    assert re.search(fault.message, err, re.IGNORECASE | re.DOTALL), err
    assert err.startswith(f"featbank {argv[0]}: error: ") or err.startswith("usage: "), err


def test_faults_through_the_installed_entry_point_print_no_traceback(ws):
    """The console script, in its own process: what a user's shell shows (warnings included)."""
    exe = Path(sys.executable).with_name("featbank")
    for fault in (FAULTS[0], FAULTS[7]):
        run = subprocess.run([str(exe), *fault.args(ws)], capture_output=True, text=True, timeout=120)
        assert run.returncode == fault.code and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def has_a_video_open(pid: int) -> bool:
    """Whether process ``pid`` holds one of the manifest's videos open: hashing or decoding has begun."""
    try:
        return any("/videos/" in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # the process ended, or a descriptor closed while being read
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when the run has begun")
def test_an_interrupted_extraction_exits_130_with_one_line_and_resumes(tmp_path):
    """SIGINT (Ctrl-C) mid-run, as the run reads its videos: exit 130 with one line and no traceback
    (nor zarr's abandoned-I/O noise); a rerun completes a bank that validates."""
    manifest = synthesize(tmp_path, n_sources=8, variants=3, seconds=2, size=(32, 40), fps=8, seed=6)
    bank = tmp_path / "bank.zarr"
    cmd = [sys.executable, "-m", "featbank.cli", "extract", "--manifest", str(manifest), "--extractor",
           "handcrafted,audio", "--bank", str(bank), "--workers", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not has_a_video_open(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGINT arrived (machine faster than this test's clips)")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip() == "featbank: interrupted; committed rows are kept, re-run to resume", err
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
    assert main(["validate", "--bank", str(bank)]) == 0


def test_the_sweep_covers_every_kind_the_issue_lists():
    """Issue #13's list: input, disk paths, banks, URLs, names, weights, configuration, fit guards."""
    names = {f.name for f in FAULTS}
    assert len(names) == len(FAULTS) >= 40
    for needed in ("manifest_missing", "manifest_garbage", "bank_is_a_file", "bank_url_unknown_protocol",
                   "unknown_track", "unknown_protocol", "unknown_learner", "weights_dir_is_a_file",
                   "manifest_is_a_folder", "fit_out_under_a_file", "fit_constant_target",
                   "fit_too_few_rows_for_stack", "bad_precision_env"):
        assert needed in names


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list the run's worker processes")
def test_a_terminated_fit_exits_130_and_leaves_no_worker_processes(tmp_path):
    """SIGTERM (a scheduler's stop) while ``fit`` runs joblib workers: they go with it, exit 130."""
    import psutil

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)).astype(np.float32)
    np.save(tmp_path / "f.npy", X)
    pd.DataFrame({"id": [f"v{i}" for i in range(300)], "mos": X[:, 0] + rng.normal(size=300)}).to_csv(
        tmp_path / "l.csv", index=False)
    manifest, bank = tmp_path / "m.csv", tmp_path / "b.zarr"
    assert main(["import", "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "l.csv"),
                 "--label-columns", "mos", "--id-column", "id", "--name", "x", "--manifest-out", str(manifest),
                 "--bank", str(bank)]) == 0
    cmd = [sys.executable, "-m", "featbank.cli", "fit", "--manifest", str(manifest), "--bank", str(bank),
           "--features", "x", "--learners", "lightgbm,mlp", "--stack", "--jobs", "2", "--out", str(tmp_path / "run"),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 180
    workers: list[psutil.Process] = []
    while proc.poll() is None and time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in parent.children(recursive=True) if "LokyProcess" in " ".join(p.cmdline())]
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.skip("the fit ended before its workers were seen")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    # The second line appears only when clean-up hung and the watchdog ended the run.
    assert err.strip().splitlines()[0] == "featbank: interrupted", err
    assert all(line.startswith("featbank: interrupted") for line in err.strip().splitlines()), err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker processes left running: {[p.pid for p in alive]}"


WATCHDOG_SCRIPT = """
import threading, time
import featbank.cli as cli
cli.INTERRUPT_GRACE_S = 1.0
threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon: interpreter exit waits for it
with cli.interrupts_end_the_run():
    print("ready", flush=True)
    time.sleep(600)
"""


def test_an_interrupted_run_whose_clean_up_hangs_is_ended_by_the_watchdog():
    """Clean-up that never finishes (here a thread the interpreter waits for at exit, as loky's
    executor manager did once in CI) cannot keep a stopped run alive: exit 130 after the grace time."""
    proc = subprocess.Popen([sys.executable, "-c", WATCHDOG_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "clean-up did not finish in 1 s" in err, err
    assert time.monotonic() - started < 30
