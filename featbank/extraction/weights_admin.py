"""``featbank weights list|verify|import``: the checkpoints deep extractors read, seen from the shell.

Every extractor declares its own :class:`~featbank.extraction.weights.WeightsSpec`; this module only gathers
them, so the registry of weights is the registry of extractors and cannot drift from it.
"""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

import extractors
from extractors.base import Extractor
from featbank.errors import FeatbankError
from featbank.extraction.weights import (
    WeightsPolicy,
    WeightsSpec,
    candidates,
    expected_sha256,
    import_weights,
    resolve,
)


def _with_weight_variants(names: list[str]) -> list[str]:
    """Each registered name followed by its variants that read another checkpoint."""
    return [spec for name in names for spec in (name, *extractors.REGISTRY[name].weight_variants)]


def weighted_extractors(specs: list[str] | None) -> tuple[list[tuple[str, Extractor]], list[str]]:
    """The named extractors (default: every registered one, and its variants that read another
    checkpoint) that need weights, and notes on those that cannot be listed without an argument
    (``timm`` needs a model name)."""
    chosen, notes = [], []
    for spec in specs or _with_weight_variants(extractors.available()):
        try:
            ex = extractors.create(spec)
        except (FeatbankError, TypeError) as exc:
            if specs:
                raise
            notes.append(f"{spec}: {exc}")
            continue
        if ex.weights is not None:
            chosen.append((spec, ex))
        elif specs:
            notes.append(f"{spec}: needs no weights")
    return chosen, notes


def list_weights(specs: list[str] | None, directory: Path | None) -> str:
    rows, notes = [], []
    chosen, notes = weighted_extractors(specs)
    for spec, ex in chosen:
        w = ex.weights
        expected, pinned_by = expected_sha256(w, directory)
        found = next((p for p in candidates(w, directory) if p.is_file()), None)
        rows.append([spec, w.filename, f"{expected[:16]}… ({pinned_by})" if expected else "unpinned",
                     w.license + (" (NON-COMMERCIAL)" if w.non_commercial else ""),
                     str(found) if found else "MISSING", w.source])
    table = tabulate(rows, headers=["extractor", "file", "sha256", "license", "found at", "source"])
    where = f"weights directory: {directory}" if directory else "no weights directory set (--weights-dir / $FEATBANK_WEIGHTS)"
    return "\n".join([where, table, *notes])


def verify_weights(specs: list[str] | None, directory: Path | None, load: bool = False,
                   reference_dirs: list[Path] | None = None, device: str = "cpu") -> tuple[str, bool]:
    """Check every checkpoint's presence, checksum and that it reads as a checkpoint (with ``load``,
    a strict load into the architecture instead). With ``reference_dirs`` (``--reference``), also run
    the published examples of the checkpoints that passed (:func:`reference_report`). Returns the
    report and whether everything passed."""
    policy = WeightsPolicy(directory=directory, accept_non_commercial=True)  # checking is not using
    lines, ok, verified = [], True, set()
    chosen, notes = weighted_extractors(specs)
    for spec, ex in chosen:
        try:
            found = resolve(ex.weights, policy)
            (ex.verify_checkpoint if load else ex.check_checkpoint)(found.path)
            verified.add(ex.weights.filename)
            lines.append(f"OK       {spec}: {found.path} sha256 {found.sha256} ({found.pinned_by})"
                         + (", loads strictly" if load else ", reads as a checkpoint (--load also "
                                                            "checks names and shapes)"))
        except FeatbankError as exc:
            ok = False
            lines.append(f"PROBLEM  {spec}: {exc}")
    report = lines + notes
    if reference_dirs is not None:
        table, passed = reference_report(chosen, verified, policy, reference_dirs, device)
        report += ["", table]
        ok = ok and passed
    return "\n".join(report), ok


def _values(values: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.5f}" for v in values)


