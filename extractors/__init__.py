"""Extractor registry: ``create("handcrafted")`` builds a registered extractor by name.

A spec may carry one argument after a colon (``"timm:convnext_tiny"``), passed to the constructor.
"""

from __future__ import annotations

from extractors.base import Extractor
from featbank.errors import FeatbankError

REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(REGISTRY)


def create(spec: str) -> Extractor:
    name, _, arg = spec.strip().partition(":")
    if name not in REGISTRY:
        raise FeatbankError(f"unknown extractor {name!r}; available: {', '.join(available())}")
    cls = REGISTRY[name]
    return cls(arg) if arg else cls()


# Importing the modules registers their extractors.
from extractors import audio, clip, fastvqa, handcrafted, liqe, qalign, slowfast, timm_backbone  # noqa: E402,F401
