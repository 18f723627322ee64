"""The baselines: bare Temporal workflows doing what a remediation does with nothing of gpuheal's in it.

`BareWorkflow` runs no-op activities, local or not, as a remediation ran its steps; `BareSignalled`
is started as a remediation is (signal-with-start) and, on its signal, runs one no-op local activity
in its first workflow task, as a remediation quarantines its node there. bench/baseline_worker.py
runs them in a process with the same worker options as gpuheal's worker, so the storm can be set
beside them.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

_NOOP_TIMEOUT = timedelta(seconds=30)


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
                await workflow.execute_local_activity(noop, start_to_close_timeout=_NOOP_TIMEOUT)
            else:
                await workflow.execute_activity(noop, start_to_close_timeout=_NOOP_TIMEOUT)


@workflow.defn(name="BareSignalled")
class BareSignalled:
    def __init__(self) -> None:
        self._signalled = False

    @workflow.signal(name="go")
    def go(self) -> None:
        self._signalled = True

    @workflow.run
    async def run(self) -> None:
        """Once signalled (with the start), one no-op local activity, the quarantine's stand-in."""
        await workflow.wait_condition(lambda: self._signalled)
        await workflow.execute_local_activity(noop, start_to_close_timeout=_NOOP_TIMEOUT)
