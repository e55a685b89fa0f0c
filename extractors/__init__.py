"""Extractor registry: ``create("handcrafted")`` builds a registered extractor by name.

A spec may carry one argument after a colon (``"timm:convnext_tiny"``), passed to the constructor.
"""

from __future__ import annotations

from extractors.base import Extractor
from featbank.errors import FeatbankError, NotImplementedYet

REGISTRY: dict[str, type[Extractor]] = {}

PLANNED: dict[str, str] = {
    name: "frozen deep extractors with offline weights (issue #3)"
    for name in ("liqe", "clip")
}
"""Extractors the README announces but this version does not implement: asking for one is a clear
error naming the plan, not an 'unknown extractor' puzzle."""


def register(cls: type[Extractor]) -> type[Extractor]:
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(REGISTRY)


def create(spec: str) -> Extractor:
    name, _, arg = spec.strip().partition(":")
    if name in PLANNED and name not in REGISTRY:
        raise NotImplementedYet(f"extractor {name!r} is not implemented yet: planned with {PLANNED[name]}; "
                                f"available now: {', '.join(available())}")
    if name not in REGISTRY:
        raise FeatbankError(f"unknown extractor {name!r}; available: {', '.join(available())}")
    cls = REGISTRY[name]
    return cls(arg) if arg else cls()


# Importing the modules registers their extractors.
from extractors import audio, fastvqa, handcrafted, qalign, slowfast, timm_backbone  # noqa: E402,F401
