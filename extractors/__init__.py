"""Extractor registry: ``create("handcrafted")`` builds a registered extractor by name.

A spec may carry one argument after a colon (``"timm:convnext_tiny"``), passed to the constructor.

Most extractor modules import torch, open_clip, torchvision or librosa, which takes seconds. So, as
timm's model registry does, the names live in a static table (:data:`MODULES`) and an extractor's
module is imported only when the extractor is built or described: listing names (``available()``,
``name in REGISTRY``, the CLI's help) imports nothing. tests/test_registry.py checks that the table
and the ``@register`` decorators in the modules agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from featbank.errors import FeatbankError, UsageError

if TYPE_CHECKING:
    from extractors.base import Extractor

MODULES: dict[str, str] = {
    "audio": "extractors.audio",
    "clip": "extractors.clip",
    "fastvqa": "extractors.fastvqa",
    "handcrafted": "extractors.handcrafted",
    "liqe": "extractors.liqe",
    "qalign": "extractors.qalign",
    "slowfast": "extractors.slowfast",
    "spectral": "extractors.spectral",
    "templates": "extractors.templates",
    "timm": "extractors.timm_backbone",
}
"""Extractor name -> the module whose import registers it. Add a new extractor here."""


class _Registry(Mapping[str, "type[Extractor]"]):
    """Name -> extractor class, importing a class's module on first lookup.

    Membership and iteration cover both the static table and classes registered at run time
    (tests register their own), without importing anything.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[Extractor]] = {}

    def add(self, cls: type[Extractor]) -> None:
        self._classes[cls.name] = cls

    def __getitem__(self, name: str) -> type[Extractor]:
        if name not in self._classes and name in MODULES:
            importlib.import_module(MODULES[name])
            if name not in self._classes:
                raise FeatbankError(f"{MODULES[name]} did not register the extractor {name!r}")
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._classes) | set(MODULES)))

    def __len__(self) -> int:
        return len(set(self._classes) | set(MODULES))


REGISTRY = _Registry()


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` buildable by its ``name``."""
    REGISTRY.add(cls)
    return cls


def available() -> list[str]:
    """Every extractor name, without importing any extractor module."""
    return list(REGISTRY)


def create(spec: str) -> Extractor:
    name, _, arg = spec.strip().partition(":")
    if name not in REGISTRY:
        raise UsageError(f"unknown extractor {name!r}; available: {', '.join(available())}")
    cls = REGISTRY[name]
    return cls(arg) if arg else cls()
