"""Evaluation protocols: named, reproducible ways to split labelled samples, as sklearn splitters.

A published number is only comparable if the splits, the model selection and the metric are the
same, so a protocol is data, not a loop. Each protocol expands into *rounds*: a round is one
scoring unit, and its folds say which samples train which model.

* a **pooled** round partitions its samples into k folds, every fold is predicted by models
  trained on the others, and the round is scored once on the pooled out-of-fold predictions
  (k-fold CV, one round per repeat);
* a **held-out** round has one test part (fold 0) scored on its own; its training part is split
  into inner folds 1..k, which only a stack's meta-learner uses (VIDEVAL's 80/20 splits, NTIRE's
  train/validation, ten random splits).

Either way, the honest stack of :mod:`featbank.learning.engine` trains the meta-learner for test
fold f on level-1 predictions of every other fold g from models fitted without {f, g}. Every
protocol is also a scikit-learn splitter (``split(X, y, groups)``, ``get_n_splits``), so
``cross_val_score(model, X, y, cv=protocol)`` runs the same splits.

Adding a protocol is one entry in :data:`PROTOCOLS`: its syntax, its help line and how to build
it from the spec's argument; the CLI's help and the spec parser read that table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featbank.errors import FeatbankError, UsageError

INNER_FOLDS = 5
"""Inner folds of a held-out round's training part (the stack's level-1 predictions)."""


@dataclass(frozen=True)
class Round:
    """One scoring unit of a protocol.

    ``order`` lists the round's samples (indices into the data) in the order learners see them:
    VIDEVAL's svr_grid picks its inner split from the order of its training rows, so the order
    ``train_test_split`` returned is kept. ``folds`` is aligned with ``order``. A pooled round
    scores every fold; a held-out round scores fold 0 and uses folds 1..k as inner folds.
    ``seed`` seeds the learners fitted in this round.
    """

    order: np.ndarray
    folds: np.ndarray
    pooled: bool
    seed: int

    @property
    def fold_ids(self) -> list[int]:
        """Every fold of the round, in order."""
        return sorted(set(self.folds.tolist()))

    @property
    def test_folds(self) -> list[int]:
        """The folds this round scores."""
        return self.fold_ids if self.pooled else [0]

    def rows(self, folds: tuple[int, ...], inside: bool) -> np.ndarray:
        """Sample indices (in round order) inside, or outside, the given folds."""
        hit = np.isin(self.folds, folds)
        return self.order[hit if inside else ~hit]

    @property
    def scored(self) -> np.ndarray:
        """Indices of the samples this round scores, in order."""
        return self.rows(tuple(self.test_folds), inside=True)


def split_numbers(rounds: list[Round]) -> dict[tuple[int, int], int]:
    """(round, test fold) -> split number, in the order :meth:`Protocol.split` yields the splits."""
    pairs = [(r, f) for r, rnd in enumerate(rounds) for f in rnd.test_folds]
    return {pair: i for i, pair in enumerate(pairs)}


def fold_ids(n: int, n_splits: int, repeats: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Test-fold index of every sample, shape ``(repeats, n)``; repeat r is shuffled with ``seed + r``.

    With ``groups`` (e.g. the source content a distorted video came from), folds are grouped so
    no group sits in both a training and a test part; otherwise samples are shuffled freely.
    """
    from sklearn.model_selection import GroupKFold, KFold

    if n_splits < 2:
        raise UsageError(f"n_splits must be at least 2, got {n_splits}")
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1, got {repeats}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise FeatbankError(f"groups must have one entry per sample ({n}), got shape {groups.shape}")
        n_groups = len(np.unique(groups))
        if n_splits > n_groups:
            raise UsageError(f"cannot make {n_splits} grouped folds from {n_groups} groups")
    elif n_splits > n:
        raise UsageError(f"cannot make {n_splits} folds from {n} samples")
    ids = np.empty((repeats, n), dtype=np.int64)
    for r in range(repeats):
        if groups is None:
            splits = KFold(n_splits, shuffle=True, random_state=seed + r).split(np.empty(n))
        else:
            splitter = GroupKFold(n_splits, shuffle=True, random_state=seed + r)
            splits = splitter.split(np.empty(n), groups=groups)
        for fold, (_, test) in enumerate(splits):
            ids[r, test] = fold
    return ids


