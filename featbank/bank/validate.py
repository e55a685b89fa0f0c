"""Finding damage in a bank, and repairing what can be repaired.

What counts as damage (every array: ``items/*`` and each group's status, pooled, steps, mask,
timestamps, frame_indices):

- array metadata (``zarr.json``) missing or unreadable; a group that lost its attributes though it
  holds rows;
- a chunk file that cannot be read (truncated, random bytes in a compressed chunk);
- a row marked OK whose chunk file is gone in any data array (each holds values other than the
  fill value for such a row, so zarr must have stored it);
- a row marked OK whose pooled features are damaged (:func:`featbank.bank.store.damaged_rows`) or
  that has no valid step; an ABSENT row with steps; a FAILED row without its error record.

Packed arrays (``featbank compact``) are read and checked the same way, chunk numbers then
counting packed chunks; repair first gives them their row chunks back (an unreadable packed chunk's
rows become empty, and are marked pending like any other damaged rows).

Not damage: a group whose creation was cut short before any commit (no attributes, no status),
which readers skip and the next extract completes; data in PENDING rows (a commit killed before its status was written; the next run
rewrites it), and NaN where extractors or imports put it on purpose. A lost *status* chunk reads
as PENDING, so its rows are recomputed by the next extract: safe, and not distinguishable from a
commit killed before its first status write, so it is not reported.

Repair (``featbank validate --repair``, under the write lock): metadata is written again from what
the bank records (chunk files left behind are read again), unreadable chunks are rewritten empty,
groups that lost their attributes are removed (their rows are recomputed), and every damaged row is marked PENDING, so the next
``featbank extract`` recomputes exactly those rows (imported groups need ``featbank import``
again). Lost digests cannot be rebuilt: their rows' identity is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr
from zarr.core.sync import sync

from featbank.bank.chunkfiles import ChunkReport
from featbank.bank.compact import PACKED_ITEMS
from featbank.bank.schema import GroupSchema
from featbank.bank.store import (
    ABSENT,
    FAILED,
    ITEM_FIELDS,
    OK,
    PENDING,
    ROW_CHUNK,
    STATUS_NAMES,
    FeatureBank,
    array_specs,
    damaged_rows,
    digest_hex,
)

ITEM_ARRAYS = ("digest", *ITEM_FIELDS)


@dataclass
class BankHealth:
    """What :func:`inspect_bank` found; ``problems`` empty means the bank is sound."""

    problems: list[str] = field(default_factory=list)
    stale: dict[str, set[int]] = field(default_factory=dict)  # group key → rows to mark PENDING
    unreadable: list[tuple[str, range]] = field(default_factory=list)  # (array path, a chunk's rows) to rewrite
    headless_groups: list[str] = field(default_factory=list)  # groups without attributes
    missing_arrays: bool = False
    unrepairable: list[str] = field(default_factory=list)

    @property
    def all_problems(self) -> list[str]:
        return self.problems + self.unrepairable

    def mark(self, key: str, rows: np.ndarray | range) -> None:
        self.stale.setdefault(key, set()).update(int(r) for r in rows)


@dataclass
class ArrayScan:
    """The first ``n`` rows of one array, read chunk by chunk (unreadable chunks as fill values)."""

    values: np.ndarray
    bad: set[int]  # row chunks (of ROW_CHUNK rows) in unreadable chunk files, each reported as a problem
    stored: set[int]  # row chunks of those rows whose chunk file exists (a packed file holds many)


def _stored_chunks(arr: zarr.Array) -> set[int]:
    """Row-chunk numbers whose chunk file exists (listed once per array)."""
    async def listing() -> list[str]:
        return [k async for k in arr.store.list_prefix(f"{arr.path}/c/")]

    return {int(k[len(arr.path) + 3:].split("/")[0]) for k in sync(listing())}


def _open(group: zarr.Group, name: str, health: BankHealth, where: str) -> zarr.Array | None:
    try:
        arr = group[name]
    except Exception as exc:  # zarr raises KeyError, ValueError or a decode error, by damage
        health.problems.append(f"{where}/{name}: metadata missing or unreadable ({type(exc).__name__})")
        health.missing_arrays = True
        return None
    return arr if isinstance(arr, zarr.Array) else None


def _scan(bank: FeatureBank, arr: zarr.Array, n: int, health: BankHealth, where: str) -> ArrayScan:
    """The first ``n`` rows; unreadable chunks are reported and read as the fill value.

    On a local disk the chunk files are read directly (:mod:`featbank.bank.chunkfiles`: 1,250
    chunks of a 40k-row array in well under a second, where zarr took about a second per array);
    elsewhere through zarr, one chunk at a time, and the chunk files are listed."""
    files = bank.chunk_files(arr.path)
    row_chunks = range(-(-n // ROW_CHUNK))
    if files is not None:
        report, R = ChunkReport(), files.chunk_rows  # (R > ROW_CHUNK in a packed array)
        values = files.read(0, n, report)
        reasons = report.unreadable
        stored = {c for c in row_chunks if c * ROW_CHUNK // R not in report.missing}
    else:
        values = np.full((n, *arr.shape[1:]), arr.fill_value, dtype=arr.dtype)
        reasons, R = {}, ROW_CHUNK
        for c in row_chunks:
            sl = _chunk_rows(c, n)
            try:
                values[sl.start:sl.stop] = arr[sl.start:sl.stop]
            except Exception as exc:  # truncated or garbled chunk: zstd, reshape or codec errors
                reasons[c] = type(exc).__name__
        stored = _stored_chunks(arr)
    bad: set[int] = set()
    for c, why in sorted(reasons.items()):
        rows = range(c * R, min(arr.shape[0], (c + 1) * R))
        health.problems.append(f"{where}: chunk {c} (rows {rows.start}-{min(n, rows.stop) - 1}) unreadable ({why})")
        health.unreadable.append((arr.path, rows))
        bad.update(range(rows.start // ROW_CHUNK, -(-min(n, rows.stop) // ROW_CHUNK)))
    return ArrayScan(values, bad, stored)


def _chunk_rows(c: int, n: int) -> range:
    """The registered rows of row chunk ``c``."""
    return range(c * ROW_CHUNK, min(n, (c + 1) * ROW_CHUNK))


def inspect_bank(bank: FeatureBank) -> BankHealth:
    """Every check of the module docstring, reading each chunk of each array once."""
    health = BankHealth()
    if "items" not in bank.root and not bank.group_keys():
        return health  # a new bank's creation cut short (a full disk): the next writer completes it
    items = bank.items
    n = int(items.attrs.get("count", 0))
    # With no row registered, a missing items array is a creation cut short (a full disk), which
    # the next writer completes: nothing is lost, so nothing is reported.
    arrays = {name: _open(items, name, health if n else BankHealth(), "items") for name in ITEM_ARRAYS}
    caps = {a.shape[0] for a in arrays.values() if a is not None}
    schemas: dict[str, GroupSchema] = {key: bank.schema(key) for key in bank.group_keys()}
    for key in bank.incomplete_groups():
        status = _open(bank.root["features"][key], "status", BankHealth(), key)
        if status is not None and _stored_chunks(status):
            health.problems.append(f"{key}: the group's metadata is lost, though it holds rows")
            health.headless_groups.append(key)
        # else: a creation cut short before any commit (a full disk): readers skip it and the
        # next extract with its extractor completes it; nothing is wrong with the bank.
    # Items: digests are the rows' identity; the other facts are rewritten by a re-extraction.
    digest, digests = arrays["digest"], None
    if digest is not None:
        scan = _scan(bank, digest, n, health, "items/digest")
        digests = scan.values
        lost = sorted((set(range(-(-n // ROW_CHUNK))) - scan.stored) | scan.bad)
        if lost:
            health.unrepairable.append(f"items/digest: the keys of rows in chunk(s) {lost} are lost; those rows "
                                       f"cannot be matched to files again: re-extract into a new bank")
        elif len({bytes(d) for d in digests}) != n:
            health.problems.append("items/digest: duplicate digests")
        elif n and (digests == 0).all(axis=1).any():
            health.problems.append("items/digest: registered row without digest")
    extracted = [k for k, s in schemas.items() if not s.is_imported]
    statuses = {key: _check_group(bank, key, schema, n, health, caps, digests)
                for key, schema in schemas.items()}
    for name in ITEM_FIELDS:
        arr = arrays[name]
        if arr is None:
            continue
        # A missing facts chunk is not checked: zarr stores no chunk equal to the fill value, and
        # commits through the API may leave the facts out (imports always do).
        for c in sorted(_scan(bank, arr, n, health, f"items/{name}").bad):
            for key in extracted:
                health.mark(key, [r for r in _chunk_rows(c, n) if statuses[key][r] != PENDING])
    if len(caps) > 1:
        health.problems.append(f"row arrays disagree on capacity ({sorted(caps)})")
    return health


def _check_group(bank: FeatureBank, key: str, schema: GroupSchema, n: int, health: BankHealth,
                 caps: set[int], digests: np.ndarray | None) -> np.ndarray:
    """Checks of one feature group; returns its status of the registered rows (PENDING where
    unreadable). ``digests`` are the items' (None when their array is lost)."""
    group = bank.root["features"][key]
    arrays = {name: _open(group, name, health, key) for name in array_specs(schema, 0)}
    caps.update(a.shape[0] for a in arrays.values() if a is not None)
    status_arr = arrays.pop("status")
    status = np.full(n, PENDING, dtype="int8")
    if status_arr is not None:
        status = _scan(bank, status_arr, n, health, f"{key}/status").values
        if (status_arr[n:] != PENDING).any():
            health.problems.append(f"{key}: status set on unregistered rows")
    unknown = sorted(set(status.tolist()) - set(STATUS_NAMES))
    if unknown:
        health.problems.append(f"{key}: unknown status codes {unknown}")
        health.mark(key, np.flatnonzero(~np.isin(status, list(STATUS_NAMES))))
    committed = np.flatnonzero(status != PENDING)
    # Every data array of an OK row holds values other than its fill value, so its chunk file
    # must exist (zarr does not store chunks that are all fill value: FAILED-only chunks have none).
    ok_chunks = set((np.flatnonzero(status == OK) // ROW_CHUNK).tolist())
    values = {}
    for name, arr in arrays.items():
        if arr is None:
            health.mark(key, committed)
            continue
        scan = _scan(bank, arr, n, health, f"{key}/{name}")
        values[name] = scan.values
        missing = ok_chunks - scan.stored - scan.bad
        if missing:
            health.problems.append(f"{key}/{name}: chunk(s) {sorted(missing)} of committed rows are missing")
        for c in scan.bad | missing:
            health.mark(key, [r for r in _chunk_rows(c, n) if status[r] != PENDING])
    if "pooled" in values:
        broken = np.flatnonzero(damaged_rows(values["pooled"], status, schema.is_imported))
        if broken.size:
            health.problems.append(f"{key}: {broken.size} rows marked ok with missing or non-finite pooled "
                                   f"features")
            health.mark(key, broken)
    if "mask" in values:
        ok, absent = status == OK, status == ABSENT
        no_step = np.flatnonzero(ok & ~values["mask"].any(axis=1))
        if no_step.size:
            health.problems.append(f"{key}: {no_step.size} committed rows without any valid step")
            health.mark(key, no_step)
        # PENDING (and FAILED, being retried) rows may hold data of a commit killed before its
        # status was written: harmless. An ABSENT row is never recomputed: data there is wrong.
        with_steps = np.flatnonzero(absent & values["mask"].any(axis=1))
        if with_steps.size:
            health.problems.append(f"{key}: {with_steps.size} rows marked absent but with valid steps")
            health.mark(key, with_steps)
    failed = np.flatnonzero(status == FAILED)
    if failed.size and digests is not None:
        recorded = set(bank.failures(key))
        unrecorded = [r for r in failed if digest_hex(digests[r]) not in recorded]
        if unrecorded:
            health.problems.append(f"{key}: {len(unrecorded)} failed rows without an error record")
            health.mark(key, unrecorded)
    return status


def repair_bank(bank: FeatureBank, health: BankHealth) -> list[str]:
    """Apply the repairs of the module docstring to a bank opened for writing; returns what was done."""
    done: list[str] = []
    features = bank.root["features"] if "features" in bank.root else None
    for key in health.headless_groups:
        del features[key]
        done.append(f"removed group {key} (no metadata); its extractor recreates it")
    for key in bank.group_keys():  # row chunks back first (unreadable packed chunks read as empty)
        done += [f"unpacked {r.path.name} of {key}" for r in bank.unpack_group(key, tolerant=True)]
    if bank.unpack_array(PACKED_ITEMS, tolerant=True):
        done.append("unpacked items/digest")
    if health.missing_arrays:
        bank._ensure_items()
        for key in bank.group_keys():
            bank.ensure_group(key, bank.schema(key))
        done.append("wrote missing array metadata again")
    bank._grow(max(a.shape[0] for a in bank._row_arrays()))
    for path, rows in health.unreadable:
        arr = bank.root[path]
        arr[rows.start:rows.stop] = np.full((len(rows), *arr.shape[1:]), arr.fill_value, arr.dtype)
        done.append(f"rewrote unreadable rows {rows.start}-{rows.stop - 1} of {arr.path} empty")
    for key, rows in health.stale.items():
        if key in health.headless_groups or not rows:
            continue
        marked = np.array(sorted(rows), dtype=np.int64)
        bank._write_rows(bank.group(key)["status"], marked, np.full(marked.size, PENDING, dtype="int8"))
        how = "`featbank import` again" if bank.is_imported(key) else "`featbank extract`"
        done.append(f"{key}: marked {marked.size} damaged rows pending; {how} recomputes them")
    return done


__all__ = ["BankHealth", "inspect_bank", "repair_bank"]
