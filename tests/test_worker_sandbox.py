"""The worker runs the workflows in Temporal's sandbox, whose checks catch workflow code that reads
the clock (or the disk, or the network) instead of asking the workflow: the safety net of every
replay. Loading the workflow modules once for all runs, which a storm's profile asked for, would
take the net away: the sandbox checks only the modules it loads itself."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.api.enums.v1 import EventType

# The sandbox may load this module too: what a workflow may not import stays out of its way.
with workflow.unsafe.imports_passed_through():
    from gpuheal.worker import WorkerSettings, remediations_worker

if TYPE_CHECKING:
    from gpuheal_sim.demo.devserver import DevServer


@workflow.defn(name="WallClockReader")
class WallClockReader:
    @workflow.run
    async def run(self) -> str:
        return str(datetime.datetime.now())  # what a workflow must never do: workflow.now() is the clock


async def test_a_workflow_reading_the_wall_clock_fails_its_task(dev_server: DevServer) -> None:
    task_queue = f"sandbox-{uuid.uuid4()}"
    client = dev_server.client
    async with remediations_worker(client, WorkerSettings(task_queue=task_queue), [WallClockReader], []):
        handle = await client.start_workflow(WallClockReader.run, id=task_queue, task_queue=task_queue)
        for _ in range(300):
            failures = [
                event.workflow_task_failed_event_attributes.failure.message
                async for event in handle.fetch_history_events()
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            ]
            if failures:
                break
            await asyncio.sleep(0.1)
        await handle.terminate("test done")
    assert failures, "the workflow task that read the wall clock did not fail"
    assert "datetime.datetime.now" in failures[0]
