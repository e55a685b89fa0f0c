"""What a bank and each of its feature groups record about themselves, as typed objects.

The bank's metadata lives in Zarr attributes (JSON). Reading them by string key in every module
that needs one fact let the writers and the readers drift apart; here they are declared once:

- :data:`BANK_FORMAT`: the layout version stored in the root attributes (``format``). A bank from
  a newer featbank is refused on open with both versions named, instead of being misread.
- :class:`GroupSchema`: everything a feature group records (extractor, spec, configuration,
  feature names, weights, layout, provenance), with :meth:`~GroupSchema.to_attrs` /
  :meth:`~GroupSchema.from_attrs` and its own :data:`SCHEMA_VERSION`. Groups written before the
  version was stored read as version 1, which is the layout they have. Version 2 is the layout of
  a group whose one step is its pooled vector (:attr:`GroupSchema.steps_in_pooled`: status and
  pooled only); every other group is still written as version 1, which older featbanks read.
- the row status codes (:data:`PENDING`, :data:`OK`, :data:`FAILED`, :data:`ABSENT`) and what
  is read from a bank's records the same way whether zarr or the direct reader
  (:mod:`featbank.bank.localview`) fetched them: status counts, rows of digests, the hash cache.
- :func:`readable_names`: short names for group keys in tables a person reads.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np

from featbank import __version__
from featbank.errors import BankError

BANK_FORMAT = 1
SCHEMA_VERSION = 2  # the newest group schema this featbank reads and writes
STEPS_IN_POOLED_SCHEMA = 2  # first schema of groups that store no steps (see steps_in_pooled)
IMPORT_SPEC_PREFIX = "import:"  # the ``spec`` of groups made by ``featbank import``
SHORT_HASH = 4  # hex digits a readable name keeps when one extractor has several groups

ROW_CHUNK = 32  # rows per chunk of every row array: the commit unit, what a killed run can lose
PENDING, OK, FAILED, ABSENT = 0, 1, 2, 3  # a row's status in a group; status is written last
STATUS_NAMES = {PENDING: "pending", OK: "ok", FAILED: "failed", ABSENT: "absent"}


def status_counts(codes: np.ndarray) -> dict[str, int]:
    """How many rows are in each status, by status name."""
    found = np.bincount(codes, minlength=len(STATUS_NAMES))
    return {STATUS_NAMES[c]: int(found[c]) for c in STATUS_NAMES}


def match_rows(known: np.ndarray, digests: Iterable[bytes]) -> np.ndarray:
    """Row of each of ``digests`` among the bank's ``known`` digests (one per row), -1 where absent."""
    index = {bytes(d): i for i, d in enumerate(known)}
    return np.array([index.get(bytes(d), -1) for d in digests], dtype=np.int64)


def hash_cache_of(tracks: Iterable[Mapping]) -> dict[tuple[str, int, int], bytes]:
    """(absolute path, size, mtime_ns) → digest, from the attributes of the tracks a bank remembers.

    A track another process is recording right now (read before its attributes, without the lock:
    the cache only saves hashing) is skipped; its files are hashed instead.
    """
    cache: dict[tuple[str, int, int], bytes] = {}
    for a in tracks:
        if not all(key in a for key in ("paths", "sizes", "mtimes", "digests")):
            continue
        for p, s, m, d in zip(a["paths"], a["sizes"], a["mtimes"], a["digests"]):
            cache[(p, int(s), int(m))] = bytes.fromhex(d)
    return cache


def default_names(d: int) -> list[str]:
    """Names for unnamed feature columns: ``f0 .. f{d-1}``."""
    return [f"f{j}" for j in range(d)]


