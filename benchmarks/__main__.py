"""Run one benchmark by name, or all of them: ``python -m benchmarks [name ...] [--flag ...]``.

Arguments from the first one starting with ``-`` on are handed to the named benchmarks (those
whose ``main`` takes ``argv``), e.g. ``python -m benchmarks bank_load --items 4000 --dim 1024``.
"""

from __future__ import annotations

import importlib
import inspect
import sys

BENCHMARKS = ("decode_once", "bank_load", "steps_load", "workers", "videval", "protocol_vs_gridsearch", "fit_scale",
              "deep", "startup", "temporal")


def main(argv: list[str]) -> int:
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, flags = argv[:split] or list(BENCHMARKS), argv[split:]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    mains = {name: importlib.import_module(f"benchmarks.bench_{name}").main for name in names}
    takes = {name: bool(inspect.signature(fn).parameters) for name, fn in mains.items()}
    if flags and not all(takes.values()):
        flagless = [name for name, t in takes.items() if not t]
        print(f"benchmark(s) {flagless} take no arguments; name the ones given {flags}", file=sys.stderr)
        return 2
    rc = 0
    for name, fn in mains.items():
        # an explicit list, even empty: argparse would otherwise read sys.argv, benchmark names included
        rc = max(rc, (fn(flags) if takes[name] else fn()) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
