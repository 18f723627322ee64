"""A namespace may set a lower payload limit than Temporal's default: a fault refused for its size
is sent again with a shorter message, never dropped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gpuheal.agents.publisher import TemporalRemediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import MAX_MESSAGE_BYTES, Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.workflows import search_attributes as attrs
from gpuheal_sim.demo.devserver import temporal_binary

# Well under a full-length fault (16 KiB of message), well over a short one.
NAMESPACE_LIMIT = 8 * 1024


@pytest.fixture
async def strict_temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server whose namespace refuses payloads over NAMESPACE_LIMIT bytes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        search_attributes=attrs.ALL,
        dev_server_startup_timeout=timedelta(seconds=60),
        # The server enforces the error limit only on payloads over the warning limit too.
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.blobSize.error={NAMESPACE_LIMIT}",
            "--dynamic-config-value",
            "limit.blobSize.warn=1024",
        ],
    )
    yield env
    await env.shutdown()


async def test_a_fault_too_large_for_the_namespace_is_sent_again_shorter(strict_temporal: WorkflowEnvironment) -> None:
    node = f"strict-{uuid.uuid4().hex[:8]}"
    fault = Fault(
        node=node, action=RecommendedAction.RESTART_BM, xid=79, message="x" * MAX_MESSAGE_BYTES, event_id="e1"
    )
    remediations = TemporalRemediations(strict_temporal.client, task_queue=f"strict-{uuid.uuid4()}")

    await remediations.report(fault)

    handle = strict_temporal.client.get_workflow_handle(workflow_id_for(node))
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    signalled = [
        event.workflow_execution_signaled_event_attributes.input.payloads
        for event in (await handle.fetch_history()).events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    (received,) = [await strict_temporal.client.data_converter.decode(payloads, [Fault]) for payloads in signalled]
    assert received[0].event_id == "e1"
    assert received[0].message.startswith("x" * 512)
    assert len(received[0].message.encode()) <= 1024
    await handle.terminate("test over")
