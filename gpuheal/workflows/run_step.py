"""Running one step as its contract says (gpuheal.domain.contracts), for every workflow of gpuheal."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, FailureError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from gpuheal.domain.contracts import Retry, StepContract
    from gpuheal.domain.policy import StepTimeouts

RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)


async def run_step(
    step: StepContract[RequestT, ResultT],
    request: RequestT,
    timeouts: StepTimeouts,
    *,
    summary: str,
    outlives_cancel: bool = False,
) -> ResultT:
    """Run `step` (local or not) with its timeouts and retries; an operator's cancel that reaches a
    running step as its failure is raised as the run's cancellation. With `outlives_cancel` (a
    regular step that acts on the node), the run's cancel is raised only once the step's activity has
    ended: it is asked to stop, and the run waits for it (`_to_its_end`)."""
    retry = _retry_policy(step.retry(timeouts))
    try:
        if step.local:
            local: ResultT = await workflow.execute_local_activity(
                step.name.value,
                request,
                result_type=step.result,
                start_to_close_timeout=step.timeout(timeouts, request),
                retry_policy=retry,
                summary=summary,
            )
            return local
        started: ActivityHandle[ResultT] = workflow.start_activity(
            step.name.value,
            request,
            result_type=step.result,
            start_to_close_timeout=step.timeout(timeouts, request),
            heartbeat_timeout=step.heartbeat(timeouts) if step.heartbeat is not None else None,
            retry_policy=retry,
            cancellation_type=(
                ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                if outlives_cancel
                else ActivityCancellationType.TRY_CANCEL
            ),
            summary=summary,
        )
        return await (_to_its_end(started) if outlives_cancel else started)
    except ActivityError as error:
        if isinstance(error.cause, CancelledError):
            raise asyncio.CancelledError() from error
        raise
    except FailureError as failure:
        if not step.local:
            raise
        # A local activity's failure arrives unwrapped (an ApplicationError that failed the whole run
        # where the workflow expects a step's): wrap it as a regular activity's is.
        if isinstance(failure, CancelledError):
            raise asyncio.CancelledError() from failure
        wrapped = ActivityError(
            f"{step.name.value} failed",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=step.name.value,
            activity_id="",
            retry_state=None,
        )
        raise wrapped from failure


async def _to_its_end(started: ActivityHandle[ResultT]) -> ResultT:
    """The step's result; on the run's cancel, the step is asked to stop and the cancel goes on only
    once its activity has ended (the SDK alone would hand back the result of a step that finished
    despite the cancel, and the run would go on as if never cancelled)."""
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        started.cancel()
        while not started.done():
            try:
                await workflow.wait([started])
            except asyncio.CancelledError:
                continue  # the run is cancelled already: the step is what it waits for
        if not started.cancelled():
            started.exception()  # its result or failure is not used: the run ends as cancelled
        raise


def _retry_policy(retry: Retry) -> RetryPolicy:
    return RetryPolicy(initial_interval=retry.initial, maximum_interval=retry.maximum, maximum_attempts=retry.attempts)
