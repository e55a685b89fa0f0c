"""Loading a whole feature matrix from the bank vs one .npy file per video vs a raw sequential read.

Fitting a regressor starts by loading every item's pooled vector: at the scale the bank is built
for, 40,000 items × 4,096 dims of float32 (655 MB). The common layout outside featbank is one
``<video_id>.npy`` per video; the floor is reading the same bytes as one contiguous file. Three
ways over the same random matrix, all files in one temporary folder on one disk, timed side by side
in one process, interleaved repeats so machine noise hits all three alike, summarised by the median:
  (a) bank:          ``FeatureBank(path, mode="r").pooled(key, rows)`` for all rows, the read path
                     of ``featbank.bank.matrix.load_blocks`` (opening the bank included);
  (b) npy per video: ``np.load`` of N files of D float32 each, then ``np.stack``;
  (c) raw:           ``np.fromfile`` of one contiguous file of N×D float32.
Reported: medians, npy-per-video / bank (what the bank saves over the usual layout) and bank / raw
(what the bank costs over the floor), first with warm page cache (every way read once before
timing), then cold: before each cold read that way's files are evicted from the page cache, with
``/proc/sys/vm/drop_caches`` (page cache, dentries and inodes) where we may write it (root), else
with ``posix_fadvise(DONTNEED)`` per file, which leaves dentries and inodes cached, so favours the
many-files layout. On a virtual machine the host may still cache the disk, so "cold" is a bound.
Also reported: the bank matrix's size on disk vs the raw bytes (zstd on random floats gains little;
real features with exact zeros compress better). The bank is created with the real API (register,
ensure_group: the bank's chunking and codecs), but its rows are written straight into the group's
arrays, whole chunks at a time, because ``commit`` spends ~1 ms per row on bookkeeping, which is
a minute of setup at the default size and no part of what is measured.

    python -m benchmarks bank_load [--items N] [--dim D] [--repeats R] [--cold {auto,drop,fadvise,off}]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featbank.bank.schema import GroupLayout, GroupSchema
from featbank.bank.store import OK, ROW_CHUNK, FeatureBank

KEY = "bench@0000000000"
WRITE_ROWS = 128 * ROW_CHUNK  # rows per write while building (bounds the build's memory)
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks bank_load", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=40_000, help="rows N (default 40000)")
    p.add_argument("--dim", type=int, default=4096, help="pooled dimension D (default 4096)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per way (default 5)")
    p.add_argument("--cold", choices=("auto", "drop", "fadvise", "off"), default="auto",
                   help="how to evict before cold reads: auto = drop_caches if writable, else fadvise")
    p.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    return p.parse_args(argv)


def _files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs] if root.is_dir() else [root]


def _disk(root: Path) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, data files) under ``root``; zarr.json metadata excluded."""
    stats = [p.stat() for p in _files(root) if p.name != "zarr.json"]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats), len(stats)


def _can_drop() -> bool:
    try:
        DROP_CACHES.write_text("1")
        return True
    except OSError:
        return False


def _evictor(method: str) -> Callable[[Path], None]:
    if method == "drop":
        def evict(root: Path) -> None:
            os.sync()
            DROP_CACHES.write_text("3")
    else:
        def evict(root: Path) -> None:
            for path in _files(root):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return evict


