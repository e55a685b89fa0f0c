"""Loading a whole feature matrix from the bank vs one .npy file per video vs a raw sequential read.

Fitting a regressor starts by loading every item's pooled vector: at the scale the bank is built
for, 40,000 items × 4,096 dims of float32 (655 MB; the default, ``--items/--dim`` to change it).
The common layout outside featbank is one ``<video_id>.npy`` per video; the floor is reading the
same bytes as one contiguous file. Four ways over the same random matrix, all files in one
temporary folder on one disk, timed side by side in one process, interleaved repeats so machine
noise hits all alike, summarised by the median:
  (a) bank:          ``FeatureBank(path, mode="r").pooled(key, rows)`` for all rows, the read path
                     of ``featbank.bank.matrix.load_blocks`` (opening the bank, reading status and
                     the damage check included): chunk files read straight into the matrix;
  (a2) bank, compacted: the same on a copy packed by ``featbank compact`` (status in one file,
                     pooled in ~64 MB files instead of one file per 32 rows each);
  (b) zarr:          the same array read through zarr (``group["pooled"][:n]``, status likewise),
                     which is how ``pooled`` read before: what the direct read saves;
  (c) npy per video: ``np.load`` of N files of D float32 each, then ``np.stack``;
  (d) raw:           ``np.fromfile`` of one contiguous file of N×D float32.
Reported: medians, npy-per-video / bank (what the bank saves over the usual layout; goal ≥ 20×
cold) and bank / raw (what the bank costs over the floor; goal ≤ 2×), first with warm page cache
(every way read once before timing), then cold: before each cold read that way's files are evicted
from the page cache, with ``/proc/sys/vm/drop_caches`` (page cache, dentries and inodes) where we
may write it, else with ``posix_fadvise(DONTNEED)`` on every file of that way, which leaves
dentries and inodes cached, so favours the many-files layouts. On a virtual machine the host may
still cache the disk, so "cold" is a bound.
Then the bank commands on that bank as fresh processes, as a user runs them (median of the same
repeats, warm cache): ``featbank info``, ``featbank status`` (with ``--manifest`` for an imported
group) and ``featbank validate``, on the bank as written and on the compacted copy.
The group is built by the real ``featbank import`` of an N×D ``.npy`` (``--group imported``, the
default: bank, manifest and all; an import packs its group's status and pooled arrays as
``compact`` does, so (a2) differs from (a) only by the items' digests, which ``compact`` packs too),
or as an extracted group (``--group extracted``, row chunks as an extraction leaves them: the real
``register``/``ensure_group``, rows then written straight into the group's arrays whole chunks at a
time, since ``commit`` spends ~1 ms per row on bookkeeping that is no part of what is measured).
Also reported: the bank's size and file count on disk vs the raw bytes.

    python -m benchmarks bank_load [--items N] [--dim D] [--repeats R] [--group {imported,extracted}]
                                   [--cold {auto,drop,fadvise,off}] [--no-zarr] [--no-commands]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featbank.bank.compact import compact_bank
from featbank.bank.schema import GroupLayout, GroupSchema
from featbank.bank.store import OK, ROW_CHUNK, FeatureBank

WRITE_ROWS = 128 * ROW_CHUNK  # rows per write while building (bounds the build's memory)
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks bank_load", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=40_000, help="rows N (default 40000)")
    p.add_argument("--dim", type=int, default=4096, help="pooled dimension D (default 4096)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per way (default 5)")
    p.add_argument("--group", choices=("imported", "extracted"), default="imported",
                   help="how the group is built: `featbank import` (default) or as an extracted group")
    p.add_argument("--cold", choices=("auto", "drop", "fadvise", "off"), default="auto",
                   help="how to evict before cold reads: auto = drop_caches if writable, else fadvise")
    p.add_argument("--no-zarr", action="store_true", help="leave out the read through zarr (slow)")
    p.add_argument("--no-commands", action="store_true", help="leave out info / status / validate")
    p.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    return p.parse_args(argv)


def _files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs] if root.is_dir() else [root]


def _disk(root: Path) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, files) under ``root``."""
    stats = [p.stat() for p in _files(root)]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats), len(stats)


def _can_drop() -> bool:
    try:
        DROP_CACHES.write_text("1")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class ColdReads:
    """How a read benchmark empties the page cache between reads (``evict`` is None for ``--cold off``)."""

    evict: Callable[[Path], None] | None
    how: str


