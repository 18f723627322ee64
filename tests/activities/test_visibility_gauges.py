"""The worker's visibility gauges: running remediations per phase, those stuck in it, approvals waiting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from gpuheal.activities.metrics import VisibilityGauges
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.workflows import search_attributes as attrs
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from tests.integration.conftest import eventually

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
