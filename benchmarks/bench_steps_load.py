"""Loading per-step features for every item: the bank vs one .npy file per item vs a raw read.

A temporal head reads every item's per-step features, not one pooled vector: at 40,000 items × 8
steps × 256 features of float32 that is 1.3 GB (``--items/--steps/--dim`` to change it). It must
not take one read per item: the bank reads the covering row span whole chunks at a time (one
chunk file per 32 rows and array). Ways over the same random steps, in one process, interleaved
repeats so machine noise hits all alike, summarised by the median:
  (a) load_steps:    ``FeatureBank(path, mode="r")`` and ``featbank.bank.matrix.load_steps`` of
                     group ``frames`` for the whole manifest (looking up the manifest's rows,
                     status, steps, mask and timestamps included);
  (b) load_timeline: ``featbank.bank.timeline.load_timeline`` of ``frames`` joined with a second
                     group ``clips`` (the same items, 1-s clips starting half a second later,
                     ``--clip-dim`` features): both reads plus putting clips on the frames' grid;
  (b2) align only:   :func:`~featbank.bank.timeline.align` of the two blocks already in memory:
                     what joining costs beyond the reads;
  (c) npy per item:  ``np.load`` of N files of (steps, dim) float32, then ``np.stack``: the usual
                     layout outside featbank;
  (d) raw:           ``np.fromfile`` of one contiguous file of the N × steps × dim float32 of (a).
Every item has all its steps, so (a), (c) and (d) read the same feature bytes. Reported: medians
with warm page cache, then cold (each way's files evicted before its read, as in ``bank_load``:
``drop_caches`` where writable, else ``posix_fadvise(DONTNEED)``); ratios npy per item / load_steps,
load_steps / raw and load_timeline / load_steps; and each layout's size and file count on disk.
The groups are registered and created by the real ``FeatureBank.register`` / ``ensure_group``
(steps stored as extractors' groups are: zstd chunks of 32 rows), rows then written whole chunks
at a time through zarr.

    python -m benchmarks steps_load [--items N] [--steps T] [--dim D] [--clip-dim D2] [--repeats R]
                                    [--cold {auto,drop,fadvise,off}] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_bank_load import (
    WRITE_ROWS,
    _disk,
    setup_cold_reads,
    time_interleaved,
)
from featbank.bank.hashing import virtual_digest
from featbank.bank.matrix import StepBlock, load_steps
from featbank.bank.schema import GroupLayout, GroupSchema
from featbank.bank.store import OK, FeatureBank
from featbank.bank.timeline import Timeline, align, load_timeline
from featbank.io.manifest import Manifest, VirtualItem, load_manifest

DATASET = "bench"
CLIP_OFFSET = 0.5  # clips start half a second after the key frames


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks steps_load", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=40_000, help="items N (default 40000)")
    p.add_argument("--steps", type=int, default=8, help="steps per item T (default 8)")
    p.add_argument("--dim", type=int, default=256, help="features per step of `frames` D (default 256)")
    p.add_argument("--clip-dim", type=int, default=64, help="features per step of `clips` (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per way (default 3)")
    p.add_argument("--cold", choices=("auto", "drop", "fadvise", "off"), default="auto",
                   help="how to evict before cold reads: auto = drop_caches if writable, else fadvise")
    p.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    return p.parse_args(argv)


def _add_group(bank: FeatureBank, name: str, values: np.ndarray, start: float) -> None:
    """Group ``name@0`` holding ``values`` (N, T, D): every step valid, step k at ``start + k`` s."""
    n, t, d = values.shape
    layout = GroupLayout(pooled_dim=d, max_steps=t, step_dim=d, frames_per_step=1)
    group = bank.ensure_group(f"{name}@0", GroupSchema(extractor=name, spec=name, version="0", layout=layout))
    times = np.broadcast_to(np.arange(t, dtype=np.float32) + np.float32(start), (n, t))
    for lo in range(0, n, WRITE_ROWS):
        hi = min(n, lo + WRITE_ROWS)
        group["steps"][lo:hi] = values[lo:hi]
        group["mask"][lo:hi] = True
        group["timestamps"][lo:hi] = times[lo:hi]
        group["status"][lo:hi] = OK  # data first, status last, as commit does


def _build(tmp: Path, frames: np.ndarray, clips: np.ndarray) -> tuple[Path, Manifest, Path, Path]:
    """The bank (both groups), its manifest of imported-style items, the npy folder, the raw file."""
    n = frames.shape[0]
    ids = [f"v{i:06d}" for i in range(n)]
    pd.DataFrame({"video_id": ids, "path": [VirtualItem(DATASET, v).uri for v in ids]}).to_csv(
        tmp / "manifest.csv", index=False)
    bank_path = tmp / "bank.zarr"
    with FeatureBank(bank_path) as bank:
        rows = bank.register([virtual_digest(VirtualItem(DATASET, v)) for v in ids])
        assert (rows == np.arange(n)).all()
        _add_group(bank, "frames", frames, 0.0)
        _add_group(bank, "clips", clips, CLIP_OFFSET)
    npy_dir, raw_path = tmp / "npy", tmp / "raw.f32"
    npy_dir.mkdir()
    for i, v in enumerate(ids):
        np.save(npy_dir / f"{v}.npy", frames[i])
    frames.tofile(raw_path)
    os.sync()  # clean pages, so eviction can drop them
    return bank_path, load_manifest(tmp / "manifest.csv"), npy_dir, raw_path


def _check_timeline(tl: Timeline, frames: np.ndarray, clips: np.ndarray) -> None:
    """Clips on the frames' grid: at second k the clip that started at k - 0.5, at 0 the first one."""
    d = frames.shape[2]
    if not (np.array_equal(tl.steps[..., :d], frames) and np.array_equal(tl.steps[:, 1:, d:], clips[:, :-1])
            and np.array_equal(tl.steps[:, 0, d:], clips[:, 0]) and tl.mask.all()):
        raise AssertionError("steps_load: load_timeline did not join the written groups as the rules say")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    n, t, d, dc = args.items, args.steps, args.dim, args.clip_dim
    nbytes, clip_bytes = n * t * d * 4, n * t * dc * 4
    parent = args.dir or Path(tempfile.gettempdir())
    need = 3 * nbytes + clip_bytes + n * 4096  # bank, npy files (each rounded up to a 4 KiB block), raw
    cold_reads = setup_cold_reads("steps_load", parent, need, f"{n} x {t} x {d} float32 is {nbytes / 1e6:.0f} MB, "
                                  "written three times (bank, npy files, raw)", args.cold)
    if cold_reads is None:
        return 1
    evict = cold_reads.evict

    with tempfile.TemporaryDirectory(dir=parent, prefix="bench_steps_load_") as tmp:
        rng = np.random.default_rng(0)
        frames = rng.standard_normal((n, t, d), dtype=np.float32)
        clips = rng.standard_normal((n, t, dc), dtype=np.float32)
        t0 = time.perf_counter()
        bank_path, manifest, npy_dir, raw_path = _build(Path(tmp), frames, clips)
        build_s = time.perf_counter() - t0
        names = [npy_dir / f"{v}.npy" for v in manifest.video_ids]

        def steps() -> np.ndarray:
            with FeatureBank(bank_path, mode="r") as bank:
                block = load_steps(bank, manifest, "frames")
            assert (block.status == OK).all() and block.mask.all()
            return block.steps

        def timeline() -> Timeline:
            with FeatureBank(bank_path, mode="r") as bank:
                return load_timeline(bank, manifest, ["frames", "clips"])

        def npy() -> np.ndarray:
            return np.stack([np.load(name) for name in names])

        def raw() -> np.ndarray:
            return np.fromfile(raw_path, dtype=np.float32).reshape(n, t, d)

        for name, fn in (("load_steps", steps), ("npy per item", npy), ("raw", raw)):  # warm-up and check
            if not np.array_equal(fn(), frames):
                raise AssertionError(f"steps_load: {name} did not read back the written steps")
        _check_timeline(timeline(), frames, clips)
        del frames, clips
        with FeatureBank(bank_path, mode="r") as bank:
            blocks: list[StepBlock] = [load_steps(bank, manifest, g) for g in ("frames", "clips")]

        def align_only() -> Timeline:
            return align(blocks, ["frames", "clips"])

        ways: dict[str, tuple[Callable[[], object], Path | None]] = {
            "load_steps": (steps, bank_path), "load_timeline": (timeline, bank_path),
            "align only": (align_only, None), "npy per item": (npy, npy_dir), "raw": (raw, raw_path)}
        warm, cold = time_interleaved(ways, args.repeats, evict)
        disk = {"bank": _disk(bank_path), "npy per item": _disk(npy_dir), "raw": _disk(raw_path)}

    print(f"steps_load: {n} items x {t} steps x {d} float32 ({nbytes / 1e6:.0f} MB; `clips` {t} x {dc}, "
          f"{clip_bytes / 1e6:.0f} MB more), median of {args.repeats}, interleaved; setup {build_s:.0f} s")
    labels = {"load_steps": "bank: load_steps(frames)", "load_timeline": "bank: load_timeline(frames+clips)",
              "align only": "align(frames, clips) in memory", "npy per item": "npy per item (np.load+stack)",
              "raw": "raw sequential (np.fromfile)"}
    sections: list[tuple[str, dict[str, list[float]] | None]] = [
        ("warm page cache (each warm read right after a read of the same files)", warm)]
    sections.append((cold_reads.how, cold if evict is not None else None))
    for title, times in sections:
        print(f"  {title}" + (":" if times is not None else ""))
        if times is None:
            continue
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, m in med.items():
            rate = f"{nbytes / m / 1e6:7.0f} MB/s" if name in ("load_steps", "npy per item", "raw") else ""
            print(f"    {labels[name]:36s} {m:8.3f} s  {rate}".rstrip())
        print(f"    ratio npy per item / load_steps: {med['npy per item'] / med['load_steps']:6.2f}x   "
              f"load_steps / raw: {med['load_steps'] / med['raw']:5.2f}x   "
              f"load_timeline / load_steps: {med['load_timeline'] / med['load_steps']:5.2f}x")
    size, alloc, files = disk["bank"]
    print(f"  on disk: bank {size / 1e6:.0f} MB in {files} files ({alloc / 1e6:.0f} MB allocated, both groups); "
          f"npy files {disk['npy per item'][0] / 1e6:.0f} MB in {disk['npy per item'][2]} "
          f"({disk['npy per item'][1] / 1e6:.0f} MB allocated); raw {disk['raw'][0] / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
