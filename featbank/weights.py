"""Pretrained checkpoints, found on local disk only.

featbank never downloads weights: machines that run it often have no route to a model hub, and a
silent download (or a silent fall-back to random weights) would corrupt a feature bank without
anyone noticing. An extractor that needs a checkpoint declares a :class:`WeightsSpec`; at set-up
the file is looked up in the user's weights directory and its SHA-256 is checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from featbank.errors import WeightsMissingError

WEIGHTS_ENV = "FEATBANK_WEIGHTS"


@dataclass(frozen=True)
class WeightsSpec:
    """One checkpoint file: where it comes from, what it must hash to, and under what terms."""

    filename: str
    sha256: str
    source: str
    license: str
    non_commercial: bool = False


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The directory given on the command line, else ``$FEATBANK_WEIGHTS``, else none."""
    chosen = explicit or os.environ.get(WEIGHTS_ENV)
    return Path(chosen).expanduser() if chosen else None


def resolve(spec: WeightsSpec, directory: Path | None) -> Path:
    """Path of a verified checkpoint, or one error that says exactly how to obtain it."""
    howto = (
        f"featbank needs {spec.filename} (sha256 {spec.sha256}, license {spec.license}).\n"
        f"Obtain it from {spec.source} and place it in the weights directory "
        f"(--weights-dir or ${WEIGHTS_ENV})."
    )
    if directory is None:
        raise WeightsMissingError(f"No weights directory is set. {howto}")
    path = directory / spec.filename
    if not path.is_file():
        raise WeightsMissingError(f"{path} does not exist. {howto}")
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise WeightsMissingError(f"{path} has sha256 {actual}, expected {spec.sha256}. {howto}")
    return path
