"""`python -m bench.baseline_worker --address HOST:PORT --task-queue Q`: the baseline's worker process.

It lives apart from the workflow it runs: Temporal's sandbox re-imports a workflow's module, which
must not be the `__main__` script.
"""

from __future__ import annotations

import argparse
import asyncio

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import BareWorkflow, noop
from gpuheal.worker import WorkerSettings


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
        max_concurrent_local_activities=limits.max_concurrent_workflow_tasks,
        nonsticky_to_sticky_poll_ratio=0.5,
    ):
        print("worker polling", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.address, options.task_queue))
