"""Learner specs: a learner name with optional parameters, ``mlp(hidden=(128,), loss="l1+plcc+srcc")``.

The seeds' systems differ from featbank's defaults in a head's size and loss (FIEE: a 2-layer MLP
with 128 hidden units trained on L1 + PLCC + SRCC), so a learner is named by a spec wherever a
learner name is accepted (``--learners``, recipes, the Python API). Parameters are Python literals
set with scikit-learn's ``set_params`` on the learner's model step, so every constructor
parameter of the model is reachable (nested ones with ``__``, as in scikit-learn) and an unknown
one is refused before any fit. Parsing uses :mod:`ast` only: nothing is evaluated.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from featbank.errors import UsageError


@dataclass(frozen=True)
class LearnerSpec:
    """A parsed learner spec: the registered name and the parameters to set, in the order given."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.params)})"


def parse_learner(spec: str) -> LearnerSpec:
    """``"name"`` or ``"name(key=literal, ...)"`` as a :class:`LearnerSpec` (UsageError when malformed).

    The name must be registered in :data:`regressors.LEARNER_TABLE`; ``/`` is refused because
    base-model names are ``block/learner``.
    """
    from regressors import LEARNER_TABLE, LEARNERS

    text = spec.strip()
    if "/" in text:
        raise UsageError(f"learner spec {spec!r} must not contain '/' (base models are named block/learner)")
    try:
        node = ast.parse(text if "(" in text else f"{text}()", mode="eval").body
    except SyntaxError as exc:
        raise UsageError(f"learner spec {spec!r} is not NAME or NAME(key=value, ...): {exc.msg}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        raise UsageError(f"learner spec {spec!r} must be NAME or NAME(key=value, ...) with keyword values only")
    name = node.func.id
    if name not in LEARNER_TABLE:
        raise UsageError(f"unknown learner {name!r}; valid learners: {', '.join(LEARNERS)}")
    params = []
    for keyword in node.keywords:
        if keyword.arg is None:
            raise UsageError(f"learner spec {spec!r}: '**' is not allowed")
        try:
            value = ast.literal_eval(keyword.value)
        except ValueError:
            raise UsageError(f"learner spec {spec!r}: the value of {keyword.arg} must be a literal "
                             f"(number, string, tuple, list, True/False/None)") from None
        params.append((keyword.arg, value))
    return LearnerSpec(name, tuple(params))


def split_learners(text: str) -> list[str]:
    """Comma-separated learner specs, splitting only at commas outside parentheses and brackets."""
    specs, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            specs.append(text[start:i])
            start = i + 1
    specs.append(text[start:])
    return [s.strip() for s in specs if s.strip()]


def on_device(spec: str, device: str) -> str:
    """``spec`` training on ``device`` when its model is a torch head and the spec does not choose one.

    What ``featbank fit --device cuda`` does to every learner: the torch heads (``mlp``, ``temporal``)
    train on the GPU, the others are unchanged. The device shows in the base model's name.
    """
    parsed = parse_learner(spec)
    if device == "cpu" or any(key == "device" for key, _ in parsed.params):
        return spec
    from regressors import LEARNER_TABLE, resolve

    if "device" not in resolve(LEARNER_TABLE[parsed.name].factory)(0).get_params():
        return spec
    return str(LearnerSpec(parsed.name, (*parsed.params, ("device", device))))
