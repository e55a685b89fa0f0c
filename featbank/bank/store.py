"""The Zarr feature bank: one store, rows keyed by the content hash of each media file.

Layout (Zarr v3)::

    bank.zarr/               attrs: format (BANK_FORMAT: refused on open when newer), created_by
      items/                 one row per distinct file content (count in attrs)
        digest  (cap, 32) uint8   SHA-256 of the file bytes: the key shared by all tracks
                                  (of the name, for items imported without media)
        n_frames, fps, width, height, has_audio, is_image, size_bytes, probe (status code)
      features/<name>@<config-hash>/        one group per extractor + configuration
        status     (cap,)              PENDING / OK / FAILED / ABSENT; written last: the commit mark
        pooled     (cap, P) float32    fixed-length vector per item
        steps      (cap, T, D) float32 per-step (per-second) features, NaN where invalid
        mask       (cap, T) bool       which steps hold data
        timestamps (cap, T) float32    start time of each step in seconds
        frame_indices (cap, T, K) int32  the decoded frames of each step (video samplings)
        (an imported group, whose one step is its pooled vector, stores status and pooled only:
        its steps, mask and timestamps are derived from them when read)
        attrs: a GroupSchema (featbank/bank/schema.py): extractor, spec, config, feature names,
               weights checksum, layout, decoder versions, schema version
      failures/<group>/<digest-hex>   attrs: the error of one failed item
      tracks/<slug>                   attrs: a manifest's ids, paths and digests (the hash cache)

Why it is safe to kill at any moment: rows are written a whole chunk (``ROW_CHUNK`` rows) at a
time, each chunk file is replaced atomically by the store, and a chunk of ``status`` is written
only after that chunk's data. A killed write leaves the old status, so resume recomputes exactly
the rows that were not committed, and never sees half a row. Only the process that registers items
(the client) resizes arrays or writes attributes; workers write disjoint chunks. One write session
at a time per bank is enforced by a lock file (featbank/bank/lock.py); damage is found and
repaired by featbank/bank/validate.py.

Reads of a local bank skip zarr's per-chunk machinery: the chunk files are read straight into
the result (featbank/bank/chunkfiles.py), without changing what is written; a 40k × 4096 pooled
load read 1.0-2.0x (warm) and 1.3-1.5x (cold) faster than through zarr on a loaded VM
(benchmarks/bench_bank_load.py). ``featbank compact``
packs the status and pooled arrays of finished groups into a few large files for cold reads
(featbank/bank/compact.py); :meth:`FeatureBank.ensure_group`, which every writer calls under the
lock before committing, gives a packed group its row chunks back.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import zarr

from featbank.bank.chunkfiles import ChunkFiles, read_span
from featbank.bank.compact import PACKED_ARRAYS, ROW_KEYS, Relayout, is_packed, relayout
from featbank.bank.lock import LOCK_NAME
from featbank.bank.schema import (
    ABSENT,
    FAILED,
    IMPORT_SPEC_PREFIX,
    OK,
    PENDING,
    ROW_CHUNK,
    STATUS_NAMES,
    GroupLayout,
    GroupSchema,
    bank_root_attrs,
    check_bank_format,
    hash_cache_of,
    match_rows,
    readable_names,
    status_counts,
)
from featbank.errors import BankError
from featbank.extraction.media import MediaInfo

__all__ = ["ABSENT", "FAILED", "OK", "PENDING", "ROW_CHUNK", "STATUS_NAMES",  # (from schema, re-exported)
           "FeatureBank", "GroupInfo", "GroupLayout", "GroupSchema", "IMPORT_SPEC_PREFIX", "ItemRecord",
           "StepFeatures", "array_specs", "bank_location", "damaged_rows", "describe", "digest_hex",
           "steps_from_pooled"]

DIGEST_BYTES = 32
ABSURD_MAGNITUDE = 1e30  # above any real feature value: what garbled float bytes look like
DAMAGE_BLOCK = 256  # rows checked at a time by damaged_rows (a few MB: stays in cache)

ITEM_FIELDS: dict[str, tuple[str, object]] = {
    "n_frames": ("int64", 0),
    "fps": ("float64", 0.0),
    "width": ("int32", 0),
    "height": ("int32", 0),
    "has_audio": ("int8", 0),
    "is_image": ("int8", 0),
    "size_bytes": ("int64", 0),
    "probe": ("int8", PENDING),
}


@dataclass
class StepFeatures:
    """What one extractor produced for one item, ready to be committed as one bank row."""

    status: int
    pooled: np.ndarray | None = None
    steps: np.ndarray | None = None
    mask: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    frame_indices: np.ndarray | None = None
    error: str | None = None


@dataclass(frozen=True)
class GroupInfo:
    """One feature group as :meth:`FeatureBank.groups` lists it."""

    key: str  # exact bank key, e.g. ``handcrafted@5d3ee49b35``
    name: str  # shortest unambiguous name among the bank's groups, e.g. ``handcrafted``
    schema: GroupSchema
    counts: dict[str, int]  # rows per status name (ok, failed, absent, pending)

    @property
    def pooled_dim(self) -> int:
        return self.schema.layout.pooled_dim

    @property
    def steps(self) -> tuple[int, int]:
        """(max steps per item, features per step)."""
        return self.schema.layout.max_steps, self.schema.layout.step_dim


@dataclass
class ItemRecord:
    """Probe result for one item: its info (None when undecodable) and its file size."""

    info: MediaInfo | None
    size_bytes: int


def bank_location(path: str | os.PathLike) -> str:
    """Canonical name of a bank: an fsspec URL as given, a local path made absolute.

    Absolute, because dask workers may run in another working directory and must open the same
    bank under the same name.
    """
    text = os.fspath(path)
    if "://" not in text:
        return str(Path(text).resolve())
    try:  # an unknown protocol, or one whose package (s3fs, gcsfs...) is not installed
        fsspec.get_filesystem_class(text.split("://", 1)[0])
    except (ValueError, ImportError) as exc:
        raise BankError(f"cannot open bank {text}: {exc}") from exc
    return text


def _open_store(location: str, read_only: bool) -> zarr.abc.store.Store:
    """Zarr store of a bank. A local path uses LocalStore, whose writes are atomic (temporary file
    then rename), which is what makes a killed run safe. A URL (``s3://``, ``gs://``, ``file://``,
    any fsspec protocol) uses FsspecStore: on object stores each chunk PUT is atomic as well."""
    if "://" in location:
        # fsspec's local file system does not create parent folders unless asked; object stores
        # have no folders to create.
        options = {"auto_mkdir": True} if location.startswith("file://") else None
        return zarr.storage.FsspecStore.from_url(location, storage_options=options, read_only=read_only)
    return zarr.storage.LocalStore(location, read_only=read_only)


def _has_group(store: zarr.abc.store.Store, path: str) -> bool:
    """Whether ``store`` holds a readable group at ``path`` (public zarr API: open it and see)."""
    try:
        zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    except (zarr.errors.NodeNotFoundError, zarr.errors.ContainsArrayError, FileNotFoundError):
        return False
    return True


def _local_entries(location: str) -> list[str]:
    """What a local folder holds (empty for a URL or a folder that does not exist)."""
    folder = Path(location)
    if "://" in location or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)  # a writer's lock, not data


def array_specs(schema: GroupSchema, capacity: int) -> dict[str, dict]:
    """Shape, chunks, dtype and fill of every array of a feature group (``create_array`` keywords).

    A group whose one step is its pooled vector (an import, :attr:`GroupSchema.steps_in_pooled`)
    stores status and pooled only: its steps, mask and timestamps follow from them
    (:func:`steps_from_pooled`), and storing them too doubled an imported bank's size.
    """
    layout = schema.layout
    R, T = ROW_CHUNK, layout.max_steps
    specs = {
        "status": dict(shape=(capacity,), chunks=(R,), dtype="int8", fill_value=PENDING),
        # Uncompressed: float features barely compress (1.08x with zstd on a 40k x 4096 matrix) and
        # decompression made whole-matrix loads 3.4x slower (benchmarks/bench_bank_load.py).
        "pooled": dict(shape=(capacity, layout.pooled_dim), chunks=(R, layout.pooled_dim), dtype="float32",
                       fill_value=np.nan, compressors=None),
        # Compressed, unlike pooled, although zstd saves only 7 % of a 40k x 8 x 256 group and makes
        # reading its steps 3.3x slower (benchmarks/bench_steps_load.py): its frame check is how
        # `featbank validate` finds a damaged steps chunk, and a chunk holds max_steps steps per row,
        # for short videos mostly NaN padding, which zstd stores almost for free.
        "steps": dict(shape=(capacity, T, layout.step_dim), chunks=(R, T, layout.step_dim), dtype="float32",
                      fill_value=np.nan),
        "mask": dict(shape=(capacity, T), chunks=(R, T), dtype="bool", fill_value=False),
        "timestamps": dict(shape=(capacity, T), chunks=(R, T), dtype="float32", fill_value=np.nan),
    }
    if layout.frames_per_step:
        K = layout.frames_per_step
        specs["frame_indices"] = dict(shape=(capacity, T, K), chunks=(R, T, K), dtype="int32", fill_value=-1)
    if schema.steps_in_pooled:
        return {name: specs[name] for name in ("status", "pooled")}
    return specs


DERIVED_FROM_POOLED = ("steps", "mask", "timestamps")


def steps_from_pooled(pooled: np.ndarray, status: np.ndarray) -> dict[str, np.ndarray]:
    """Steps, mask and timestamps of a group whose one step is its pooled vector: what an import
    committed for them (the vector as step 0 at time 0, valid where the row is OK)."""
    mask = (status == OK)[:, None]
    return {"steps": pooled[:, None, :], "mask": mask,
            "timestamps": np.where(mask, np.float32(0), np.float32(np.nan))}


def damaged_rows(pooled: np.ndarray, status: np.ndarray, imported: bool) -> np.ndarray:
    """Which rows are marked OK but cannot hold what was committed there.

    Extractors always commit finite pooled vectors for OK rows (an absent modality is ABSENT, not
    OK, and keeps its NaN). Imports keep genuine gaps as NaN (imputed inside each fold) and turn
    infinities into NaN, and a row with no value at all is committed FAILED; so an imported OK row
    is damaged when it holds an infinity or no finite value. A lost chunk reads as all NaN, which
    both rules catch, and a value beyond ±1e30 is garbled bytes in either kind: no feature is
    ever that large, while random bytes in an (uncompressed) pooled chunk make one value in ~9
    so, so with any width past a few features nearly every garbled row is caught.
    """
    broken = np.zeros(len(status), dtype=bool)
    for lo in range(0, len(pooled), DAMAGE_BLOCK):  # in blocks: no temporary the size of the matrix
        block = pooled[lo:lo + DAMAGE_BLOCK]
        magnitude = np.abs(block)
        if imported:  # (an infinity is beyond ±1e30 too)
            broken[lo:lo + DAMAGE_BLOCK] = ((magnitude > ABSURD_MAGNITUDE).any(axis=1)
                                            | ~np.isfinite(block).any(axis=1))
        else:  # NaN, infinities and absurd values all fail `<=`
            broken[lo:lo + DAMAGE_BLOCK] = ~(magnitude <= ABSURD_MAGNITUDE).all(axis=1)
    return broken & (status == OK)


def digest_hex(digest: bytes | np.ndarray) -> str:
    return bytes(np.asarray(digest, dtype=np.uint8)).hex()


def _round_up(n: int) -> int:
    return max(ROW_CHUNK, -(-n // ROW_CHUNK) * ROW_CHUNK)


def _chunk_slice(chunk: int) -> slice:
    return slice(chunk * ROW_CHUNK, (chunk + 1) * ROW_CHUNK)


StoreLike = str | os.PathLike | zarr.abc.store.Store


class FeatureBank:
    """A feature bank on any Zarr store: a local path, an fsspec URL, or a zarr Store object.

    ``mode='a'`` opens or creates the bank; ``mode='r'`` refuses to create or modify it. Use it as
    a context manager (``with FeatureBank(path) as bank:``) to release the store when done; a Store
    object passed in stays the caller's to close. Distributed extraction needs a path or URL,
    since dask workers reopen the bank by name.
    """

    def __init__(self, location: StoreLike, mode: str = "a") -> None:
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (read, write, create), not {mode!r}")
        self.writable = mode != "r"
        if isinstance(location, zarr.abc.store.Store):
            self.path, store, self._owns_store = str(location), location, False
        else:
            self.path = bank_location(location)
            store, self._owns_store = _open_store(self.path, read_only=not self.writable), True
        self.root = self._open_root(store)
        check_bank_format(self.root.attrs, self.path)
        if self.writable:
            self._ensure_items()

    def _open_root(self, store: zarr.abc.store.Store) -> zarr.Group:
        """The root group; created only where nothing is, never over a damaged bank or other data."""
        try:
            return zarr.open_group(store=store, mode="r+" if self.writable else "r", zarr_format=3)
        except zarr.errors.ContainsArrayError:
            raise BankError(f"{self.path} holds a Zarr array, not a feature bank") from None
        except (zarr.errors.GroupNotFoundError, FileNotFoundError):  # (a read-only local store: no folder)
            pass
        except ValueError as exc:  # unreadable JSON in zarr.json
            raise BankError(f"{self.path}: the bank's root metadata (zarr.json) is unreadable ({exc}); "
                            f"restore it from a backup") from None
        parts = [name for name in ("items", "features") if _has_group(store, name)]
        if parts:
            raise BankError(f"{self.path}: the bank's root metadata (zarr.json) is missing, though its "
                            f"{' and '.join(parts)} are there: restore zarr.json from a backup, or write "
                            f"it back as {{\"zarr_format\": 3, \"node_type\": \"group\", \"attributes\": "
                            f"{json.dumps(bank_root_attrs())}}}")
        entries = _local_entries(self.path)
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise BankError(f"{self.path} is not a feature bank (no zarr.json; it holds {shown}); give a "
                            f"bank, or a new or empty folder to create one")
        if not self.writable:
            raise BankError(f"no feature bank at {self.path} (run `featbank extract` or `featbank import` "
                            f"first)")
        # The attributes go in the same write as the group: a bank is never without its format.
        return zarr.open_group(store=store, mode="a", zarr_format=3, attributes=bank_root_attrs())

    @property
    def location(self) -> str:
        """The path or URL another process (a dask worker) reopens this bank by."""
        if not self._owns_store:
            raise BankError(f"the bank on {self.path} was opened from a zarr Store object, which other "
                            f"processes cannot reopen; give its path or URL instead")
        return self.path

    def close(self) -> None:
        """Release the store (when this bank opened it); the bank object is unusable afterwards."""
        if self._owns_store:
            self.root.store.close()

    def __enter__(self) -> FeatureBank:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureBank({self.path!r}, mode={'a' if self.writable else 'r'!r}): {self.count} items"

    # ----------------------------------------------------------------- items
    def _ensure_items(self) -> None:
        """Create the items table, or whatever part of it a cut-short creation (a full disk) left out."""
        items = self.root.require_group("items")
        present = set(items.array_keys())
        cap = max([items[name].shape[0] for name in present] or [0])
        if "digest" not in present:
            items.create_array("digest", shape=(cap, DIGEST_BYTES), chunks=(ROW_CHUNK, DIGEST_BYTES),
                               dtype="uint8", fill_value=0)
        for name, (dtype, fill) in ITEM_FIELDS.items():
            if name not in present:
                # (chunk files a lost zarr.json left behind are kept, and read again)
                items.create_array(name, shape=(cap,), chunks=(ROW_CHUNK,), dtype=dtype, fill_value=fill)
        if "count" not in items.attrs:
            items.attrs["count"] = 0

    @property
    def items(self) -> zarr.Group:
        if "items" not in self.root:
            raise BankError(f"{self.path}: bank has no items table")
        return self.root["items"]

    @property
    def count(self) -> int:
        """Registered rows (0 too for a bank whose creation a full disk cut short: no items yet)."""
        return int(self.items.attrs.get("count", 0)) if "items" in self.root else 0

    @property
    def capacity(self) -> int:
        return int(self.items["digest"].shape[0])

    def digests(self) -> np.ndarray:
        n = self.count  # (none: the items table may be a creation a full disk cut short)
        return self._span("items/digest", 0, n) if n else np.zeros((0, DIGEST_BYTES), dtype=np.uint8)

    def rows_of(self, digests: Iterable[bytes]) -> np.ndarray:
        """Row of each digest, -1 for digests the bank has never seen."""
        return match_rows(self.digests(), digests)

    def register(self, digests: list[bytes]) -> np.ndarray:
        """Rows for ``digests``, appending unseen ones; the new count is committed last."""
        rows = self.rows_of(digests)
        new: list[bytes] = []
        seen: dict[bytes, int] = {}
        start = self.count
        for i, d in enumerate(digests):
            if rows[i] >= 0:
                continue
            if d not in seen:
                seen[d] = start + len(new)
                new.append(d)
            rows[i] = seen[d]
        if new:
            end = start + len(new)
            self._grow(end)
            block = np.frombuffer(b"".join(new), dtype=np.uint8).reshape(len(new), DIGEST_BYTES)
            self._write_rows(self.items["digest"], np.arange(start, end), block)
            self.items.attrs["count"] = end
        return rows

    def _grow(self, n_rows: int) -> None:
        """Give every row array room for ``n_rows``; each one is checked, so a resize cut short
        (a full disk) is completed by the next registration."""
        cap = max(_round_up(n_rows), self.capacity)
        for arr in self._row_arrays():
            if arr.shape[0] < cap:
                arr.resize((cap, *arr.shape[1:]))

    def _row_arrays(self) -> Iterable[zarr.Array]:
        yield from (a for _, a in self.items.arrays())
        for key in self.group_keys():
            yield from (a for _, a in self.root["features"][key].arrays())

    def _write_rows(self, arr: zarr.Array, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` into ``rows``, one whole chunk at a time (read, modify, replace).

        A packed array (``featbank compact``) gets its row chunks back first; writers normally
        did that already, in :meth:`ensure_group`, before any worker started."""
        if self.unpack_array(arr.path) is not None:
            arr = self.root[arr.path]
        for chunk in np.unique(rows // ROW_CHUNK):
            sl = _chunk_slice(int(chunk))
            block = arr[sl]
            sel = (rows // ROW_CHUNK) == chunk
            block[rows[sel] - sl.start] = values[sel]
            arr[sl] = block

    # ---------------------------------------------------------------- groups
    def group_keys(self) -> list[str]:
        """The complete feature groups: a group gets its attributes last, so one without them is
        a creation cut short (see :meth:`ensure_group`), left out here and completed by the next
        extract with its extractor (``validate`` reports it)."""
        return sorted(key for key, _ in self._all_groups() if key not in self.incomplete_groups())

    def _all_groups(self) -> list[tuple[str, zarr.Group]]:
        return list(self.root["features"].groups()) if "features" in self.root else []

    def incomplete_groups(self) -> list[str]:
        """Groups without attributes (creation cut short, or their metadata was lost)."""
        return sorted(key for key, g in self._all_groups() if "layout" not in g.attrs)

    def group(self, key: str) -> zarr.Group:
        if key not in self.group_keys():
            raise BankError(f"{self.path}: no feature group {key!r}; present: {self.group_keys()}")
        return self.root["features"][key]

    def schema(self, key: str) -> GroupSchema:
        """What group ``key`` records about itself (extractor, spec, feature names, weights, layout)."""
        return GroupSchema.from_attrs(self.group(key).attrs, where=f"{self.path}: group {key}")

    def is_imported(self, key: str) -> bool:
        """Whether a group was filled by ``featbank import`` (from a file) rather than extracted."""
        return self.schema(key).is_imported

    def keys_for(self, name: str) -> list[str]:
        """Feature groups of extractor ``name`` (several when it was run with several configs)."""
        return [k for k in self.group_keys() if k.split("@")[0] == name]

    def groups(self) -> list[GroupInfo]:
        """Every feature group with its readable name, dimensions and row counts (for notebooks)."""
        names = readable_names(self.group_keys())
        return [GroupInfo(key=key, name=names[key], schema=self.schema(key), counts=self.counts(key))
                for key in self.group_keys()]

    def ensure_group(self, key: str, schema: GroupSchema) -> zarr.Group:
        """Create the group for an extractor configuration, or check the existing one matches.

        Arrays are created first and the attributes last, so a group without attributes is one
        whose creation was cut short (a full disk, a kill): its missing arrays and its attributes
        are written now. No row is ever committed before this returns.
        """
        features = self.root.require_group("features")
        group = features.require_group(key)
        if "layout" in group.attrs:
            stored = self.schema(key).layout
            if stored != schema.layout:
                raise BankError(f"{self.path}: group {key} has layout {stored}, extractor says {schema.layout}")
        present = set(group.array_keys())
        for name, spec in array_specs(schema, self.capacity).items():
            if name not in present:
                group.create_array(name, **spec)  # keeps chunk files a lost zarr.json left behind
        if "layout" not in group.attrs:
            group.attrs.update(schema.stamped().to_attrs())
            self._grow(self.count)  # arrays a cut-short creation made before a registration grew the rest
        self.unpack_group(key)  # writes need row chunks: distributed workers write disjoint ones
        return group

    def unpack_group(self, key: str, tolerant: bool = False) -> list[Relayout]:
        """Give the packed arrays of group ``key`` (``featbank compact``) their row chunks back.

        ``tolerant``: unreadable packed chunks become fill values (``validate --repair``, which
        marks their rows pending) instead of stopping with an error.
        """
        return [done for name in PACKED_ARRAYS
                if (done := self.unpack_array(f"features/{key}/{name}", tolerant)) is not None]

    def unpack_array(self, path: str, tolerant: bool = False) -> Relayout | None:
        """Give the array at ``path`` its row chunks back if it is packed (None when it was not)."""
        files = self.chunk_files(path)
        return relayout(files.folder, ROW_CHUNK, ROW_KEYS, tolerant) if is_packed(files) else None

    def status(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        self.group(key)  # (refuses an unknown key)
        arr = self._span(f"features/{key}/status", 0, self.count)
        return arr if rows is None else arr[rows]

    def counts(self, key: str, rows: np.ndarray | None = None) -> dict[str, int]:
        """How many of ``rows`` (default: all) are in each status, by status name."""
        return status_counts(self.status(key, rows))

    # ---------------------------------------------------------------- commit
    def commit(self, rows: np.ndarray, records: Mapping[int, ItemRecord],
               outputs: Mapping[str, Mapping[int, StepFeatures]],
               ids: Mapping[int, str] | None = None) -> None:
        """Write a finished batch: item facts, then each group's data, then its status.

        ``rows`` must all lie in chunks no other writer touches concurrently.
        """
        rows = np.asarray(sorted(rows), dtype=np.int64)
        self._commit_items(rows, records)
        for key, per_row in outputs.items():
            self._commit_group(key, per_row, ids or {})

    def _commit_items(self, rows: np.ndarray, records: Mapping[int, ItemRecord]) -> None:
        rows = np.array([r for r in rows if r in records], dtype=np.int64)
        if rows.size == 0:
            return
        for name, (dtype, _) in ITEM_FIELDS.items():
            values = np.array([_item_value(records[int(r)], name) for r in rows], dtype=dtype)
            self._write_rows(self.items[name], rows, values)

    def _commit_group(self, key: str, per_row: Mapping[int, StepFeatures], ids: Mapping[int, str]) -> None:
        group, schema = self.group(key), self.schema(key)
        rows = np.array(sorted(per_row), dtype=np.int64)
        T = schema.layout.max_steps
        for name in array_specs(schema, 0):
            if name == "status" or name not in group:
                continue
            arr = group[name]
            fill = arr.fill_value
            values = np.full((rows.size, *arr.shape[1:]), fill, dtype=arr.dtype)
            for i, r in enumerate(rows):
                got = getattr(per_row[int(r)], name)
                if got is not None:
                    n = min(T, got.shape[0]) if name != "pooled" else got.shape[0]
                    values[i, :n] = got[:n]
            self._write_rows(arr, rows, values)
        failures = self.root.require_group("failures").require_group(key)
        span = self.items["digest"][rows.min():rows.max() + 1]  # one read, not one per row
        names = {int(r): digest_hex(span[r - rows.min()]) for r in rows}
        for r in rows:
            out = per_row[int(r)]
            if out.status == FAILED:
                rec = failures.require_group(names[int(r)])
                rec.attrs.update({"error": out.error or "unknown error", "video_id": ids.get(int(r), ""),
                                  "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
        status = np.array([per_row[int(r)].status for r in rows], dtype="int8")
        self._write_rows(group["status"], rows, status)
        recorded = set(failures.group_keys())
        for r in rows:
            if per_row[int(r)].status != FAILED and names[int(r)] in recorded:
                del failures[names[int(r)]]

    # ----------------------------------------------------------------- reads
    def pooled(self, key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and status of ``rows``.

        Rows marked OK whose features are damaged (see :func:`damaged_rows`: a lost chunk reads as
        NaN) are refused with a BankError, so a learner never imputes over them silently.
        """
        pooled, status = self.read_rows(key, ("pooled", "status"), rows)
        damaged = damaged_rows(pooled, status, self.is_imported(key))
        if damaged.any():
            bad = np.unique(np.asarray(rows)[damaged])
            shown = ", ".join(map(str, bad[:8])) + (", ..." if bad.size > 8 else "")
            raise BankError(f"{self.path}: {bad.size} rows of {key} are marked done but their features are "
                            f"missing or non-finite (bank rows {shown}): the bank is damaged. Run "
                            f"`featbank validate --bank {self.path} --repair` to mark them pending, then "
                            f"re-run `featbank extract` (or `featbank import`) to recompute them")
        return pooled, status

    def read_rows(self, key: str, arrays: Iterable[str], rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The named arrays of group ``key`` (``pooled``, ``steps``, ``mask``, ...) at ``rows``.

        Reads the covering row span once (steps, mask and timestamps of a group that stores none
        are derived from its pooled features and status). When ``rows`` is that span in order (a manifest
        extracted as one track: the common case), the span is returned as read: gathering it would
        copy the whole matrix once more, which at 40k × 4k is another 655 MB to allocate and fill
        (see benchmarks/bench_bank_load.py).
        """
        schema = self.schema(key)
        rows = np.asarray(rows, dtype=np.int64)
        arrays = list(arrays)
        lo, hi = (int(rows.min()), int(rows.max()) + 1) if rows.size else (0, 0)
        derive = schema.steps_in_pooled and not set(arrays).isdisjoint(DERIVED_FROM_POOLED)
        stored = ({"pooled", "status"} | (set(arrays) - set(DERIVED_FROM_POOLED))) if derive else set(arrays)
        read = {name: self._span(f"features/{key}/{name}", lo, hi) for name in stored}
        if derive:
            read.update(steps_from_pooled(read["pooled"], read["status"]))
        spans = tuple(read[a] for a in arrays)
        if rows.size == hi - lo and (rows.size == 0 or rows[0] == lo) and (np.diff(rows) == 1).all():
            return spans
        return tuple(span[rows - lo] for span in spans)

    def _span(self, path: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of the array at ``path``: on a local disk its chunk files are read
        straight into the result (:mod:`featbank.bank.chunkfiles`), elsewhere zarr reads them."""
        files = self.chunk_files(path)
        return self.root[path][lo:hi] if files is None else read_span(files, lo, hi, self.path)

    def chunk_files(self, path: str) -> ChunkFiles | None:
        """The direct reader of the array at ``path`` when the bank is a local folder and the
        array's layout is one it reads (see :class:`~featbank.bank.chunkfiles.ChunkFiles`), else None."""
        store = self.root.store
        if not isinstance(store, zarr.storage.LocalStore):
            return None
        return ChunkFiles.open(Path(store.root) / path)

    def failures(self, key: str) -> dict[str, dict]:
        if "failures" not in self.root or key not in self.root["failures"]:
            return {}
        return {name: dict(g.attrs) for name, g in self.root["failures"][key].groups()}

    # ---------------------------------------------------------------- tracks
    def save_track(self, manifest: Path, video_ids: list[str], paths: list,
                   digests: list[bytes]) -> None:
        """Remember a manifest's digests, so later commands need not re-hash its files.

        ``paths`` are media files or imported items (anything else: stored by its text, with size
        and mtime 0; such entries are never looked up, imported items are digested by name).
        """
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(manifest.resolve()).strip("/"))[-120:]
        stats = [p.stat() if isinstance(p, Path) else None for p in paths]
        record = {
            "manifest": str(manifest.resolve()), "video_ids": video_ids,
            "paths": [str(p.resolve()) if isinstance(p, Path) else str(p) for p in paths],
            "digests": [d.hex() for d in digests],
            "sizes": [s.st_size if s else 0 for s in stats], "mtimes": [s.st_mtime_ns if s else 0 for s in stats],
        }
        tracks = self.root.require_group("tracks")
        if slug in tracks and dict(tracks[slug].attrs) == record:
            return  # nothing to write: a re-run over a read-only bank stays read-only
        if slug in tracks:
            tracks[slug].attrs.update(record)
        else:  # group and attributes in one metadata write: a reader never sees the group without them
            tracks.create_group(slug, attributes=record)

    def hash_cache(self) -> dict[tuple[str, int, int], bytes]:
        """(absolute path, size, mtime_ns) → digest, from every track the bank remembers."""
        if "tracks" not in self.root:
            return {}
        return hash_cache_of(track.attrs for _, track in self.root["tracks"].groups())

    def tracks(self) -> list[dict]:
        if "tracks" not in self.root:
            return []
        return [{"manifest": t.attrs["manifest"], "items": len(t.attrs["video_ids"])}
                for _, t in self.root["tracks"].groups() if "video_ids" in t.attrs]

    # -------------------------------------------------------------- overview
    def summary(self) -> dict:
        groups = {}
        for info in self.groups():
            schema = info.schema
            groups[info.key] = {
                "name": info.name, "extractor": schema.extractor, "version": schema.version,
                "pooled_dim": schema.layout.pooled_dim,
                "steps": [schema.layout.max_steps, schema.layout.step_dim],
                "weights": schema.weights, **info.counts,
            }
        return {"path": str(self.path), "format": self.root.attrs["format"], "items": self.count,
                "capacity": self.capacity, "groups": groups, "tracks": self.tracks()}

    def validate(self) -> list[str]:
        """Every problem found (empty when the bank is sound); see :mod:`featbank.bank.validate`."""
        from featbank.bank.validate import inspect_bank  # it builds on this module

        return inspect_bank(self).all_problems


def _item_value(record: ItemRecord, name: str) -> object:
    if name == "size_bytes":
        return record.size_bytes
    if name == "probe":
        return OK if record.info is not None else FAILED
    if record.info is None:
        return ITEM_FIELDS[name][1]
    return getattr(record.info, name)


def describe(summary: dict) -> str:
    """Human-readable text of :meth:`FeatureBank.summary` for ``featbank info``."""
    lines = [f"bank {summary['path']}: {summary['items']} items"]
    for t in summary["tracks"]:
        lines.append(f"  track {t['manifest']} ({t['items']} items)")
    for key, g in summary["groups"].items():
        counts = ", ".join(f"{g[s]} {s}" for s in STATUS_NAMES.values())
        lines.append(f"  {key}: pooled {g['pooled_dim']}-d, steps {g['steps']}, {counts}")
        if g["weights"]:
            lines.append(f"    weights: {json.dumps(g['weights'])}")
    return "\n".join(lines)
