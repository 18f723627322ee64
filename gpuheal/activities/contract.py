"""How an activity keeps its step's contract (gpuheal.domain.steps): its name, types and typed failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gpuheal.domain.contracts import FailureType, StepContract

RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)
OwnerT = TypeVar("OwnerT")


class implements(Generic[RequestT, ResultT]):
    """Register the decorated function or method as the activity of `step`.

    The activity takes the step's name, and the type checker holds the function to the step's
    request and result types.
    """

    def __init__(self, step: StepContract[RequestT, ResultT]) -> None:
        self._step = step

    @overload
    def __call__(
        self, fn: Callable[[OwnerT, RequestT], Awaitable[ResultT]]
    ) -> Callable[[OwnerT, RequestT], Awaitable[ResultT]]: ...

    @overload
    def __call__(self, fn: Callable[[RequestT], Awaitable[ResultT]]) -> Callable[[RequestT], Awaitable[ResultT]]: ...

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return activity.defn(name=self._step.name.value)(fn)


def node_gone(node: str) -> ApplicationError:
    """The failure of a step whose node was deleted: final, and recognised as such by the workflow."""
    return ApplicationError(f"node {node} no longer exists", non_retryable=True, type=FailureType.NODE_GONE.value)
