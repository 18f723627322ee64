"""The baseline: bare Temporal workflows running no-op activities, local or not, as a remediation ran its steps.

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
    async def run(self, local: list[bool]) -> None:
        """One no-op per step, in order: a local activity where `local` says so, else an activity."""
        for is_local in local:
            if is_local:
                await workflow.execute_local_activity(noop, start_to_close_timeout=timedelta(seconds=30))
            else:
                await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))