@dataclass(frozen=True)
class GroupLayout:
    """Shapes of one extractor group; fixed when the group is created."""

    pooled_dim: int
    max_steps: int
    step_dim: int
    frames_per_step: int

    def to_attrs(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class GroupSchema:
    """The attributes of one feature group (``features/<key>`` in the bank).

    ``details`` holds what only one kind of group records (an import's ``inf_to_nan`` count); it
    is stored flat beside the declared fields, as banks of format 1 always stored it, and every
    attribute this version does not declare lands there when read, so nothing is lost on a
    read-modify-write by an older reader. Mapping fields are plain dicts for JSON: treat them as
    read-only.
    """

    extractor: str
    spec: str
    layout: GroupLayout
    version: str | int = ""
    config: Mapping = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    pooled_names: tuple[str, ...] = ()
    weights: Mapping | None = None
    runtime: Mapping | None = None
    decoder: Mapping | None = None
    featbank: str | None = __version__  # the featbank that created the group (None: not recorded)
    created: str | None = None
    details: Mapping = field(default_factory=dict)

    @property
    def is_imported(self) -> bool:
        """Whether the group was filled by ``featbank import`` (from a file), not extracted."""
        return self.spec.startswith(IMPORT_SPEC_PREFIX)

    @property
    def steps_in_pooled(self) -> bool:
        """Whether the group's one step is its pooled vector: an import (one step of the pooled
        width, no frames). Such a group stores status and pooled only; its steps, mask and
        timestamps are derived from them when read (imports stored the matrix twice before)."""
        layout = self.layout
        return (self.is_imported and layout.max_steps == 1 and layout.step_dim == layout.pooled_dim
                and not layout.frames_per_step)

    @property
    def random_weights(self) -> bool:
        """Whether the features come from randomly initialised weights (dry runs only)."""
        return bool((self.weights or {}).get("random"))

    def column_names(self) -> list[str]:
        """One name per pooled feature (``f0 ..`` when the group recorded none that fit)."""
        d = self.layout.pooled_dim
        return list(self.pooled_names) if len(self.pooled_names) == d else default_names(d)

    def step_names(self) -> list[str]:
        """One name per per-step feature (``f0 ..`` when the group recorded none that fit)."""
        d = self.layout.step_dim
        return list(self.feature_names) if len(self.feature_names) == d else default_names(d)

    def stamped(self) -> GroupSchema:
        """This schema with its creation time set to now (done once, when the group is created)."""
        return replace(self, created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def to_attrs(self) -> dict:
        """JSON-ready attributes, in format-1 layout plus ``schema``: the oldest schema version
        that describes the group's arrays, so older featbanks keep reading what they can."""
        attrs = {**self.details}
        for f in fields(self):
            if f.name == "details":
                continue
            value = getattr(self, f.name)
            if isinstance(value, GroupLayout):
                value = value.to_attrs()
            elif isinstance(value, tuple):
                value = list(value)
            attrs[f.name] = value
        attrs["schema"] = STEPS_IN_POOLED_SCHEMA if self.steps_in_pooled else 1
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping, where: str = "feature group") -> GroupSchema:
        """Read stored attributes; a newer schema version or a missing layout is a BankError."""
        attrs = dict(attrs)
        version = attrs.pop("schema", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise BankError(f"{where} was written with group schema {version!r} (featbank "
                            f"{attrs.get('featbank', '?')}); this featbank {__version__} reads schema "
                            f"≤ {SCHEMA_VERSION}: upgrade featbank to read it")
        if not isinstance(attrs.get("layout"), Mapping):
            raise BankError(f"{where}: its metadata has no layout, so the bank is damaged or was not "
                            f"written by featbank; run `featbank validate` on it")
        declared = {f.name for f in fields(cls)} - {"details"}
        values = {k: attrs.pop(k) for k in list(attrs) if k in declared}
        values["layout"] = GroupLayout(**values["layout"])
        for name in ("feature_names", "pooled_names"):
            values[name] = tuple(str(n) for n in values.get(name) or ())
        values.setdefault("extractor", "")
        values.setdefault("spec", "")
        values.setdefault("featbank", None)
        return cls(**values, details=attrs)


def bank_root_attrs() -> dict:
    """Root attributes of a new bank."""
    return {"format": BANK_FORMAT, "created_by": f"featbank {__version__}"}


def check_bank_format(attrs: Mapping, location: str) -> None:
    """Refuse a bank this featbank cannot read, saying why and what to do."""
    found = attrs.get("format")
    if found is None:
        raise BankError(f"{location} is a Zarr group but not a featbank bank (its root metadata has no "
                        f"'format'); point --bank at a bank, or at a new path to create one")
    if not isinstance(found, int) or found < 1:
        raise BankError(f"{location}: bank format {found!r} is not one featbank ever wrote; the root "
                        f"metadata (zarr.json) is damaged")
    if found > BANK_FORMAT:
        raise BankError(f"{location} was written by {attrs.get('created_by', 'a newer featbank')} in bank "
                        f"format {found}; this featbank {__version__} reads format ≤ {BANK_FORMAT}: "
                        f"upgrade featbank to open it")


def readable_names(keys: Iterable[str]) -> dict[str, str]:
    """Shortest unambiguous name of each bank key among ``keys``, for tables a person reads.

    ``handcrafted@5d3ee49b35`` reads ``handcrafted`` when it is the only handcrafted group in
    play, else ``handcrafted@5d3e`` (more hex digits only if four do not tell the groups apart).
    Keys without ``@`` are kept as they are.
    """
    keys = list(dict.fromkeys(keys))
    by_name: dict[str, list[str]] = {}
    for key in keys:
        by_name.setdefault(key.partition("@")[0], []).append(key)
    names: dict[str, str] = {}
    for name, same in by_name.items():
        if len(same) == 1:
            names[same[0]] = name if "@" in same[0] else same[0]
            continue
        hashes = [k.partition("@")[2] for k in same]
        width = next((n for n in range(SHORT_HASH, max(map(len, hashes)) + 1)
                      if len({h[:n] for h in hashes}) == len(hashes)), None)
        for key, digest in zip(same, hashes):
            names[key] = key if width is None or not digest else f"{name}@{digest[:width]}"
    return {k: names[k] for k in keys}
