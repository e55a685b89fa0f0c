"""Published subsets: the item lists a paper's numbers were computed on, shipped as data.

A published number is only comparable on the same items: VIDEVAL reports YouTube-UGC on its 1323
colour videos, not all 1380. Such a list lives once, in ``manifests/subsets/<name>.toml``, and
everything that needs it reads that file: ``featbank import --subset NAME``, the reference-data
loader of the benchmarks, and the tests. A subset file holds

- ``title``, ``dataset`` and ``source``: what the list is, which set it applies to, where it is published;
- ``total`` (items of that set) and ``count`` (items left), checked against the lists on load;
- ``drop_rows``: the 1-based rows as published, applied when the imported items have no ids;
- ``drop_ids`` (the same items, in the same order, by their ``id_column`` value), applied when they do.

Reading the catalogue needs neither numpy, pandas nor a bank, so ``featbank import --help`` can list
it without slowing the command line down.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from featbank.errors import FeatbankError

MAX_LISTED = 5


@dataclass(frozen=True)
class Subset:
    """One published item list (see the module docstring); :meth:`keep` applies it."""

    name: str
    title: str
    dataset: str
    source: str
    total: int
    count: int
    id_column: str
    drop_rows: tuple[int, ...]
    drop_ids: tuple[str, ...]

    def keep(self, ids: list[str] | None, n: int) -> list[bool]:
        """Which of ``n`` items stay: matched by id when the items have ids, else by published row.

        Every id of the list must be among the items: a list that matches only partly means another
        dataset or another id column, and silently dropping fewer items would change the benchmark.
        """
        if ids is None:
            if n != self.total:
                raise FeatbankError(f"subset {self.name} lists rows of the {self.total} items of {self.dataset}; "
                                    f"this import has {n} items and no ids to match them by (--id-column)")
            rows = set(self.drop_rows)
            return [i + 1 not in rows for i in range(n)]
        present = set(ids)
        missing = [v for v in self.drop_ids if v not in present]
        if missing:
            raise FeatbankError(f"subset {self.name}: {len(missing)} of its {len(self.drop_ids)} ids are not among "
                                f"the imported items (e.g. {', '.join(missing[:MAX_LISTED])}); it applies to "
                                f"{self.dataset}, with ids from its {self.id_column!r} column")
        dropped = set(self.drop_ids)
        return [v not in dropped for v in ids]


def _subset_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("manifests") / "subsets"
    return {f.name.removesuffix(".toml"): f for f in folder.iterdir() if f.name.endswith(".toml")}


def available_subsets() -> list[str]:
    """Names of the shipped subsets."""
    return sorted(_subset_files())


def describe_subsets() -> str:
    """One line per shipped subset (name, items kept of total, title), for ``--help``."""
    return "\n".join(f"  {s.name}: {s.count} of {s.total} items; {s.title}"
                     for s in map(load_subset, available_subsets()))


def load_subset(name: str) -> Subset:
    """The subset called ``name``, checked for consistency; an error naming the shipped ones otherwise."""
    files = _subset_files()
    if name not in files:
        raise FeatbankError(f"unknown subset {name!r}; subsets: {', '.join(sorted(files)) or 'none'}")
    spec = tomllib.loads(files[name].read_text())
    subset = Subset(name=name, title=spec["title"], dataset=spec["dataset"], source=spec["source"],
                    total=int(spec["total"]), count=int(spec["count"]), id_column=spec["id_column"],
                    drop_rows=tuple(int(r) for r in spec["drop_rows"]),
                    drop_ids=tuple(str(v) for v in spec["drop_ids"]))
    dropped = subset.total - subset.count
    rows, ids = subset.drop_rows, subset.drop_ids
    if not (len(rows) == len(set(rows)) == len(ids) == len(set(ids)) == dropped
            and all(1 <= r <= subset.total for r in rows)):
        raise FeatbankError(f"subset file {name}.toml is inconsistent: total - count = {dropped}, "
                            f"{len(rows)} drop_rows ({len(set(rows))} distinct, all in 1..{subset.total}: "
                            f"{all(1 <= r <= subset.total for r in rows)}), {len(ids)} drop_ids "
                            f"({len(set(ids))} distinct)")
    return subset
