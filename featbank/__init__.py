"""featbank: decode each video once, bank frozen features in Zarr, stack regressors on top.

The Python API (:mod:`featbank.api`: ``open_bank``, ``feature_frame``, ``step_array``, ``fit``,
``evaluate``) is importable from here, loaded on first use so ``import featbank`` (and the CLI's
start-up) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("FeatureBank", "GroupInfo", "evaluate", "feature_frame", "fit", "open_bank", "readable_names",
        "step_array")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("featbank.api"), name)
    raise AttributeError(f"module 'featbank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