def _build(tmp: Path, n: int, d: int) -> tuple[np.ndarray, Path, Path, Path]:
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    bank_path, npy_dir, raw_path = tmp / "bank.zarr", tmp / "npy", tmp / "raw.f32"
    bank = FeatureBank(bank_path)
    rows = bank.register([hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(n)])
    assert (rows == np.arange(n)).all()
    layout = GroupLayout(pooled_dim=d, max_steps=1, step_dim=1, frames_per_step=0)
    group = bank.ensure_group(KEY, GroupSchema(extractor="bench", spec="bench", version="0", layout=layout))
    for lo in range(0, n, WRITE_ROWS):
        hi = min(n, lo + WRITE_ROWS)
        group["pooled"][lo:hi] = X[lo:hi]
        group["mask"][lo:hi] = True
        group["status"][lo:hi] = OK  # data first, status last, as commit does
    npy_dir.mkdir()
    for i in range(n):
        np.save(npy_dir / f"v{i:06d}.npy", X[i])
    X.tofile(raw_path)
    os.sync()  # clean pages, so eviction can drop them
    return X, bank_path, npy_dir, raw_path


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    n, d, repeats = args.items, args.dim, args.repeats
    nbytes = n * d * 4
    parent = args.dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    need = 3 * nbytes + n * 4096  # bank, npy files (each rounded up to a 4 KiB block), raw
    if free < need:
        print(f"bank_load: refusing to run: {n} x {d} float32 is {nbytes / 1e6:.0f} MB, written three "
              f"times (bank, npy files, raw), needs {need / 1e9:.1f} GB free in {parent}, "
              f"which has {free / 1e9:.1f} GB; use --items/--dim or --dir", file=sys.stderr)
        return 1
    method = args.cold
    if method == "auto":
        method = "drop" if _can_drop() else "fadvise"
    elif method == "drop" and not _can_drop():
        print(f"bank_load: cannot write {DROP_CACHES} (needs root); use --cold fadvise", file=sys.stderr)
        return 1
    evict = _evictor(method) if method != "off" else None

    with tempfile.TemporaryDirectory(dir=parent, prefix="bench_bank_load_") as tmp:
        t0 = time.perf_counter()
        X, bank_path, npy_dir, raw_path = _build(Path(tmp), n, d)
        build_s = time.perf_counter() - t0
        names = [f"v{i:06d}.npy" for i in range(n)]
        rows = np.arange(n)

        def bank() -> np.ndarray:
            matrix, status = FeatureBank(bank_path, mode="r").pooled(KEY, rows)
            assert (status == OK).all()
            return matrix

        def npy() -> np.ndarray:
            return np.stack([np.load(npy_dir / name) for name in names])

        def raw() -> np.ndarray:
            return np.fromfile(raw_path, dtype=np.float32).reshape(n, d)

        ways = {"bank": (bank, bank_path), "npy per video": (npy, npy_dir), "raw": (raw, raw_path)}
        for name, (fn, _) in ways.items():  # warm-up, and all three must return the same matrix
            if not np.array_equal(fn(), X):
                raise AssertionError(f"bank_load: {name} did not read back the written matrix")
        warm: dict[str, list[float]] = {name: [] for name in ways}
        cold: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, (fn, root) in ways.items():  # interleaved, so machine noise hits all three alike
                if evict is not None:  # cold read, which also warms this way's files again ...
                    evict(root)
                    t0 = time.perf_counter()
                    fn()
                    cold[name].append(time.perf_counter() - t0)
                t0 = time.perf_counter()  # ... for the warm read right after it
                fn()
                warm[name].append(time.perf_counter() - t0)
        disk = {name: _disk(root) for name, (_, root) in ways.items()}
        pooled_disk = _disk(bank_path / "features" / KEY / "pooled")

    print(f"bank_load: {n} items x {d}-d float32 ({nbytes / 1e6:.0f} MB), median of {repeats}, "
          f"interleaved; setup {build_s:.0f} s")
    labels = {"bank": "bank (FeatureBank.pooled)", "npy per video": "npy per video (np.load+stack)",
              "raw": "raw sequential (np.fromfile)"}
    sections = [("warm page cache (each warm read right after a read of the same files)", warm)]
    if evict is not None:
        how = ("drop_caches=3 before each read" if method == "drop"
               else "posix_fadvise(DONTNEED) on that way's files before each read; dentries/inodes stay cached")
        sections.append((f"cold ({how})", cold))
    else:
        sections.append(("cold: not measured (--cold off)", None))
    for title, times in sections:
        print(f"  {title}" + (":" if times is not None else ""))
        if times is None:
            continue
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, m in med.items():
            print(f"    {labels[name]:30s} {m:8.3f} s  {nbytes / m / 1e6:7.0f} MB/s")
        print(f"    ratio npy per video / bank:  {med['npy per video'] / med['bank']:6.2f}x")
        print(f"    ratio bank / raw:            {med['bank'] / med['raw']:6.2f}x")
    size, alloc, files = pooled_disk
    print(f"  on disk: bank pooled matrix {size / 1e6:.0f} MB in {files} chunk files of {ROW_CHUNK} rows "
          f"(raw {nbytes / 1e6:.0f} MB: compression {nbytes / size:.2f}x; whole bank "
          f"{disk['bank'][1] / 1e6:.0f} MB allocated); npy files {disk['npy per video'][0] / 1e6:.0f} MB "
          f"in {disk['npy per video'][2]}, {disk['npy per video'][1] / 1e6:.0f} MB allocated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
