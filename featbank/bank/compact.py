"""Packing a finished feature group's status and pooled arrays into a few large chunk files.

Why: rows are committed a chunk of ``ROW_CHUNK`` rows at a time (the unit a killed run can lose,
and the unit distributed workers write side by side), so a 40k-row group is 1,250 pooled files
and 1,250 status files of a few bytes. Read warm, that costs little (featbank/bank/chunkfiles.py
reads them straight into the matrix); read cold, every file is a separate trip to the disk.
``featbank compact`` rewrites the status and pooled arrays of every finished group (no row
pending) as chunks of ~``PACKED_BYTES`` each, which reads like one contiguous file.

How it stays safe to kill at any moment: the packed chunk files use another chunk key encoding
(Zarr's ``v2`` keys, ``<i>.0``, beside the row chunks' ``c/<i>/0``), so both layouts' files can
sit in one array folder. The new layout's files are written first, then the array's ``zarr.json``
is replaced (one atomic rename: the switch), then the old layout's files are removed. Killed
before the switch, the array is as it was (stray files of the other layout are never read, and
are overwritten or removed by the next re-layout); killed after it, the array is complete in its
new layout. Values never change, so a reader that raced the switch reads again
(:func:`featbank.bank.chunkfiles.read_span`).

Writes need row chunks (distributed workers write disjoint ones), so a packed array is unpacked,
the same way, before any write: by :meth:`FeatureBank.ensure_group`, which every writer calls for
its groups under the bank's lock before committing, and by ``FeatureBank._write_rows`` as a last
resort. Local banks only: a remote store keeps row chunks.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featbank.bank.chunkfiles import ChunkFiles, ChunkReport, node_metadata
from featbank.bank.schema import PENDING, ROW_CHUNK
from featbank.errors import BankError

if TYPE_CHECKING:
    from featbank.bank.store import FeatureBank

PACKED_BYTES = 64 * 2**20  # target size of a packed chunk file (a 40k x 4096 matrix: 10 files)
PACKED_ARRAYS = ("status", "pooled")  # what readers load whole; steps etc. keep their row chunks
PACKED_ITEMS = "items/digest"  # read by every lookup; written only by registration (under the lock)
ROW_KEYS = {"name": "default", "configuration": {"separator": "/"}}
PACKED_KEYS = {"name": "v2", "configuration": {"separator": "."}}


@dataclass(frozen=True)
class Relayout:
    """What one re-layout did: the array, its files before and after, and chunks it found unreadable."""

    path: Path
    files_before: int
    files_after: int
    unreadable_rows: list[range]


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def packed_rows(files: ChunkFiles, row_chunk: int) -> int:
    """Rows per packed chunk: ~PACKED_BYTES, a whole number of row chunks, at most the array."""
    per_row = max(1, files.chunk_bytes // files.chunk_rows)
    rows = max(row_chunk, PACKED_BYTES // per_row // row_chunk * row_chunk)
    return min(rows, -(-files.shape[0] // row_chunk) * row_chunk) or row_chunk


def relayout(folder: Path, chunk_rows: int, keys: dict, tolerant: bool = False) -> Relayout:
    """Rewrite the local array in ``folder`` as chunks of ``chunk_rows`` rows with chunk key
    encoding ``keys`` (see the module docstring for the order that makes it safe).

    ``tolerant``: an unreadable chunk is read as the fill value and listed (repair: its rows are
    marked pending anyway) instead of stopping the re-layout with a ChunkError.
    """
    old = ChunkFiles.open(folder)
    if old is None:
        raise ValueError(f"{folder}: not an array layout featbank can re-layout")
    report = ChunkReport()
    meta = node_metadata(folder)
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = chunk_rows
    meta["chunk_key_encoding"] = keys
    staged = folder / ".zarr.json.relayout"
    staged.write_text(json.dumps(meta, indent=2))
    new = ChunkFiles.open_metadata(folder, meta)
    written = 0
    for c in range(new.n_chunks):
        block = np.full((chunk_rows, *new.row_shape), new.fill, dtype=new.dtype)
        part = old.read(c * chunk_rows, (c + 1) * chunk_rows, report if tolerant else None)  # (memory: one chunk)
        block[:len(part)] = part
        if new.is_fill(block):  # zarr stores no such chunk; a stray file from a cut-short run goes
            new.path(c).unlink(missing_ok=True)
        else:
            _write_atomically(new.path(c), new.encode(block))
            written += 1
    os.replace(staged, folder / "zarr.json")  # the switch
    before = 0
    for c in range(old.n_chunks):
        try:
            old.path(c).unlink()
            before += 1
        except FileNotFoundError:
            pass
    _remove_empty_dirs(folder / "c")
    rows = [range(c * old.chunk_rows, min(old.shape[0], (c + 1) * old.chunk_rows)) for c in report.unreadable]
    return Relayout(folder, before, written, rows)


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(dirpath)
        except OSError:  # not empty: a file of the current layout lives there
            pass


def is_packed(files: ChunkFiles | None) -> bool:
    """Whether an array is in the packed layout (its chunk files use the ``v2`` keys)."""
    return files is not None and files.encoding == "v2"


def pack_group(bank: FeatureBank, key: str) -> str:
    """Pack the status and pooled arrays of group ``key`` of a local ``bank`` opened for writing
    (under its lock) when no registered row is pending; returns a line saying what was done."""
    pending = int((bank.status(key) == PENDING).sum())
    if pending:
        return f"{key}: {pending} rows pending; left as is (compact it once it is finished)"
    result = []
    for name in PACKED_ARRAYS:
        files = bank.chunk_files(f"features/{key}/{name}")
        if files is None:
            raise BankError(f"{bank.path}: `compact` packs banks in a local folder (the array "
                            f"features/{key}/{name} is not one it can read directly)")
        if not is_packed(files):
            result.append(relayout(files.folder, packed_rows(files, ROW_CHUNK), PACKED_KEYS))
    if not result:
        return f"{key}: already packed"
    return f"{key}: packed " + ", ".join(f"{r.path.name} ({r.files_before} files -> {r.files_after})"
                                         for r in result)


AUTO_PACK_ROWS = 1024
"""A group an extraction leaves finished with at least this many rows is packed as the run ends.

