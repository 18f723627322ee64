"""The baseline: bare Temporal workflows running the same number of no-op activities.

`python -m bench.baseline --address HOST:PORT --task-queue Q` runs its worker as a process, with the
same concurrency limits as gpuheal's worker, so the storm can be set beside it on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from gpuheal.worker import WorkerSettings


@activity.defn(name="noop")
async def noop() -> None:
    """Does nothing: what is left is Temporal's own cost of an activity."""


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    limits = WorkerSettings()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow],
        activities=[noop],
        max_concurrent_activities=limits.max_concurrent_activities,
        max_concurrent_workflow_tasks=limits.max_concurrent_workflow_tasks,
    ):
        print("worker polling", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.address, options.task_queue))