def setup_cold_reads(bench: str, parent: Path, need: int, written: str, cold: str) -> ColdReads | None:
    """Room on ``parent`` for ``need`` bytes, and the page-cache eviction ``--cold`` asks for; None,
    after saying why, when the benchmark cannot run."""
    free = shutil.disk_usage(parent).free
    if free < need:
        print(f"{bench}: refusing to run: {written}, needs {need / 1e9:.1f} GB free in {parent}, which has "
              f"{free / 1e9:.1f} GB; use smaller sizes or --dir", file=sys.stderr)
        return None
    method = cold
    if method == "auto":
        method = "drop" if _can_drop() else "fadvise"
    elif method == "drop" and not _can_drop():
        print(f"{bench}: cannot write {DROP_CACHES} (needs root); use --cold fadvise", file=sys.stderr)
        return None
    if method == "off":
        return ColdReads(None, "cold: not measured (--cold off)")
    how = ("drop_caches=3 before each read" if method == "drop"
           else "posix_fadvise(DONTNEED) on every file of that way before each read; dentries/inodes stay cached")
    return ColdReads(_evictor(method), f"cold ({how})")


def time_interleaved(ways: dict[str, tuple[Callable[[], object], Path | None]], repeats: int,
                     evict: Callable[[Path], None] | None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Warm and cold seconds of every way, ``repeats`` times, interleaved so machine noise hits all alike.

    A way is ``(read, root)``: ``root`` holds its files, emptied from the page cache before its cold
    read (a way without files, None, is timed warm only); the cold read warms them again for the
    warm read right after it.
    """
    warm: dict[str, list[float]] = {name: [] for name in ways}
    cold: dict[str, list[float]] = {name: [] for name, (_, root) in ways.items() if root is not None}
    for _ in range(repeats):
        for name, (fn, root) in ways.items():
            if evict is not None and root is not None:
                evict(root)
                t0 = time.perf_counter()
                fn()
                cold[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fn()
            warm[name].append(time.perf_counter() - t0)
    return warm, cold


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


def _build_imported(tmp: Path, X: np.ndarray) -> tuple[Path, str, Path]:
    """The bank, group key and manifest of the real ``featbank import`` of ``X``."""
    from featbank.io.importing import import_features

    np.save(tmp / "features.npy", X)
    report = import_features(tmp / "bank.zarr", tmp / "manifest.csv", tmp / "features.npy", None, name="bench")
    (tmp / "features.npy").unlink()
    return tmp / "bank.zarr", report.key, report.manifest


def _build_extracted(tmp: Path, X: np.ndarray) -> tuple[Path, str, None]:
    n, d = X.shape
    key, bank_path = "bench@0000000000", tmp / "bank.zarr"
    bank = FeatureBank(bank_path)
    rows = bank.register([hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(n)])
    assert (rows == np.arange(n)).all()
    layout = GroupLayout(pooled_dim=d, max_steps=1, step_dim=1, frames_per_step=0)
    group = bank.ensure_group(key, GroupSchema(extractor="bench", spec="bench", version="0", layout=layout))
    for lo in range(0, n, WRITE_ROWS):
        hi = min(n, lo + WRITE_ROWS)
        group["pooled"][lo:hi] = X[lo:hi]
        group["mask"][lo:hi] = True
        group["status"][lo:hi] = OK  # data first, status last, as commit does
    return bank_path, key, None


def _build(tmp: Path, n: int, d: int, kind: str) -> tuple[np.ndarray, Path, str, Path | None, Path, Path]:
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    bank_path, key, manifest = (_build_imported if kind == "imported" else _build_extracted)(tmp, X)
    npy_dir, raw_path = tmp / "npy", tmp / "raw.f32"
    npy_dir.mkdir()
    for i in range(n):
        np.save(npy_dir / f"v{i:06d}.npy", X[i])
    X.tofile(raw_path)
    os.sync()  # clean pages, so eviction can drop them
    return X, bank_path, key, manifest, npy_dir, raw_path


def _command_times(banks: dict[str, Path], manifest: Path | None, repeats: int) -> dict[str, float]:
    """Median seconds of ``featbank info / status / validate`` on each bank, each a fresh process."""
    cli = [sys.executable, "-m", "featbank.cli"]
    commands = {}
    for label, bank_path in banks.items():
        status = ["status", "--bank", str(bank_path)] + (["--manifest", str(manifest)] if manifest else [])
        commands |= {f"featbank info ({label})": ["info", "--bank", str(bank_path)],
                     f"featbank status{' --manifest M' if manifest else ''} ({label})": status,
                     f"featbank validate ({label})": ["validate", "--bank", str(bank_path)]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, args in commands.items():
            t0 = time.perf_counter()
            subprocess.run([*cli, *args], check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    n, d, repeats = args.items, args.dim, args.repeats
    nbytes = n * d * 4
    parent = args.dir or Path(tempfile.gettempdir())
    need = 4 * nbytes + n * 4096  # bank, npy files (each rounded up to a 4 KiB block), raw, the import's file
    cold_reads = setup_cold_reads("bank_load", parent, need, f"{n} x {d} float32 is {nbytes / 1e6:.0f} MB, "
                                  "written four times (bank, npy files, raw, the file imported)", args.cold)
    if cold_reads is None:
        return 1
    evict = cold_reads.evict

    with tempfile.TemporaryDirectory(dir=parent, prefix="bench_bank_load_") as tmp:
        t0 = time.perf_counter()
        X, bank_path, key, manifest, npy_dir, raw_path = _build(Path(tmp), n, d, args.group)
        build_s = time.perf_counter() - t0
        packed_path = Path(tmp) / "packed.zarr"
        shutil.copytree(bank_path, packed_path)
        t0 = time.perf_counter()
        with FeatureBank(packed_path) as packing:
            compact_bank(packing)
        compact_s = time.perf_counter() - t0
        os.sync()
        names = [f"v{i:06d}.npy" for i in range(n)]
        rows = np.arange(n)

        def bank(path: Path = bank_path) -> np.ndarray:
            with FeatureBank(path, mode="r") as b:
                matrix, status = b.pooled(key, rows)
            assert (status == OK).all()
            return matrix

        def through_zarr() -> np.ndarray:
            with FeatureBank(bank_path, mode="r") as b:
                group = b.group(key)
                status, matrix = group["status"][:n], group["pooled"][:n]
            assert (status == OK).all()
            return matrix

        def npy() -> np.ndarray:
            return np.stack([np.load(npy_dir / name) for name in names])

        def raw() -> np.ndarray:
            return np.fromfile(raw_path, dtype=np.float32).reshape(n, d)

        ways = {"bank": (bank, bank_path), "bank, compacted": (lambda: bank(packed_path), packed_path),
                "zarr": (through_zarr, bank_path),
                "npy per video": (npy, npy_dir), "raw": (raw, raw_path)}
        if args.no_zarr:
            del ways["zarr"]
        for name, (fn, _) in ways.items():  # warm-up, and every way must return the same matrix
            if not np.array_equal(fn(), X):
                raise AssertionError(f"bank_load: {name} did not read back the written matrix")
        del X
        warm, cold = time_interleaved(ways, repeats, evict)
        commands = {} if args.no_commands else _command_times(
            {"as written": bank_path, "compacted": packed_path}, manifest, repeats)
        disk = {name: _disk(root) for name, (_, root) in ways.items()}

    print(f"bank_load: {n} items x {d}-d float32 ({nbytes / 1e6:.0f} MB), {args.group} group, median of "
          f"{repeats}, interleaved; setup {build_s:.0f} s, `featbank compact` of the copy {compact_s:.1f} s")
    labels = {"bank": "bank (FeatureBank.pooled)", "bank, compacted": "bank after `featbank compact`",
              "zarr": "through zarr (pooled before)",
              "npy per video": "npy per video (np.load+stack)", "raw": "raw sequential (np.fromfile)"}
    sections = [("warm page cache (each warm read right after a read of the same files)", warm)]
    sections.append((cold_reads.how, cold if evict is not None else None))
    for title, times in sections:
        print(f"  {title}" + (":" if times is not None else ""))
        if times is None:
            continue
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, m in med.items():
            print(f"    {labels[name]:32s} {m:8.3f} s  {nbytes / m / 1e6:7.0f} MB/s")
        for way in ("bank", "bank, compacted"):
            print(f"    ratio npy per video / {way + ':':17s} {med['npy per video'] / med[way]:6.2f}x   "
                  f"{way} / raw: {med[way] / med['raw']:5.2f}x")
        if "zarr" in med:
            print(f"    ratio through zarr / bank:   {med['zarr'] / med['bank']:6.2f}x")
    for name, seconds in commands.items():
        print(f"  {name:44s} {seconds:6.2f} s  (fresh process, median of {repeats}, {n} rows)")
    size, alloc, files = disk["bank"]
    print(f"  on disk: bank {size / 1e6:.0f} MB in {files} files ({alloc / 1e6:.0f} MB allocated; compacted "
          f"{disk['bank, compacted'][0] / 1e6:.0f} MB in {disk['bank, compacted'][2]} files; raw "
          f"{nbytes / 1e6:.0f} MB); npy files {disk['npy per video'][0] / 1e6:.0f} MB in "
          f"{disk['npy per video'][2]}, {disk['npy per video'][1] / 1e6:.0f} MB allocated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