Below it a group is a few dozen row chunks, read cold about as fast packed or not, and packing
would only add a re-layout to every small incremental run (tests, demos, a lab's first videos)."""


def pack_finished(bank: FeatureBank, keys: list[str]) -> list[str]:
    """Pack each group of ``keys`` that a run just left finished (no row pending) and that holds at
    least :data:`AUTO_PACK_ROWS` rows, on a local ``bank`` opened for writing (under its lock).

    What ``extract`` does as it ends, so a finished extraction is read cold like an imported table
    (benchmarks/bench_bank_load.py) without a separate ``featbank compact``. A later run that
    extends the group gives it its row chunks back first (:meth:`FeatureBank.ensure_group`) and
    packs it again at its end. A failure here (a full disk) loses nothing: the re-layout is atomic,
    and the group stays readable in its row chunks; a warning and the returned line say so (the
    warning because ``extract``, which calls this as it ends, has no other place to say it).
    """
    done = []
    for key in keys:
        if bank.count < AUTO_PACK_ROWS or bank.chunk_files(f"features/{key}/pooled") is None:
            continue
        if (bank.status(key) == PENDING).any():
            continue
        try:
            done.append(pack_group(bank, key))
        except OSError as error:
            line = f"{key}: left in row chunks, packing failed ({error}); run `featbank compact` later"
            warnings.warn(line, stacklevel=2)
            done.append(line)
    return done


def compact_bank(bank: FeatureBank) -> list[str]:
    """:func:`pack_group` for every group of ``bank``, then the items' digests (which every
    manifest lookup reads; a registration unpacks them again): one line each."""
    done = [pack_group(bank, key) for key in bank.group_keys()]
    files = bank.chunk_files(PACKED_ITEMS) if bank.count else None
    if files is not None and not is_packed(files):
        r = relayout(files.folder, packed_rows(files, ROW_CHUNK), PACKED_KEYS)
        done.append(f"items: packed digest ({r.files_before} files -> {r.files_after})")
    return done


__all__ = ["AUTO_PACK_ROWS", "PACKED_ARRAYS", "PACKED_BYTES", "PACKED_ITEMS", "PACKED_KEYS", "ROW_KEYS", "Relayout",
           "compact_bank", "is_packed", "pack_finished", "pack_group", "packed_rows", "relayout"]
