"""A workflow and its signals as their callers see them: by name, with their payload types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Input = TypeVar("Input")
Result = TypeVar("Result")
Payload = TypeVar("Payload")


@dataclass(frozen=True, slots=True)
class WorkflowContract(Generic[Input, Result]):
    """A workflow type by name, with what it starts with and what it returns."""

    name: str
    input: type[Input]
    result: type[Result]


@dataclass(frozen=True, slots=True)
class SignalContract(Generic[Payload]):
    """A signal by name, with the one argument it carries."""

    name: str
    payload: type[Payload]

    def args(self, payload: Payload) -> list[Payload]:
        """The signal's arguments, typed: a payload of the wrong type fails mypy at the caller."""
        return [payload]
