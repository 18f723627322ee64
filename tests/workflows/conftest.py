"""A fresh in-memory node per test and a worker on its own task queue serving its activities."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from gpuheal.workflows.remediation import RemediationWorkflow
from tests.held import end_held_remediations
from tests.workflows.fake_activities import FakeNode


@pytest.fixture
async def queue(time_skipping_env: WorkflowEnvironment, node: FakeNode) -> AsyncIterator[str]:
    task_queue = f"logic-{uuid.uuid4()}"
    async with Worker(
        time_skipping_env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=node.activities()
    ):
        yield task_queue
    await end_held_remediations(time_skipping_env.client, [node.name])


@pytest.fixture
def node() -> FakeNode:
    return FakeNode(name=f"gpu-node-{uuid.uuid4().hex[:8]}")