def held_out_round(train: np.ndarray, test: np.ndarray, seed: int, groups: np.ndarray | None,
                   inner_folds: int = INNER_FOLDS) -> Round:
    """A round scoring ``test``, with ``train`` (order kept) cut into seeded inner folds 1..k.

    Inner folds are grouped when the data are. A training part holding fewer groups than k gets
    one inner fold per group; one with a single group (or sample) gets one inner fold, which is
    enough to score bases but not to stack (the engine says so).
    """
    train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    if train.size == 0 or test.size == 0:
        raise FeatbankError("a held-out split needs both training and test samples")
    if np.intersect1d(train, test).size:
        raise FeatbankError("training and test indices overlap")
    inner_groups = None if groups is None else np.asarray(groups)[train]
    available = len(np.unique(inner_groups)) if inner_groups is not None else len(train)
    k = min(inner_folds, available)
    inner = fold_ids(len(train), k, 1, seed, inner_groups)[0] + 1 if k >= 2 else np.ones(len(train), np.int64)
    return Round(np.concatenate([train, test]), np.concatenate([inner, np.zeros(len(test), np.int64)]),
                 pooled=False, seed=seed)


class Protocol:
    """Base of every protocol: a named list of rounds over ``n`` samples, and an sklearn splitter.

    Subclasses implement :meth:`rounds`. ``spec`` is the text that rebuilds the protocol
    (``kfold:5x2``), ``describe()`` says in words what it does, for reports.
    """

    spec: str = ""

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.spec

    # -- scikit-learn splitter interface
    def split(self, X: np.ndarray, y: np.ndarray | None = None,
              groups: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(train, test) index arrays of every scored split, as scikit-learn splitters yield."""
        for rnd in self.rounds(len(X), groups):
            for fold in rnd.test_folds:
                yield rnd.rows((fold,), inside=False), rnd.rows((fold,), inside=True)

    def get_n_splits(self, X: np.ndarray | None = None, y: np.ndarray | None = None,
                     groups: np.ndarray | None = None) -> int:
        if X is None:
            raise FeatbankError(f"protocol {self.spec!r} needs the data to count its splits")
        return len(split_numbers(self.rounds(len(X), groups)))


@dataclass
class KFoldProtocol(Protocol):
    """K-fold repeated R times, grouped by the manifest's groups when given: one pooled round per repeat."""

    k: int = 5
    repeats: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.spec = f"kfold:{self.k}x{self.repeats}"

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        ids = fold_ids(n, self.k, self.repeats, self.seed, groups)
        return [Round(np.arange(n), row, pooled=True, seed=self.seed + r) for r, row in enumerate(ids)]

    def describe(self) -> str:
        reps = f", repeated {self.repeats} times" if self.repeats > 1 else ""
        return f"{self.k}-fold cross-validation{reps}, each repeat scored on its pooled out-of-fold predictions"


@dataclass
class VidevalProtocol(Protocol):
    """VIDEVAL / UGC-VQA (Tu et al., TIP 2021): N random 80/20 splits with the published seeds.

    ``train_test_split(test_size=0.2, random_state=ceil(8.8 i))`` for i = 1..N, learners seeded
    with ``ceil(6.6 i)``. ``math.ceil(8.8 * i)`` is evaluated in floating point exactly as the
    original script does (``8.8 * 25 = 220.00000000000003`` gives 221; 8 of the 100 seeds differ
    from exact decimal arithmetic this way), so the index sets are the published ones. Training
    indices keep ``train_test_split``'s shuffled order, on which svr_grid's inner split depends.
    """

    n_splits: int = 100

    def __post_init__(self) -> None:
        if self.n_splits < 1:
            raise FeatbankError(f"n_splits must be at least 1, got {self.n_splits}")
        self.spec = f"videval:{self.n_splits}"

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        from sklearn.model_selection import train_test_split

        out = []
        for i in range(1, self.n_splits + 1):
            train, test = train_test_split(np.arange(n), test_size=0.2, random_state=math.ceil(8.8 * i))
            out.append(held_out_round(train, test, math.ceil(6.6 * i), groups))
        return out

    def describe(self) -> str:
        return f"VIDEVAL's {self.n_splits} random 80/20 splits (seeds ceil(8.8 i)), each scored on its test part"


@dataclass
class RandomSplitsProtocol(Protocol):
    """N seeded random train/validation splits (grouped when the data are), each scored on its own.

    The podium systems of the NTIRE/KVQ challenges train on ten such splits and submit the mean.
    """

    n_splits: int = 10
    train_size: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_splits < 1 or not 0.0 < self.train_size < 1.0:
            raise UsageError("random:N[:FRACTION] needs N >= 1 and 0 < FRACTION < 1")
        self.spec = f"random:{self.n_splits}:{self.train_size:g}"

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

        splitter_cls = ShuffleSplit if groups is None else GroupShuffleSplit
        splitter = splitter_cls(self.n_splits, train_size=self.train_size, random_state=self.seed)
        return [held_out_round(train, test, self.seed + i, groups)
                for i, (train, test) in enumerate(splitter.split(np.empty(n), groups=groups))]

    def describe(self) -> str:
        return (f"{self.n_splits} random {self.train_size:.0%}/{1 - self.train_size:.0%} splits "
                f"(seed {self.seed}), each scored on its validation part")


@dataclass
class HoldoutProtocol(Protocol):
    """One fixed split: train where ``train_mask`` holds, score the rest (NTIRE train/validation)."""

    train_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    seed: int = 0
    label: str = "holdout"

    def __post_init__(self) -> None:
        mask = np.asarray(self.train_mask, dtype=bool)
        if mask.ndim != 1 or mask.all() or not mask.any():
            raise FeatbankError("a holdout needs both training and held-out samples")
        self.train_mask = mask
        self.spec = self.label

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        if n != self.train_mask.size:
            raise FeatbankError(f"protocol {self.spec!r} is for {self.train_mask.size} samples, the data have {n}")
        return [held_out_round(np.flatnonzero(self.train_mask), np.flatnonzero(~self.train_mask), self.seed, groups)]

    def describe(self) -> str:
        return f"one fixed split ({self.spec}): trained on {int(self.train_mask.sum())}, scored on the rest"


@dataclass
class SavedProtocol(Protocol):
    """Rounds read back from ``splits.npz``: re-running or auditing a result uses the very same indices."""

    saved: list[Round] = field(default_factory=list)
    n: int = 0
    text: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.spec = self.name

    def rounds(self, n: int, groups: np.ndarray | None = None) -> list[Round]:
        if n != self.n:
            raise FeatbankError(f"protocol {self.spec!r} is for {self.n} samples, the data have {n}")
        return list(self.saved)

    def describe(self) -> str:
        return self.text


def save_rounds(path: str | Path, protocol: Protocol, rounds: list[Round], n: int) -> None:
    """Write every round's sample order, folds, kind and seed (and the protocol's spec) to one ``.npz``."""
    arrays: dict[str, np.ndarray] = {
        "spec": np.array(protocol.spec), "description": np.array(protocol.describe()), "n": np.array(n),
        "seeds": np.array([r.seed for r in rounds], dtype=np.int64),
        "pooled": np.array([r.pooled for r in rounds], dtype=bool),
    }
    for i, rnd in enumerate(rounds):
        arrays[f"order_{i}"] = rnd.order
        arrays[f"folds_{i}"] = rnd.folds
    np.savez_compressed(path, **arrays)


def load_rounds(path: str | Path) -> SavedProtocol:
    """The protocol saved by :func:`save_rounds`, replaying its exact rounds."""
    with np.load(path, allow_pickle=False) as data:
        rounds = [Round(data[f"order_{i}"], data[f"folds_{i}"], bool(pooled), int(seed))
                  for i, (seed, pooled) in enumerate(zip(data["seeds"], data["pooled"], strict=True))]
        return SavedProtocol(saved=rounds, n=int(data["n"]), text=str(data["description"]), name=str(data["spec"]))


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class ProtocolContext:
    """What a spec may refer to besides its own text: the seed, and manifest columns by name."""

    seed: int = 0
    column: Callable[[str], np.ndarray] | None = None


def _kfold(arg: str, ctx: ProtocolContext) -> Protocol:
    k, _, repeats = (arg or "5").partition("x")
    return KFoldProtocol(int(k), int(repeats or 1), ctx.seed)


def _videval(arg: str, ctx: ProtocolContext) -> Protocol:
    return VidevalProtocol(int(arg) if arg else 100)


def _random(arg: str, ctx: ProtocolContext) -> Protocol:
    n, _, fraction = (arg or "10").partition(":")
    return RandomSplitsProtocol(int(n), float(fraction) if fraction else 0.8, ctx.seed)


def _holdout(arg: str, ctx: ProtocolContext) -> Protocol:
    column, sep, value = arg.partition("=")
    if not sep or not column:
        raise ValueError("expected holdout:COLUMN=VALUE")
    if ctx.column is None:
        raise FeatbankError("holdout needs a manifest to read its column from")
    values = np.asarray(ctx.column(column)).astype(str)
    return HoldoutProtocol(values == value, ctx.seed, label=f"holdout:{column}={value}")


@dataclass(frozen=True)
class ProtocolEntry:
    syntax: str
    help: str
    build: Callable[[str, ProtocolContext], Protocol]


PROTOCOLS: Mapping[str, ProtocolEntry] = {
    "kfold": ProtocolEntry("kfold[:K[xR]]", "K-fold (5), repeated R times, grouped by `group` if present", _kfold),
    "videval": ProtocolEntry("videval[:N]", "VIDEVAL's N (100) random 80/20 splits, seeds ceil(8.8 i)", _videval),
    "random": ProtocolEntry("random[:N[:FRAC]]", "N (10) seeded random train/validation splits, FRAC (0.8) "
                                                 "trains; grouped if `group` is present", _random),
    "holdout": ProtocolEntry("holdout:COL=VAL", "train where column COL equals VAL, score the rest (NTIRE)", _holdout),
}
"""Every protocol a spec can name: ``name[:argument]``."""


def protocol_help() -> str:
    """The protocol lines of the CLI's help, from :data:`PROTOCOLS`."""
    width = max(len(e.syntax) for e in PROTOCOLS.values()) + 2
    return "\n".join(f"  {e.syntax:<{width}}{e.help}" for e in PROTOCOLS.values())


def parse_protocol(spec: str, context: ProtocolContext | None = None) -> Protocol:
    """The protocol a spec such as ``kfold:5x3``, ``videval:20`` or ``holdout:meta_split=train`` names."""
    name, _, arg = spec.strip().partition(":")
    entry = PROTOCOLS.get(name)
    if entry is None:
        raise UsageError(f"unknown protocol {spec!r}; use one of: "
                            + ", ".join(e.syntax for e in PROTOCOLS.values()))
    try:
        return entry.build(arg, context or ProtocolContext())
    except ValueError as error:
        raise UsageError(f"bad protocol {spec!r} (syntax {entry.syntax}): {error}") from error
