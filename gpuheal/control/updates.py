"""Sending a person's action to a workflow as an Update, with one meaning for every failure.

The workflow's validator refuses an action it cannot take before anything is recorded, and the
caller gets the reason at once (ActionRefused). An Update is answered only by a worker: without one
running, the call gives up after `wait` (ActionUnanswered), and the action may still be taken once
one runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.workflow import UpdateMethodMultiParam

from gpuheal.domain.operator import ActionRefused

ArgumentT = TypeVar("ArgumentT")
ResultT = TypeVar("ResultT")

# How long a person's action waits for a worker to answer.
ACTION_WAIT = timedelta(seconds=30)


class ActionUnanswered(RuntimeError):
    """No worker answered the action in time; it may still be taken once one runs."""


async def send(
    handle: WorkflowHandle[Any, Any],
    update: UpdateMethodMultiParam[[Any, ArgumentT], ResultT],
    argument: ArgumentT,
    *,
    target: str,
    wait: timedelta = ACTION_WAIT,
) -> ResultT:
    """Run `update` on the workflow behind `handle` (named `target` in errors) and return its answer."""
    try:
        return await handle.execute_update(update, argument, rpc_timeout=wait)
    except WorkflowUpdateFailedError as error:
        raise ActionRefused(f"{target} refused it: {_reason(error)}") from error
    except WorkflowUpdateRPCTimeoutOrCancelledError as error:
        raise ActionUnanswered(
            f"no gpuheal worker answered for {target} within {wait.total_seconds():g}s; is a worker running? "
            "(it may still be taken once one runs)"
        ) from error


def _reason(error: WorkflowUpdateFailedError) -> str:
    """The validator's message, first line only (a traceback stays in the worker's log)."""
    cause = error.cause
    text = (cause.message if isinstance(cause, ApplicationError) else str(cause)).strip()
    return text.splitlines()[0] if text else "no reason given"
