"""The static registries agree with the code they name, and naming things stays cheap.

Extractor and learner names live in static tables so that the command line can list them without
importing torch. A table that drifts from the modules would either hide an extractor or fail late,
so these tests tie them together: every ``@register`` in extractors/ has its table entry, every
entry registers what it claims, and every learner survives a save/load round trip with exactly
the types its entry declares.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import extractors
import regressors
from regressors import persist

EXTRACTORS_DIR = Path(extractors.__file__).parent


def _registered_names(source: Path) -> set[str]:
    """Names of the ``@register``-decorated classes a module defines, read from its source."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list):
            names |= {stmt.value.value for stmt in node.body
                      if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                      and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)}
    return names


def test_every_registered_extractor_is_in_the_static_table():
    found = {name: f"extractors.{path.stem}" for path in EXTRACTORS_DIR.glob("*.py")
             for name in _registered_names(path)}
    assert found, "no @register found: the source scan is broken"
    assert found == extractors.MODULES


@pytest.mark.parametrize("name", sorted(extractors.MODULES))
def test_each_table_entry_imports_and_registers_its_name(name):
    cls = extractors.REGISTRY[name]
    assert cls.name == name and cls.__module__ == extractors.MODULES[name]


def test_listing_extractors_needs_no_extractor_module():
    code = ("import sys, extractors; names = extractors.available(); "
            "assert 'handcrafted' in extractors.REGISTRY; "
            "print(sorted(m for m in sys.modules if m.startswith('extractors.') or m == 'torch'), names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] ") and "'timm'" in out


@pytest.mark.parametrize("name", regressors.LEARNERS)
def test_each_learner_round_trips_with_only_its_declared_types(name, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = X @ rng.normal(size=5) + rng.normal(scale=0.1, size=40)
    model = regressors.make_learner(name, random_state=0).fit(X, y)
    # Trust only what this learner's entry declares: a missing declaration fails here, not after a CV run.
    monkeypatch.setattr(persist, "TRUSTED_TYPES", persist.trusted_types([name]))
    path = tmp_path / f"{name}.skops"
    persist.save_learner(model, path)
    np.testing.assert_array_equal(persist.load_learner(path).predict(X), model.predict(X))


def test_version_imports_neither_torch_nor_sklearn():
    code = ("import sys; from featbank.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'zarr', 'pandas', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out
