"""The grant collector: a worker's collecting asks sent together, and their grants looked for with one query."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from gpuheal.activities.grant_collector import SENT_TOGETHER, GrantCollector
from gpuheal.control import governor
from gpuheal.domain.fleet import (
    COLLECT_ALL_SIGNAL,
    COLLECT_SIGNAL,
    GOVERNOR,
    BreakerPolicy,
    FleetBudget,
    FleetPolicy,
    GovernorInput,
    PermitRequest,
    PermitRequests,
    governor_task_queue,
)
from gpuheal.domain.operator import OperatorAction
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal_sim.demo.devserver import DevServer
from tests.workflows.fake_activities import FakeFleet


@contextlib.asynccontextmanager
async def a_governor(env: DevServer, nodes: int = 10) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A governor (`nodes` GPU nodes, a budget of as many, a breaker that does not trip) with a worker on its own queue; terminated after."""
    governor_id, queue = f"governor-{uuid.uuid4().hex[:6]}", f"collect-{uuid.uuid4().hex[:6]}"
    activities = FakeFleet({}, gpu_nodes=nodes).activities()
    async with Worker(env.client, task_queue=queue, workflows=[GovernorWorkflow], activities=activities):
        policy = FleetPolicy(
            budget=FleetBudget(max_concurrent=nodes, max_percent=100), breaker=BreakerPolicy(share=1, at_least=1000)
        )
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


def asks(count: int) -> list[PermitRequest]:
    now = datetime.now(UTC)
    return [
        PermitRequest(
            permit_id=f"remediate-n{i}/r", workflow_id=f"remediate-n{i}", run_id="r", node=f"n{i}", asked_at=now
        )
        for i in range(count)
    ]


async def taken(env: DevServer, governor_id: str, permit_id: str) -> None:
    """Once the governor holds the permit or has it waiting."""
    for _ in range(200):
        state = (await governor.status(env.client, governor_id)).state
        if permit_id in {p.permit_id for p in state.held} | {w.request.permit_id for w in state.waiting}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the governor never took {permit_id}")


async def sent_together(handle: WorkflowHandle[Any, Any]) -> list[list[str]]:
    """The permit ids of the asks each `collect_all` signal of the governor's history carried."""
    history = await handle.fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes for e in history.events]
    return [
        [r.permit_id for r in PermitRequests.model_validate_json(signal.input.payloads[0].data).requests]
        for signal in signals
        if signal.signal_name == COLLECT_ALL_SIGNAL.name
    ]


async def test_asks_that_come_while_one_is_sent_go_together_and_each_collects_its_grant(dev_server: DevServer) -> None:
    client = dev_server.client
    requests = asks(2 * SENT_TOGETHER + 3)
    async with a_governor(dev_server, nodes=len(requests)) as handle:
        collector = GrantCollector(handle.id, every=timedelta(milliseconds=20))
        policy = FleetPolicy(budget=FleetBudget(max_concurrent=1000, max_percent=100))
        queue = governor_task_queue(handle.id)  # unused: the governor runs already
        await asyncio.gather(*(collector.ask(client, r, policy, handle.id, queue) for r in requests))
        grants = await asyncio.gather(*(collector.wait(client, r.permit_id, timedelta(seconds=20)) for r in requests))
        carried = await sent_together(handle)

    assert [len(ids) for ids in carried] == [SENT_TOGETHER, SENT_TOGETHER, 3], (
        "together, at most SENT_TOGETHER a signal"
    )
    assert [g.permit_id if g else None for g in grants] == [r.permit_id for r in requests]


async def test_a_send_that_fails_fails_every_ask_it_carried(dev_server: DevServer) -> None:
    """Each ask's step then fails and is retried: none is taken for sent."""
    elsewhere = Client(
        dev_server.client.service_client,
        namespace=f"missing-{uuid.uuid4().hex[:6]}",
        data_converter=dev_server.client.data_converter,
    )
    collector = GrantCollector("governor-x")
    policy = FleetPolicy()

    results = await asyncio.gather(
        *(collector.ask(elsewhere, r, policy, "governor-x", "q") for r in asks(3)), return_exceptions=True
    )

    assert len(results) == 3 and all(isinstance(result, RPCError) for result in results), results
    with pytest.raises(RPCError):  # and the next ask tries again
        await collector.ask(elsewhere, asks(1)[0], policy, "governor-x", "q")


async def test_an_ask_whose_step_was_cancelled_before_it_went_out_is_not_sent(dev_server: DevServer) -> None:
    """Its remediation gives nothing back (it never knew the ask went out), so a late ask would hold
    a permit until the governor's next check of its holders."""
    async with a_governor(dev_server) as handle:
        collector = GrantCollector(handle.id)
        kept, dropped = asks(2)
        policy, queue = FleetPolicy(), governor_task_queue(handle.id)
        sending = asyncio.create_task(collector.ask(dev_server.client, kept, policy, handle.id, queue))
        cancelled = asyncio.create_task(collector.ask(dev_server.client, dropped, policy, handle.id, queue))
        await asyncio.sleep(0)  # both queued; the send has not run yet
        cancelled.cancel()
        await sending
        # A signal that comes while a workflow task runs enters the history only when that task
        # completes: the kept ask is read from the history once the governor has taken it.
        await taken(dev_server, handle.id, kept.permit_id)
        carried = await sent_together(handle)

    assert carried == [[kept.permit_id]]
