"""Save and load fitted learners without unpickling arbitrary objects.

A fitted model is often shared as a file, and unpickling a file runs whatever code it names. The
skops format instead stores a JSON schema plus numpy arrays and only instantiates types the
loader trusts. skops on its own trusts every scikit-learn class; here the trust is narrowed to an
explicit allowlist: the types that :func:`regressors.make_learner` pipelines actually contain,
as declared per learner in :data:`regressors.LEARNER_TABLE`.
Every type a file references is read from its schema and checked before anything is built.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

from featbank.errors import FeatbankError
from regressors import LEARNER_TABLE, LEARNERS, PIPELINE_TYPES, resolve

_STRUCTURAL_CLASSES: tuple[type, ...] = (
    dict, list, tuple, str, int, float, bool, type(None), OrderedDict, defaultdict,
    np.ndarray, np.dtype, np.float64, np.float32, np.int64, np.int32, np.bool_,
)  # fmt: skip
"""Containers and scalars that skops encodes structurally, in any learner file."""


def trusted_types(learners: Iterable[str] = LEARNERS) -> frozenset[str]:
    """Fully qualified names of the only types a file of one of ``learners`` may reference.

    Taken from :data:`regressors.LEARNER_TABLE`, the same table :func:`regressors.make_learner`
    builds from, and derived from the classes themselves (imported here) so that a library moving a
    class between private modules does not silently change what is trusted.
    """
    paths = {*PIPELINE_TYPES, *(path for name in learners
                                   for path in (*LEARNER_TABLE[name].types, *LEARNER_TABLE[name].legacy_types))}
    classes = [*_STRUCTURAL_CLASSES, *(resolve(path) for path in sorted(paths))]
    return frozenset(f"{c.__module__}.{c.__qualname__}" for c in classes)


TRUSTED_TYPES: frozenset[str] = trusted_types()
"""What :func:`load_learner` accepts: the union over every registered learner."""


def _referenced_types(data: bytes, source: str) -> set[str]:
    """Every ``module.Class`` named anywhere in a skops file's schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise FeatbankError(f"{source} is not a skops learner file ({error})") from error
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _check_trusted(data: bytes, source: str) -> None:
    referenced = _referenced_types(data, source)
    # load_learner hands skops its own untrusted list as ``trusted``, so that list must pass the
    # allowlist too: it also names what the schema walk does not see as a class, e.g. the method
    # in a bound-method reference (``module.Class.method``), which no learner file contains.
    try:
        referenced |= set(sio.get_untrusted_types(data=data))
    except (KeyError, TypeError, ValueError) as error:
        raise FeatbankError(f"{source} is not a readable skops learner file ({error})") from error
    untrusted = referenced - TRUSTED_TYPES
    if untrusted:
        raise FeatbankError(
            f"{source} references types outside the learner allowlist: {', '.join(sorted(untrusted))}"
        )


def save_learner(estimator: Any, path: str | Path) -> None:
    """Write a fitted learner as a skops file.

    Refuses (FeatbankError) estimators containing types :func:`load_learner` would reject, so an
    unloadable file is never written.
    """
    data = sio.dumps(estimator)
    _check_trusted(data, f"learner {type(estimator).__name__}")
    Path(path).write_bytes(data)


def load_learner(path: str | Path) -> Any:
    """Load a learner written by :func:`save_learner`; FeatbankError for any type not allowlisted."""
    path = Path(path)
    data = path.read_bytes()
    _check_trusted(data, str(path))
    # Every type skops would refuse has just been checked against the allowlist.
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
