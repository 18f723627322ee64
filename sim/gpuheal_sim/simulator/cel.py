"""CEL expressions, evaluated by a real CEL implementation (cel-python's ``celpy``).

Admission policies are written in CEL; this module compiles an expression once and evaluates it
against an activation of JSON-shaped values, turning every failure into ``CelError`` with a short
message. Values that failed to compute can be put into an activation as ``error_value``: CEL then
treats them as errors only where an expression really uses them (``true || err`` is ``true``), which
is how Kubernetes' lazily evaluated ``variables`` behave.
"""

from __future__ import annotations

from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

_ENV = celpy.Environment()


class CelError(Exception):
    """A CEL expression failed to compile or to evaluate."""


def _short(error: BaseException) -> str:
    first = error.args[0] if error.args else error
    text = str(first)
    return text if len(text) <= 300 else text[:300] + "…"


class Expression:
    """One compiled CEL expression."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _ENV.program(_ENV.compile(source))
        except CELParseError as error:
            raise CelError(f"compilation failed: {_short(error)}") from None

    def evaluate(self, activation: dict[str, Any]) -> Any:
        """The expression's value (CEL types: ``BoolType``, ``StringType``, ``MapType`` …)."""
        try:
            return self._program.evaluate(activation)
        except CELEvalError as error:
            raise CelError(_short(error)) from None
        except Exception as error:  # celpy reports some type errors as plain Python exceptions
            raise CelError(f"{type(error).__name__}: {_short(error)}") from None


def to_cel(value: Any) -> Any:
    """A JSON-shaped value as CEL sees it (maps, lists, strings, ints, doubles, bools, null)."""
    return json_to_cel(value)


def error_value(message: str) -> CELEvalError:
    """A value that is an error wherever an expression uses it."""
    return CELEvalError(message)


def cel_map(values: dict[str, Any]) -> celtypes.MapType:
    """A CEL map with string keys, from already-converted CEL values."""
    return celtypes.MapType({celtypes.StringType(k): v for k, v in values.items()})


def is_true(value: Any) -> bool:
    """Exactly CEL ``true`` (a non-boolean result is not ``true``)."""
    return isinstance(value, celtypes.BoolType) and bool(value)
