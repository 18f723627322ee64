"""The worker's visibility gauges: running remediations per phase, those stuck in it, approvals waiting,
and the fleet governors' permits and breakers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from gpuheal.activities.metrics import BREAKER_OPEN, PERMITS_HELD, PERMITS_WAITING, VisibilityGauges
from gpuheal.domain.fleet import BreakerPolicy, FleetBudget, FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.workflows import search_attributes as attrs
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from tests.integration.conftest import eventually
from tests.workflows.test_governor import Governed, fleets, nodes_of
from tests.workflows.test_remediation_logic import Handle, wait_for_phase

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    """A server of this test's own: the counts are fleet-wide, so no other test's runs may be in them."""
    started = await start_dev_server()
    yield started
    await started.shutdown()


async def remediation(server: DevServer, phase: Phase, since: datetime, *, open_: bool = True) -> None:
    """A remediation run in `phase` since `since` (no worker takes it: it stays as started)."""
    handle = await server.client.start_workflow(
        REMEDIATION.name,
        id=f"remediate-{uuid.uuid4()}",
        task_queue="nobody-polls",
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(attrs.PHASE, phase.value), SearchAttributePair(attrs.PHASE_SINCE, since)]
        ),
    )
    if not open_:
        await handle.terminate()


async def test_running_stuck_and_waiting_remediations_are_counted_per_phase(server: DevServer) -> None:
    await remediation(server, Phase.DRAINING, NOW - timedelta(hours=3))
    await remediation(server, Phase.DRAINING, NOW - timedelta(minutes=5))
    await remediation(server, Phase.DRAINING, NOW - timedelta(hours=5), open_=False)
    await remediation(server, Phase.AWAITING_APPROVAL, NOW - timedelta(minutes=90))
    buffer = MetricBuffer(10_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    gauges = VisibilityGauges(server.client, meter, stuck_after=timedelta(hours=1), now=lambda: NOW)

    figures: dict[tuple[str, str], float] = {}

    async def all_four_seen() -> bool:
        # Visibility takes runs in a moment after they start.
        await gauges.count()
        for update in buffer.retrieve_updates():
            figures[update.metric.name, str(update.attributes.get("phase", ""))] = update.value
        return (
            figures["gpuheal_remediations_running", "Draining"] == 2 and figures["gpuheal_approvals_waiting", ""] == 1
        )

    await eventually(all_four_seen, "the runs counted")
    assert figures["gpuheal_remediations_stuck", "Draining"] == 1, "the other one entered Draining 5 minutes ago"
    assert figures["gpuheal_remediations_running", "AwaitingApproval"] == 1
    assert figures["gpuheal_remediations_stuck", "AwaitingApproval"] == 1
    assert figures["gpuheal_remediations_running", "Quarantined"] == 0
    assert figures["gpuheal_remediations_stuck", "Quarantined"] == 0
    assert {phase for name, phase in figures if name == "gpuheal_remediations_running"} == {
        phase.value for phase in Phase if not phase.is_final
    }


async def tripped(fleet: Governed) -> list[Handle]:
    """Trip `fleet`'s breaker (two quarantines within its hour): the remediations that then wait."""
    first, second, third, fourth = nodes_of(fleet)
    for handle in [await fleet.fault(node) for node in (first, second)]:
        await wait_for_phase(handle, Phase.RESOLVED)
    waiting = [await fleet.fault(node) for node in (third, fourth)]
    await fleet.until(lambda status: status.state.tripped is not None and len(status.state.waiting) == 2)
    return waiting


async def test_every_replica_reports_each_governors_permits_and_breaker_fresh(server: DevServer) -> None:
    """Whichever worker runs a governor, the gauges come from its `status` query: a reset breaker reads
    0 on every replica, and a governor that ended holds nothing."""
    buffer = MetricBuffer(10_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    figures: dict[tuple[str, str], float] = {}
    gauges: VisibilityGauges | None = None

    async def reads(governor_id: str, expected: Mapping[str, float]) -> bool:
        assert gauges is not None
        await gauges.count()
        for update in buffer.retrieve_updates():
            if "governor" in update.attributes:
                figures[update.metric.name, str(update.attributes["governor"])] = update.value
        return all(figures.get((name, governor_id)) == value for name, value in expected.items())

    breaker = BreakerPolicy(share=0.01, at_least=2, window=timedelta(hours=1))
    limits = FleetPolicy(budget=FleetBudget(max_concurrent=10, max_percent=100), breaker=breaker)
    trip = {PERMITS_HELD: 0, PERMITS_WAITING: 2, BREAKER_OPEN: 1}
    async with fleets(server.client) as governed:
        fleet, ending = await governed(4, limits), await governed(4, limits)
        # A worker asks its own governors only; these two are the ones asked here.
        gauges = VisibilityGauges(
            server.client, meter, stuck_after=timedelta(hours=1), governors=[fleet.governor_id, ending.governor_id]
        )
        waiting = await tripped(fleet)
        await tripped(ending)
        await eventually(lambda: reads(fleet.governor_id, trip), "the tripped breaker and the asks waiting")
        assert await reads(ending.governor_id, trip), figures

        await fleet.act("reset_breaker")
        for handle in waiting:
            await wait_for_phase(handle, Phase.RESOLVED)
        await fleet.until(lambda status: not status.state.held)
        assert await reads(fleet.governor_id, {PERMITS_HELD: 0, PERMITS_WAITING: 0, BREAKER_OPEN: 0}), figures

        # A governor that ended (terminated here, with its breaker tripped) trips nothing any more.
        await server.client.get_workflow_handle(ending.governor_id).terminate("test over")
        await eventually(
            lambda: reads(ending.governor_id, {PERMITS_WAITING: 0, BREAKER_OPEN: 0}), "the ended governor's zeros"
        )


async def test_a_worker_reports_its_own_governor_only_and_one_not_started_holds_nothing(server: DevServer) -> None:
    """The governor of the worker's queue reads 0 before its first ask starts it; a governor of
    another queue (one no worker may serve any more) is never asked, so it holds up no pass."""
    buffer = MetricBuffer(10_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    limits = FleetPolicy(budget=FleetBudget(max_concurrent=10, max_percent=100))
    async with fleets(server.client) as governed:
        other = await governed(2, limits)
        first, _ = nodes_of(other)
        await wait_for_phase(await other.fault(first), Phase.RESOLVED)  # its governor runs on
        gauges = VisibilityGauges(server.client, meter, stuck_after=timedelta(hours=1), governors=["own-governor"])
        await gauges.count()

    figures = {
        (update.metric.name, str(update.attributes["governor"])): update.value
        for update in buffer.retrieve_updates()
        if "governor" in update.attributes
    }
    assert figures == {
        (PERMITS_HELD, "own-governor"): 0,
        (PERMITS_WAITING, "own-governor"): 0,
        (BREAKER_OPEN, "own-governor"): 0,
    }
