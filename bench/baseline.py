"""The baseline: bare Temporal workflows running the same number of no-op activities.

bench/baseline_worker.py runs them in a process with the same concurrency limits as gpuheal's
worker, so the storm can be set beside it on the same server.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop() -> None:
    """Does nothing: what is left is Temporal's own cost of an activity."""


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))
