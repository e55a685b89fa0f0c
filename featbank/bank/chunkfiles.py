"""Reading the chunk files of a bank array on a local disk straight into one preallocated matrix.

Why not through zarr: a bank stores rows in chunks of ``ROW_CHUNK`` rows (the commit unit, which
keeps a killed run from leaving half a row), so a 40k-row group is 1,250 chunk files per array.
zarr decodes each chunk through its asynchronous codec pipeline and copies it into the result;
profiled on a 40k × 4096 pooled matrix (a loaded VM), that took 1.9-4.0 s where reading the same
files into the matrix took 0.6 s, and the 1,250 chunks of 32 status bytes 0.5-0.9 s against 0.03-0.05 s
(benchmarks/bench_bank_load.py measures the whole load).

The bytes of a chunk file are fixed by the Zarr v3 specification (the ``bytes`` codec: the chunk's
C-order values, optionally followed by ``zstd``), and the chunk's name by the array's chunk key
encoding. This module reads exactly the layouts featbank writes: a regular grid whose chunks span
every dimension but the first, the ``default`` chunk key encoding (row chunks, ``c/<i>/0``) or the
``v2`` one (packed groups, ``<i>.0``: see :mod:`featbank.bank.compact`), ``bytes`` (little-endian
or single-byte values) optionally followed by ``zstd``. For anything else (another codec, sharding,
a store that is not a local folder) :meth:`ChunkFiles.open` answers None and the caller reads
through zarr. It imports neither zarr nor fsspec, so the quick commands that only count statuses
start fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featbank.errors import BankError

FILL_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
READERS = 4  # threads reading chunk files at once (benchmarks/bench_bank_load.py)
PARALLEL_FROM = 64  # chunks: below this one thread reads them all


class ChunkError(ValueError):
    """A chunk file that exists but cannot hold its chunk (truncated, garbled compressed bytes)."""


def node_metadata(folder: Path) -> dict | None:
    """The ``zarr.json`` of a group or array folder; None when there is none (or it is unreadable)."""
    try:
        return json.loads((folder / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return None


@dataclass
class ChunkReport:
    """What a tolerant read (:meth:`ChunkFiles.read` with a report) found chunk by chunk."""

    missing: set[int] = field(default_factory=set)  # no chunk file: read as the fill value
    unreadable: dict[int, str] = field(default_factory=dict)  # chunk → why, read as the fill value


@dataclass(frozen=True)
class ChunkFiles:
    """One array's chunk files in a local folder, readable without zarr (see the module docstring)."""

    folder: Path
    shape: tuple[int, ...]
    chunk_rows: int
    dtype: np.dtype
    fill: object
    encoding: str  # the chunk key encoding: "default" (c/<i>/0) or "v2" (<i>.0)
    separator: str
    zstd: bool

    @classmethod
    def open(cls, folder: Path) -> ChunkFiles | None:
        """The reader for the array in ``folder``, or None when its layout is not one described above."""
        return cls.open_metadata(folder, node_metadata(folder))

    @classmethod
    def open_metadata(cls, folder: Path, meta: dict | None) -> ChunkFiles | None:
        """The reader for the array in ``folder`` described by ``meta`` (its ``zarr.json``)."""
        try:
            if meta is None or meta["zarr_format"] != 3 or meta["node_type"] != "array":
                return None
            shape = tuple(int(s) for s in meta["shape"])
            grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
            chunks = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
            codecs = [c["name"] for c in meta["codecs"]]
            dtype = np.dtype(meta["data_type"])
            endian = (meta["codecs"][0].get("configuration") or {}).get("endian")
            encoding = keys["name"]
            separator = (keys.get("configuration") or {}).get("separator", "/" if encoding == "default" else ".")
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        if (grid.get("name") != "regular" or encoding not in ("default", "v2") or not shape
                or chunks[1:] != shape[1:] or codecs not in (["bytes"], ["bytes", "zstd"])
                or meta.get("storage_transformers") or dtype.hasobject
                or (dtype.itemsize > 1 and (endian or "little") != sys.byteorder)):
            return None
        fill = meta.get("fill_value")
        fill = FILL_WORDS.get(fill, fill) if isinstance(fill, str) else fill
        return cls(folder=folder, shape=shape, chunk_rows=chunks[0], dtype=dtype, fill=fill, encoding=encoding,
                   separator=separator, zstd=codecs == ["bytes", "zstd"])

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    def path(self, chunk: int) -> Path:
        """The file of row chunk ``chunk``: key ``c/<chunk>/0/...`` (default encoding) or ``<chunk>.0...`` (v2)."""
        parts = [str(chunk), *("0" * len(self.row_shape))]
        return self.folder / self.separator.join(["c", *parts] if self.encoding == "default" else parts)

    def is_fill(self, values: np.ndarray) -> bool:
        """Whether every value is the fill value (zarr stores no file for such a chunk)."""
        if isinstance(self.fill, float) and math.isnan(self.fill):
            return bool(np.isnan(values).all())
        return bool((values == self.fill).all())

    def encode(self, values: np.ndarray) -> bytes:
        """The bytes of a chunk file holding ``values`` (one whole chunk), as zarr writes them."""
        data = np.ascontiguousarray(values, dtype=self.dtype).tobytes()
        if self.zstd:
            from numcodecs.zstd import Zstd

            data = bytes(Zstd(level=0).encode(data))
        return data

    def read(self, lo: int, hi: int, report: ChunkReport | None = None) -> np.ndarray:
        """Rows ``lo:hi`` (clipped to the array), missing chunk files read as the fill value.

        An unreadable chunk raises :class:`ChunkError`, unless a ``report`` is given: then it is
        recorded there and read as the fill value, so one read finds every damaged chunk.
        """
        hi = min(hi, self.shape[0])
        lo = min(lo, hi)
        out = np.empty((hi - lo, *self.row_shape), dtype=self.dtype)
        R = self.chunk_rows
        chunks = range(lo // R, -(-hi // R))

        def fill(slab: range) -> None:
            for chunk in slab:
                a, b = max(lo, chunk * R), min(hi, (chunk + 1) * R)
                target = out[a - lo:b - lo]
                try:
                    self._read_chunk(chunk, target, a - chunk * R)
                except FileNotFoundError:
                    target[...] = self.fill
                    if report is not None:
                        report.missing.add(chunk)
                except ChunkError as exc:
                    if report is None:
                        raise ChunkError(f"{self.folder}: chunk {chunk} (rows {chunk * R}-{(chunk + 1) * R - 1}) "
                                         f"is unreadable: {exc}") from None
                    report.unreadable[chunk] = str(exc)
                    target[...] = self.fill

        # A few readers at once keep the disk busy while a cold chunk file is opened and read
        # (readv releases the GIL); each reads one contiguous slab of chunks into its own rows.
        slabs = [chunks[k * len(chunks) // READERS:(k + 1) * len(chunks) // READERS]
                 for k in range(READERS)] if len(chunks) >= PARALLEL_FROM else [chunks]
        if len(slabs) == 1:
            fill(chunks)
        else:
            with ThreadPoolExecutor(len(slabs)) as pool:
                for done in [pool.submit(fill, slab) for slab in slabs]:
                    done.result()
        return out

    def _read_chunk(self, chunk: int, target: np.ndarray, offset: int) -> None:
        """Fill ``target`` with the chunk's rows from ``offset`` on."""
        fd = os.open(self.path(chunk), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if not self.zstd:  # the rows asked for, straight into the result: no copy, no other rows
                if size != self.chunk_bytes:
                    raise ChunkError(f"{size} bytes where {self.chunk_bytes} are stored")
                row_bytes = self.chunk_bytes // self.chunk_rows
                _read_into(fd, memoryview(target.reshape(-1)).cast("B"), offset * row_bytes)
                return
            data = _read_all(fd, size)
        finally:
            os.close(fd)
        if self.zstd:
            data = _unzstd(data)
        if len(data) != self.chunk_bytes:
            raise ChunkError(f"{len(data)} bytes where {self.chunk_bytes} are stored")
        rows = np.frombuffer(data, dtype=self.dtype).reshape(self.chunk_rows, *self.row_shape)
        target[...] = rows[offset:offset + len(target)]


def read_span(files: ChunkFiles, lo: int, hi: int, bank: str) -> np.ndarray:
    """Rows ``lo:hi``; an unreadable chunk is a BankError saying how to repair the bank at ``bank``.

    When the array's layout changed during the read (``featbank compact`` packed or unpacked it:
    the old chunk files are removed once the new ones are in place), it is read again.
    """
    for _ in range(3):
        try:
            values = files.read(lo, hi)
        except ChunkError as exc:
            raise BankError(f"{exc}: the bank is damaged; run `featbank validate --bank {bank} --repair`, "
                            f"then `featbank extract` (or `featbank import`) again") from None
        now = ChunkFiles.open(files.folder)
        if now is None or now == files:
            return values
        files = now
    return values


def _read_into(fd: int, view: memoryview, position: int) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], position + done)
        if got == 0:
            raise ChunkError(f"the file ended after {done} of {len(view)} bytes")
        done += got


def _read_all(fd: int, size: int) -> bytes:
    parts, done = [], 0
    while done < size:
        part = os.read(fd, size - done)
        if not part:
            break
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def _unzstd(data: bytes) -> bytes:
    from numcodecs.zstd import (
        Zstd,  # what zarr's zstd codec decodes with; loaded on first use
    )

    try:
        return bytes(Zstd().decode(data))
    except RuntimeError as exc:  # numcodecs reports a bad frame as a RuntimeError
        raise ChunkError(f"not a zstd frame ({exc})") from None


__all__ = ["ChunkError", "ChunkFiles", "ChunkReport", "node_metadata", "read_span"]