def reference_report(chosen: list[tuple[str, Extractor]], verified: set[str], policy: WeightsPolicy,
                     directories: list[Path], device: str) -> tuple[str, bool]:
    """Run the reference case (:mod:`featbank.extraction.reference`) of every chosen checkpoint that
    verified, each on its extractor built with that checkpoint on ``device``; the inputs are looked
    up in ``directories``. A case whose weights are absent or whose input is missing is reported as
    skipped, with the reason, and is not a failure. Returns the table with its notes, and whether
    no case that ran failed."""
    from featbank.extraction.reference import CASES, run_case

    asked = {ex.weights.filename: spec for spec, ex in chosen}
    rows, notes, ok, covered = [], [], True, set()
    for case in CASES:
        ex = extractors.create(case.extractor)
        if ex.weights.filename not in asked:
            continue
        covered.add(ex.weights.filename)
        row = [case.extractor, case.name, _values(case.expected)]
        tolerance = f"{case.tolerance:g}"
        if ex.weights.filename not in verified:
            present = any(p.is_file() for p in candidates(ex.weights, policy.directory))
            rows.append([*row, "", "", tolerance, f"skipped: weights {'did not verify' if present else 'absent'}"])
            continue
        path = case.input.find(directories)
        if path is None:
            rows.append([*row, "", "", tolerance, "skipped: reference input missing"])
            notes.append(f"{case.extractor}: {case.input.missing(directories)}")
            continue
        try:
            ex.setup(device, policy)
            result = run_case(case, ex, path)
        except FeatbankError as exc:  # an unreadable input, an unusable device
            ok = False
            rows.append([*row, "", "", tolerance, "FAIL"])
            notes.append(f"{case.extractor}: {exc}")
            continue
        ok = ok and result.passed
        rows.append([*row, _values(result.measured), f"{result.diff:.5f}", tolerance,
                     "PASS" if result.passed else "FAIL"])
        notes.append(f"{case.extractor}: {result.note}; expected: {case.provenance}")
    without = sorted(spec for filename, spec in asked.items() if filename not in covered)
    if without:
        notes.append(f"no published reference example for: {', '.join(without)}")
    table = [tabulate(rows, headers=["extractor", "case", "expected", "measured", "|diff|", "tolerance", "verdict"],
                      disable_numparse=True)]  # keep the 5 decimals: 0.00000 is a measured difference, not "0"
    return "\n".join(["reference checks (the authors' published examples):", *(table if rows else []), *notes]), ok


def belongs(source: Path, spec: WeightsSpec) -> bool:
    """Whether ``source`` looks like ``spec``'s checkpoint: the same file name, or a folder holding
    a snapshot's key file."""
    name = Path(spec.filename).name
    if source.is_dir():
        return spec.snapshot and (source / name).is_file()
    return source.name == name


def import_checkpoint(source: Path, specs: list[str] | None, directory: Path | None) -> str:
    """Copy ``source`` into the weights directory as the file an extractor expects, and pin it, once
    a strict load has shown it is that extractor's model.

    Without ``--extractor`` a file is matched by name against every declared checkpoint, and a
    folder against the snapshot checkpoints whose key file it holds.
    """
    if directory is None:
        raise FeatbankError("importing needs a weights directory: --weights-dir or $FEATBANK_WEIGHTS")
    chosen, _ = weighted_extractors(specs)
    matches = chosen if specs else [(s, e) for s, e in chosen if belongs(source, e.weights)]
    if len(matches) != 1:
        known = ", ".join(f"{s} ({e.weights.filename})" for s, e in chosen)
        raise FeatbankError(f"cannot tell which extractor {source.name} belongs to; name it with "
                            f"--extractor (known: {known})")
    spec, ex = matches[0]
    done = import_weights(source, ex.weights, directory, verify=ex.verify_checkpoint)
    return f"imported {source} as {done.path} for {spec}: sha256 {done.sha256} ({done.pinned_by})"
