"""gpuheal's metrics as the worker's side effects record them.

Activities count through `activity.metric_meter()` (the worker's runtime, with the SDK's own labels);
`VisibilityGauges` counts the running remediations in Temporal's visibility store, and asks each fleet
governor for its permits and breaker, on a timer, through the runtime's meter. The worker's exporter (gpuheal.worker.process_runtime) adds `_total` to counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import MetricMeter
from temporalio.service import RPCError

from gpuheal.domain.fleet import GOVERNOR, GovernorStatus
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation_contract import PHASE_ATTRIBUTE, PHASE_SINCE_ATTRIBUTE, REMEDIATION
from gpuheal.workflows.governor import GovernorWorkflow

log = logging.getLogger(__name__)

EVICTIONS = "gpuheal_evictions"
REBOOTS = "gpuheal_reboots"
RUNNING = "gpuheal_remediations_running"
STUCK = "gpuheal_remediations_stuck"
APPROVALS_WAITING = "gpuheal_approvals_waiting"
PERMITS_HELD = "gpuheal_fleet_permits_held"
PERMITS_WAITING = "gpuheal_fleet_permits_waiting"
BREAKER_OPEN = "gpuheal_fleet_breaker_open"

# The governors, whatever their task queue (a cluster sharing the namespace runs one of its own).
GOVERNORS_QUERY = f"WorkflowType = '{GOVERNOR.name}' AND ExecutionStatus = 'Running'"
# A governor no worker answers for must not hold up the other figures for long.
GOVERNOR_QUERY_TIMEOUT = timedelta(seconds=10)

# What a running remediation can be in: every phase but those it ends in.
OPEN_PHASES = tuple(phase for phase in Phase if not phase.is_final)


def count_evictions(**pods: int) -> None:
    """Count a drain pass's pods by what became of them (evicted, deleted, blocked by a budget, failed)."""
    counter = activity.metric_meter().create_counter(EVICTIONS, "Pods a drain moved or tried to, by result.")
    for result, count in pods.items():
        if count:
            counter.add(count, {"result": result})


def count_reboot(provider: str, result: str) -> None:
    """Count a reboot asked of `provider`: requested (the provider took it) or failed."""
    activity.metric_meter().create_counter(REBOOTS, "Reboots asked of providers, by result.").add(
        1, {"provider": provider, "result": result}
    )


def running_query(phase: Phase) -> str:
    """The visibility query for the remediations running in `phase`."""
    return (
        f"WorkflowType = '{REMEDIATION.name}' AND ExecutionStatus = 'Running' AND {PHASE_ATTRIBUTE} = '{phase.value}'"
    )


def stuck_query(phase: Phase, entered_before: datetime) -> str:
    """… and for those of them that entered it before `entered_before`."""
    since = entered_before.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return f"{running_query(phase)} AND {PHASE_SINCE_ATTRIBUTE} < '{since}'"


class VisibilityGauges:
    """Every `every`, the running remediations per phase, those stuck in it for over `stuck_after`
    (by `GpuhealPhaseSince`), and those waiting for an approval, counted fleet-wide in Temporal's
    visibility store, and the permits and breaker of the `governors` (the worker's own: the one of
    its task queue), by their `status` query: every worker replica reports the same fresh figures,
    wherever the governor runs. A governor not running holds nothing. Only its own governors are
    asked: one of another task queue that no worker serves any more would hold up every pass until
    its query timed out. A count or query that fails is logged and its gauges keep the last figures."""

    def __init__(
        self,
        client: Client,
        meter: MetricMeter,
        *,
        stuck_after: timedelta,
        governors: Sequence[str] = (),
        every: timedelta = timedelta(seconds=30),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._stuck_after = stuck_after
        self._every = every
        self._now = now
        self._running = meter.create_gauge(RUNNING, "Remediations running, by phase.")
        self._stuck = meter.create_gauge(
            STUCK, "Remediations in their phase for longer than the worker's --stuck-after."
        )
        self._approvals = meter.create_gauge(APPROVALS_WAITING, "Remediations waiting for a person's approval.")
        self._held = meter.create_gauge(PERMITS_HELD, "Fleet permits held by remediations.")
        self._waiting = meter.create_gauge(PERMITS_WAITING, "Remediations waiting for a fleet permit.")
        self._breaker = meter.create_gauge(BREAKER_OPEN, "1 while the fleet's circuit breaker is tripped.")
        self._governors = tuple(governors)

    async def run(self) -> None:
        """Count, then again every `every`, until cancelled; a failed count never stops the counting."""
        while True:
            try:
                await self.count()
            except Exception:
                log.exception("counting remediations failed; the gauges keep their last figures")
            await asyncio.sleep(self._every.total_seconds())

    async def count(self) -> None:
        """Count once, one query per figure, then ask the governors."""
        try:
            entered_before: datetime | None = self._now() - self._stuck_after
        except OverflowError:  # a stuck_after reaching back past year 1: none has been in a phase so long
            entered_before = None
        for phase in OPEN_PHASES:
            labels = {"phase": phase.value}
            running = await self._count(running_query(phase))
            if running is not None:
                self._running.set(running, labels)
                if phase is Phase.AWAITING_APPROVAL:
                    self._approvals.set(running)
            stuck = 0 if entered_before is None else await self._count(stuck_query(phase, entered_before))
            if stuck is not None:
                self._stuck.set(stuck, labels)
        await self._ask_governors()

    async def _ask_governors(self) -> None:
        if not self._governors:
            return
        try:
            running = {execution.id async for execution in self._client.list_workflows(GOVERNORS_QUERY)}
        except RPCError as error:
            log.warning("cannot list the fleet governors: %s", error.message)
            return
        asked = [governor_id for governor_id in self._governors if governor_id in running]
        answers = await asyncio.gather(
            *(self._governor_status(governor_id) for governor_id in asked), return_exceptions=True
        )
        for governor_id, status in zip(asked, answers, strict=True):
            if isinstance(status, BaseException):  # an answer that could not be read: the last figures stay
                log.warning("cannot read fleet governor %s's permits and breaker: %r", governor_id, status)
            elif status is not None:
                state = status.state
                self._set_governor(
                    governor_id, len(state.held), len(state.waiting), breaker_open=state.tripped is not None
                )
        for idle in set(self._governors) - running:  # not started yet, or ended: it holds nothing
            self._set_governor(idle, 0, 0, breaker_open=False)

    async def _governor_status(self, governor_id: str) -> GovernorStatus | None:
        handle = self._client.get_workflow_handle_for(GovernorWorkflow.run, governor_id)
        try:
            return await handle.query(GovernorWorkflow.status, rpc_timeout=GOVERNOR_QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError) as error:
            log.warning("cannot ask fleet governor %s for its permits and breaker: %s", governor_id, error)
            return None

    def _set_governor(self, governor_id: str, held: int, waiting: int, *, breaker_open: bool) -> None:
        labels = {"governor": governor_id}
        self._held.set(held, labels)
        self._waiting.set(waiting, labels)
        self._breaker.set(int(breaker_open), labels)

    async def _count(self, query: str) -> int | None:
        try:
            return (await self._client.count_workflows(query)).count
        except RPCError as error:
            log.warning("cannot count remediations (%s): %s", query, error.message)
            return None
