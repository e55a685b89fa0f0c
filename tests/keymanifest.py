"""Key/shape manifests: the parameter names and shapes an official checkpoint has.

Each ``tests/keymanifests/<name>.json`` holds ``{"model": ..., "derived_from": ..., "how": ...,
"params": {name: shape}}``. ``derived_from``/``how`` say where the list comes from: the official
checkpoint's own key list when one was available, otherwise the official model definition built
with random weights (at the version named), never featbank's own code. A test compares featbank's
architecture with it and then loads a checkpoint of that structure with ``strict=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from extractors.deep import parameter_shapes

MANIFESTS = Path(__file__).parent / "keymanifests"


def load_manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def shape_differences(module: torch.nn.Module, name: str) -> list[str]:
    """Human-readable differences between ``module``'s state dict and the manifest (empty = same)."""
    expected = load_manifest(name)["params"]
    actual = parameter_shapes(module)
    out = [f"missing {k}" for k in sorted(set(expected) - set(actual))]
    out += [f"unexpected {k}" for k in sorted(set(actual) - set(expected))]
    out += [f"{k}: {actual[k]} vs {expected[k]}" for k in sorted(set(actual) & set(expected))
            if actual[k] != expected[k]]
    return out


def checkpoint_like(name: str, fill: float = 0.01) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's names and shapes (constant values), as a checkpoint would be."""
    return {k: torch.full(shape, fill) for k, shape in load_manifest(name)["params"].items()}


def write_manifest(name: str, module: torch.nn.Module, model: str, derived_from: str, how: str) -> Path:
    """Used once, when a manifest is derived (see each manifest's ``how``)."""
    path = MANIFESTS / f"{name}.json"
    path.write_text(json.dumps({"model": model, "derived_from": derived_from, "how": how,
                                "params": parameter_shapes(module)}, indent=1) + "\n")
    return path
