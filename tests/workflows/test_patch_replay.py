"""A remediation whose workflow task a query split right after a node read still replays.

A query that reaches the worker with a workflow task is answered while the task's local activities
run. When a node read finishes while the query is answered, the task is completed with the read's
marker, and the workflow's next commands (entering Verifying, the GPU-health patch decision) go
into the next task. Replay takes the read's result from the earlier task; a patch decision taken
there, before the later task's patch marker is announced, reads "not patched" and the run can no
longer be replayed ([TMPRL1100] "Non-deprecated patch marker encountered"). Under load that is how
the demo's `status` query failed.

This runs on the real dev server, which attaches a query to a workflow task that is waiting for a
worker. The worker is stopped while the reboot runs, the query is sent once the reboot's result has
scheduled the next task, and a worker whose query handling waits for the node read (as a worker
on a loaded machine is slow to answer) picks the task up with the query.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    HandleQueryInput,
    Interceptor,
    Replayer,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.domain.steps import NodeRef, NodeState, RebootRequest, RebootResult, Step
from gpuheal.workflows.remediation import RemediationWorkflow
from gpuheal_sim.demo.devserver import DevServer
from tests.workflows.fake_activities import FakeNode

# How long a query's answer waits after the node read returned, so that the worker holds the read's
# result when the query is answered (well under the SDK's two-second deadlock detection).
_QUERY_LAG = 0.3

Handle = WorkflowHandle[RemediationWorkflow, RemediationStatus]


class _ReadAfterReboot:
    """Set once a node read after the reboot has returned to the worker."""

    def __init__(self) -> None:
        self.returned = threading.Event()


def _slow_queries(read: _ReadAfterReboot) -> Interceptor:
    """Query handling that waits for the node read, as a loaded worker answers late."""

    class Inbound(WorkflowInboundInterceptor):
        async def handle_query(self, input: HandleQueryInput) -> Any:
            # Blocking is the point: the workflow's thread is busy while the read's result arrives.
            read.returned.wait(timeout=1)
            threading.Event().wait(_QUERY_LAG)
            return await super().handle_query(input)

    class SlowQueries(Interceptor):
        def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
            return Inbound

    return SlowQueries()


async def _events(handle: Handle) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


async def _wait_for_event(handle: Handle, event_type: EventType.ValueType, after: int) -> None:
    """Until the history has an event of this type after event id `after`."""
    while not any(e.event_type == event_type and e.event_id > after for e in await _events(handle)):
        await asyncio.sleep(0.05)


def _split_after_read(events: list[HistoryEvent]) -> bool:
    """Whether a workflow task ended between the last node read's marker and entering Verifying."""
    verifying = next(i for i, e in enumerate(events) if b"Verifying" in e.SerializeToString())
    marker = max(
        i
        for i, e in enumerate(events[:verifying])
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events[marker:verifying])


async def test_a_query_answered_while_a_node_read_returns_leaves_a_replayable_history(
    dev_server: DevServer,
) -> None:
    client: Client = dev_server.client
    node = FakeNode(name=f"gpu-node-{uuid.uuid4().hex[:8]}")
    activities = node.activities()
    by_name = {a.__name__: a for a in activities}
    read = _ReadAfterReboot()
    rebooting = asyncio.Event()
    reboot_may_finish = asyncio.Event()

    @activity.defn(name=Step.OBSERVE.value)
    async def observe(request: NodeRef) -> NodeState:
        state: NodeState = await by_name["observe"](request)
        if node.reboots:
            read.returned.set()
        return state

    @activity.defn(name=Step.REBOOT.value)
    async def reboot(request: RebootRequest) -> RebootResult:
        rebooting.set()
        await reboot_may_finish.wait()
        result: RebootResult = await by_name["reboot"](request)
        return result

    activities = [a for a in activities if a not in (by_name["observe"], by_name["reboot"])]
    activities += [observe, reboot]
    queue = f"patch-replay-{uuid.uuid4()}"
    fault = Fault(node=node.name, action=RecommendedAction.RESTART_VM, xid=79, event_id=node.name)

    # Activities on a worker of their own, so the workflow worker can stop while the reboot runs.
    async with Worker(client, task_queue=queue, activities=activities):
        async with Worker(
            client, task_queue=queue, workflows=[RemediationWorkflow], activities=activities, no_remote_activities=True
        ):
            handle = await remediations.report_fault(client, fault, RemediationPolicy(), task_queue=queue)
            await rebooting.wait()
        started = len(await _events(handle))
        reboot_may_finish.set()
        await _wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, after=started)
        query = asyncio.create_task(handle.query(RemediationWorkflow.status))
        await asyncio.sleep(1)  # the server holds the query for the task no worker has taken yet
        async with Worker(
            client,
            task_queue=queue,
            workflows=[RemediationWorkflow],
            activities=activities,
            no_remote_activities=True,
            interceptors=[_slow_queries(read)],
        ):
            answered = await query
            status = await handle.result()
        events = await _events(handle)

    assert answered.phase is Phase.WAITING_FOR_NODE
    assert status.phase is Phase.RESOLVED, status.reason
    assert _split_after_read(events), "the query did not split the task after the node read: the race was not set up"
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None, str(result.replay_failure)
