"""CLI start-up: how long quick ``featbank`` commands take, next to importing zarr and pandas.

Commands that only read a manifest or a bank should answer as fast as the libraries they need
load. Each command runs as a fresh subprocess (what a user waits for), interleaved with the
reference ``python -c "import zarr, pandas"`` so that machine load hits both alike; medians over
``--repeats`` runs are printed with their ratio to the reference. The goal: every command within
``--limit`` seconds (1.5) and ``--ratio`` (2x) of the reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = "import zarr, pandas"


def _fixtures(root: Path) -> tuple[Path, Path]:
    """A 20-item manifest and a bank holding one imported feature group (no media needed)."""
    from featbank.cli import main as featbank

    rng = np.random.default_rng(0)
    np.save(root / "features.npy", rng.normal(size=(20, 8)).astype(np.float32))
    pd.DataFrame({"id": [f"v{i}" for i in range(20)], "mos": np.linspace(1, 5, 20)}).to_csv(
        root / "labels.csv", index=False)
    manifest, bank = root / "manifest.csv", root / "bank.zarr"
    code = featbank(["import", "--features", str(root / "features.npy"), "--labels", str(root / "labels.csv"),
                     "--label-columns", "mos", "--id-column", "id", "--name", "tiny",
                     "--manifest-out", str(manifest), "--bank", str(bank)])
    if code != 0:
        raise RuntimeError(f"setting up the benchmark bank failed (featbank import exit {code})")
    return manifest, bank


def _seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench startup", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--limit", type=float, default=1.5, help="goal in seconds (default 1.5)")
    parser.add_argument("--ratio", type=float, default=2.0, help="goal as a multiple of the reference (2)")
    args = parser.parse_args(argv)
    featbank = [sys.executable, "-m", "featbank.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        manifest, bank = _fixtures(Path(tmp))
        commands = {
            f'python -c "{REFERENCE}"': [sys.executable, "-c", REFERENCE],
            "featbank --version": [*featbank, "--version"],
            "featbank --help": [*featbank, "--help"],
            "featbank tracks": [*featbank, "tracks"],
            "featbank check": [*featbank, "check", "--manifest", str(manifest)],
            "featbank info": [*featbank, "info", "--bank", str(bank)],
            "featbank status": [*featbank, "status", "--bank", str(bank), "--manifest", str(manifest)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved: load on the machine affects every command alike
            for name, command in commands.items():
                times[name].append(_seconds(command))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    reference = medians[f'python -c "{REFERENCE}"']
    print(f"CLI start-up, median of {args.repeats} fresh processes (goal: <= {args.limit:g} s and "
          f"<= {args.ratio:g}x the reference)")
    print(f"{'command':34s} {'median s':>9s} {'x ref':>7s}  goal")
    missed = 0
    for name, median in medians.items():
        ratio = median / reference
        met = median <= args.limit and ratio <= args.ratio
        missed += name.startswith("featbank") and not met
        verdict = "(reference)" if not name.startswith("featbank") else "ok" if met else "MISSED"
        print(f"{name:34s} {median:9.3f} {ratio:7.2f}  {verdict}")
    return 1 if missed else 0
