"""The grant collector: asks waiting in one worker for the governor's grants, with one query for all."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from gpuheal.activities.grant_collector import GrantCollector
from gpuheal.control import governor
from gpuheal.domain.fleet import COLLECT_SIGNAL, GOVERNOR, FleetBudget, FleetPolicy, GovernorInput, PermitRequest
from gpuheal.domain.operator import OperatorAction
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal_sim.demo.devserver import DevServer
from tests.workflows.fake_activities import FakeFleet


@contextlib.asynccontextmanager
async def a_governor(env: DevServer) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A governor (ten GPU nodes, a budget of ten) with a worker on its own queue; terminated after."""
    governor_id, queue = f"governor-{uuid.uuid4().hex[:6]}", f"collect-{uuid.uuid4().hex[:6]}"
    activities = FakeFleet({}, gpu_nodes=10).activities()
    async with Worker(env.client, task_queue=queue, workflows=[GovernorWorkflow], activities=activities):
        policy = FleetPolicy(budget=FleetBudget(max_percent=100))
        handle = await env.client.start_workflow(
            GOVERNOR.name, GovernorInput(policy=policy), id=governor_id, task_queue=queue
        )
        yield handle
        await handle.terminate("test over")


async def test_an_ask_whose_governor_does_not_answer_returns_without_a_grant(
    dev_server: DevServer,
) -> None:
    collector = GrantCollector(f"governor-{uuid.uuid4().hex[:6]}", every=timedelta(milliseconds=20))

    grant = await collector.wait(dev_server.client, "remediate-x/run-1", timedelta(milliseconds=300))

    assert grant is None, "no governor runs: the remediation asks to be signalled instead"
    assert await collector.wait(dev_server.client, "remediate-x/run-1", timedelta(milliseconds=50)) is None


async def test_asks_waiting_together_each_get_their_own_grant(dev_server: DevServer) -> None:
    client = dev_server.client
    async with a_governor(dev_server) as handle:
        governor_id = handle.id
        now = datetime.now(UTC)
        requests = [
            PermitRequest(
                permit_id=f"remediate-n{i}/r", workflow_id=f"remediate-n{i}", run_id="r", node=f"n{i}", asked_at=now
            )
            for i in range(3)
        ]
        collector = GrantCollector(governor_id, every=timedelta(milliseconds=20))
        waits = [asyncio.create_task(collector.wait(client, r.permit_id, timedelta(seconds=10))) for r in requests]
        for request in requests:
            await handle.signal(COLLECT_SIGNAL.name, request)
        grants = await asyncio.gather(*waits)
        held = {permit.permit_id for permit in (await governor.status(client, governor_id)).state.held}

    assert [grant.permit_id if grant else None for grant in grants] == [r.permit_id for r in requests]
    assert held == {r.permit_id for r in requests}, "each collected grant is one the governor recorded"


async def test_an_ask_the_governor_leaves_waiting_stops_waiting_at_once(dev_server: DevServer) -> None:
    """A paused governor answers that the ask waits: the ask returns at once (its remediation asks to
    be signalled) instead of holding the worker's slots for its whole moment."""
    client = dev_server.client
    async with a_governor(dev_server) as handle:
        governor_id = handle.id
        await governor.act(client, "pause", OperatorAction(by="alice", reason="driver rollout"), governor_id)
        now = datetime.now(UTC)
        request = PermitRequest(
            permit_id="remediate-n/r", workflow_id="remediate-n", run_id="r", node="n", asked_at=now
        )
        await handle.signal(COLLECT_SIGNAL.name, request)
        collector = GrantCollector(governor_id, every=timedelta(milliseconds=20))
        # Waiting its whole moment (an hour) would fail the bound.
        grant = await asyncio.wait_for(collector.wait(client, request.permit_id, timedelta(hours=1)), timeout=30)
        status = await governor.status(client, governor_id)

    assert grant is None
    assert [w.request.permit_id for w in status.state.waiting] == [request.permit_id]
    assert status.state.waiting[0].why.startswith("paused by alice")
