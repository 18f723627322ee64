"""`python -m bench.baseline_worker --address HOST:PORT --task-queue Q`: the baseline's worker process.

It lives apart from the workflow it runs: Temporal's sandbox re-imports a workflow's module, which
must not be the `__main__` script.
"""

from __future__ import annotations

import argparse
import asyncio

from temporalio.client import Client

from bench.baseline import BareSignalled, BareWorkflow, noop
from gpuheal.worker import WorkerSettings, remediations_worker


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    # gpuheal's worker options, so what differs from a storm is the workflows and activities alone.
    async with remediations_worker(
        client, WorkerSettings(task_queue=task_queue), [BareWorkflow, BareSignalled], [noop]
    ):
        print("worker polling", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.address, options.task_queue))
