"""The fleet governor with real remediations on Temporal's time-skipping test server.

Each test runs a fleet of in-memory nodes (FakeFleet) that samples how many of its nodes are
cordoned after every step, so the limits are checked against the nodes themselves, not against
what the governor believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from gpuheal.activities.contract import implements
from gpuheal.activities.fleet import deliver_permits, return_permit
from gpuheal.control import governor, remediations
from gpuheal.domain import contracts
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import (
    COLLECT_SIGNAL,
    GOVERNOR,
    PERMIT_SIGNAL,
    RELEASE_SIGNAL,
    REQUEST_SIGNAL,
    BreakerPolicy,
    EndedHolders,
    FleetBudget,
    FleetPolicy,
    GovernorInput,
    GovernorStatus,
    PermitDelivery,
    PermitGiveBack,
    PermitGivenBack,
    PermitGrant,
    PermitRequest,
    PermitReturn,
    governor_task_queue,
)
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.operator import ActionRefused, OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease, RemediationStatus
from gpuheal.domain.remediation_contract import FAULT_SIGNAL, REMEDIATION
from gpuheal.domain.steps import Step
from gpuheal.workflows.governor import GovernorWorkflow
from gpuheal.workflows.remediation import RemediationWorkflow
from gpuheal_sim.demo.devserver import DevServer
from tests.workflows import fake_activities
from tests.workflows.fake_activities import FakeFleet, FakeNode
from tests.workflows.record_history import reaches
from tests.workflows.test_remediation_logic import Handle, escalated, fault, policy, wait_for_phase
from tests.workflows.test_replay import steps

ALICE = OperatorAction(by="alice", reason="XID 79 storm after the driver rollout; rolled back")


class MakeFleet(Protocol):
    async def __call__(
        self,
        count: int,
        fleet: FleetPolicy,
        labels: Callable[[int], dict[str, str]] | None = None,
        group_label: str = "",
    ) -> Governed: ...


@dataclass
class Governed:
    """A fleet of fake nodes, a worker for it on its own task queue, and the governor's id."""

    client: Client
    fleet: FakeFleet
    queue: str
    governor_id: str

    async def fault(self, node: FakeNode, the_fault: Fault | None = None) -> Handle:
        return await remediations.report_fault(self.client, the_fault or fault(node), policy(), task_queue=self.queue)

    async def status(self) -> GovernorStatus:
        return await governor.status(self.client, self.governor_id)

    async def act(self, what: str, action: OperatorAction = ALICE) -> GovernorStatus:
        return await governor.act(self.client, what, action, self.governor_id)

    async def until(self, check: Callable[[GovernorStatus], bool]) -> GovernorStatus:
        for _ in range(400):
            status = await self.status()
            if check(status):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"the governor never got there: {status}")


@contextlib.asynccontextmanager
async def fleets(client: Client) -> AsyncIterator[MakeFleet]:
    """Make governed fleets on `client`'s server: `make(nodes, fleet_policy, labels=…)`; the workers
    stop and the governors are terminated afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        made: list[Governed] = []

        async def make(
            count: int, fleet: FleetPolicy, labels: Callable[[int], dict[str, str]] | None = None, group_label: str = ""
        ) -> Governed:
            tag = uuid.uuid4().hex[:6]
            governor_id = f"governor-{tag}"
            nodes = {
                f"gpu-{tag}-{i}": FakeNode(
                    name=f"gpu-{tag}-{i}", fleet=fleet, governor_id=governor_id, labels=labels(i) if labels else {}
                )
                for i in range(count)
            }
            queue = f"governed-{tag}"
            fake = FakeFleet(nodes, group_label=group_label)
            # As gpuheal's worker: the governor on its own queue, and on the main one too.
            for task_queue, workflows in (
                (queue, [RemediationWorkflow, GovernorWorkflow]),
                (governor_task_queue(governor_id), [GovernorWorkflow]),
            ):
                worker = Worker(client, task_queue=task_queue, workflows=workflows, activities=fake.activities())
                await stack.enter_async_context(worker)
            made.append(Governed(client, fake, queue, governor_id))
            return made[-1]

        yield make
        for result in made:
            with contextlib.suppress(RPCError):  # none started (no request reached it), or it ended
                await end_governor(client.get_workflow_handle(result.governor_id))


async def end_governor(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminate a governor once no activity of its runs: a run ended under a running activity holds
    the shared time-skipping server's clock, and later tests that skip hours wait forever."""
    for _ in range(200):
        if not (await handle.describe()).raw_description.pending_activities:
            break
        await asyncio.sleep(0.05)
    await handle.terminate("test over")


@pytest.fixture
async def governed(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[MakeFleet]:
    """Governed fleets on the time-skipping test server."""
    async with fleets(time_skipping_env.client) as make:
        yield make


@pytest.fixture
async def governed_live(dev_server: DevServer) -> AsyncIterator[MakeFleet]:
    """Governed fleets on the real dev server (the test server's continue-as-new loses races with signals)."""
    async with fleets(dev_server.client) as make:
        yield make


def nodes_of(governed: Governed) -> list[FakeNode]:
    return list(governed.fleet.nodes.values())


def phases(status: RemediationStatus) -> list[Phase]:
    return [entry.phase for entry in status.history]


def limits(**budget: object) -> FleetPolicy:
    """A budget, with a breaker these tests do not trip."""
    return FleetPolicy(budget=FleetBudget(**budget), breaker=BreakerPolicy(share=1, at_least=1000))


async def test_no_more_nodes_are_out_of_service_at_once_than_the_budget_allows(governed: MakeFleet) -> None:
    fleet = await governed(6, limits(max_concurrent=2, max_percent=100))
    for node in nodes_of(fleet):
        node.collect_within = timedelta(0)  # no ask waits for its grant: the waiting runs show AwaitingBudget

    handles = [await fleet.fault(node) for node in nodes_of(fleet)]
    results = [await handle.result() for handle in handles]

    assert [status.phase for status in results] == [Phase.RESOLVED] * 6
    assert fleet.fleet.max_cordoned == 2, "two at a time, never more (sampled from the nodes)"
    assert sum(Phase.AWAITING_BUDGET in phases(status) for status in results) >= 4
    assert all(status.permit is not None for status in results), "each run records the permit it held"
    final = await fleet.status()
    assert (final.state.held, final.state.waiting) == ((), ()), "every permit came back"


async def test_the_share_of_gpu_nodes_bounds_the_budget(governed: MakeFleet) -> None:
    fleet = await governed(10, limits(max_concurrent=50, max_percent=20))

    handles = [await fleet.fault(node) for node in nodes_of(fleet)]
    results = [await handle.result() for handle in handles]

    assert {status.phase for status in results} == {Phase.RESOLVED}
    assert (await fleet.status()).limit == 2
    assert fleet.fleet.max_cordoned == 2


async def test_one_node_per_rack_at_a_time_while_other_racks_go_on(governed: MakeFleet) -> None:
    fleet = await governed(
        6,
        limits(max_concurrent=10, max_percent=100, group_label="rack", max_per_group=1),
        labels=lambda i: {"rack": f"r{i % 3}"},
        group_label="rack",
    )

    handles = [await fleet.fault(node) for node in nodes_of(fleet)]
    results = [await handle.result() for handle in handles]

    assert {status.phase for status in results} == {Phase.RESOLVED}
    assert fleet.fleet.max_cordoned_per_group == {"r0": 1, "r1": 1, "r2": 1}
    assert fleet.fleet.max_cordoned >= 2, "racks do not wait for each other"


async def test_the_breaker_trips_holds_the_rest_untouched_and_a_reset_lets_them_go_in_order(
    governed: MakeFleet,
) -> None:
    breaker = BreakerPolicy(share=0.01, at_least=2, window=timedelta(hours=1))
    fleet = await governed(4, FleetPolicy(budget=FleetBudget(max_concurrent=10, max_percent=100), breaker=breaker))
    first, second, third, fourth = nodes_of(fleet)
    # Followed by queries, not by awaiting their results: that would let the test server skip its clock
    # to the governor's next timer, the first grant leaving the window an hour later.
    for handle in [await fleet.fault(node) for node in (first, second)]:
        await wait_for_phase(handle, Phase.RESOLVED)

    waiting = [await fleet.fault(node) for node in (third, fourth)]
    for handle in waiting:
        await wait_for_phase(handle, Phase.AWAITING_BUDGET)
    tripped = await fleet.until(lambda status: status.state.tripped is not None and len(status.state.waiting) == 2)

    assert tripped.state.tripped is not None
    assert "2 GPU nodes quarantined within 1:00:00" in tripped.state.tripped.reason
    assert third.writes == [] and fourth.writes == [], "the waiting nodes are not touched"
    assert all("circuit breaker tripped" in w.why for w in tripped.state.waiting)

    after = await fleet.act("reset_breaker")
    for handle in waiting:  # by queries, as above: the window must not pass meanwhile
        await wait_for_phase(handle, Phase.RESOLVED)
    results = [await handle.query(RemediationWorkflow.status) for handle in waiting]

    assert after.state.tripped is None
    assert after.state.log[-1].action == "reset_breaker" and after.state.log[-1].by == "alice"
    assert [status.phase for status in results] == [Phase.RESOLVED] * 2
    assert results[0].permit is not None and results[1].permit is not None
    assert results[0].permit.granted_at <= results[1].permit.granted_at, "in arrival order"
    with pytest.raises(ActionRefused, match=re.escape("the breaker is not tripped (2 of 2 quarantines")):
        await fleet.act("reset_breaker")


async def test_a_pause_holds_new_remediations_and_a_resume_lets_them_go_in_arrival_order(
    governed: MakeFleet,
) -> None:
    fleet = await governed(3, limits(max_concurrent=1, max_percent=100))
    await governor.configure(fleet.client, limits(max_concurrent=1, max_percent=100), fleet.governor_id, fleet.queue)
    paused = await fleet.act("pause")
    assert paused.state.paused is not None and paused.state.paused.by == "alice"
    with pytest.raises(ActionRefused, match="already paused by alice"):
        await fleet.act("pause")

    handles = []
    for node in nodes_of(fleet):
        handles.append(await fleet.fault(node))
        await wait_for_phase(handles[-1], Phase.AWAITING_BUDGET)
    held = await fleet.until(lambda status: len(status.state.waiting) == 3)
    assert all(w.why.startswith("paused by alice") for w in held.state.waiting)
    assert all(node.writes == [] for node in nodes_of(fleet))

    await fleet.act("resume", OperatorAction(by="bob", reason="fleet checked"))
    results = [await handle.result() for handle in handles]

    assert [status.phase for status in results] == [Phase.RESOLVED] * 3
    granted = [status.permit.granted_at for status in results if status.permit is not None]
    assert granted == sorted(granted) and len(set(granted)) == 3, "one at a time, first come first served"
    with pytest.raises(ActionRefused, match="the governor is not paused"):
        await fleet.act("resume")


@pytest.mark.parametrize(("by", "reason", "refusal"), [("alice", "  ", "say why (reason)"), (" ", "x", "say who acts")])
async def test_an_action_without_who_or_why_is_refused(governed: MakeFleet, by: str, reason: str, refusal: str) -> None:
    fleet = await governed(1, limits())
    await governor.configure(fleet.client, limits(), fleet.governor_id, fleet.queue)

    with pytest.raises(ActionRefused, match=re.escape(refusal)):
        await fleet.act("pause", OperatorAction(by=by, reason=reason))
    assert (await fleet.status()).state.paused is None


async def test_a_stale_fault_does_nothing_to_a_node_that_recovered_while_it_waited(
    time_skipping_env: WorkflowEnvironment, governed: MakeFleet
) -> None:
    fleet = await governed(2, limits(max_percent=100))
    recovered, still_bad = nodes_of(fleet)
    await governor.configure(fleet.client, limits(max_percent=100), fleet.governor_id, fleet.queue)
    await fleet.act("pause")
    # Faults detected an hour ago (an agent's spool delivered late, or a breaker that stayed tripped):
    # older than the breaker's recheck_after (10 minutes) when their permits come.
    an_hour_ago = await time_skipping_env.get_current_time() - timedelta(hours=1)
    handles = [
        await fleet.fault(node, fault(node).model_copy(update={"detected_at": an_hour_ago}))
        for node in (recovered, still_bad)
    ]
    for handle in handles:
        await wait_for_phase(handle, Phase.AWAITING_BUDGET)
    recovered.boot_id = "boot-after-a-power-cycle"
    recovered.agent_reports(True, at=await time_skipping_env.get_current_time())
    await fleet.act("resume")
    calm, repaired = [await handle.result() for handle in handles]

    assert calm.phase is Phase.RESOLVED
    assert "recovered while the fault waited for a permit (rebooted: boot boot-1 → boot-after-a-power-cycle)" in (
        calm.reason
    )
    assert recovered.writes == [], "only read, never cordoned, drained or rebooted"
    assert repaired.phase is Phase.RESOLVED and still_bad.reboots == 1, "a node still faulty is repaired"
    assert (await fleet.status()).state.held == ()


async def test_a_run_cancelled_while_it_waits_withdraws_its_request(governed: MakeFleet) -> None:
    fleet = await governed(1, limits())
    [node] = nodes_of(fleet)
    await governor.configure(fleet.client, limits(), fleet.governor_id, fleet.queue)
    await fleet.act("pause")
    handle = await fleet.fault(node)
    await wait_for_phase(handle, Phase.AWAITING_BUDGET)

    await handle.cancel()
    status = await handle.result()

    assert status.phase is Phase.CANCELLED and node.writes == []
    await fleet.until(lambda governor_status: governor_status.state.waiting == ())


async def test_the_request_of_a_remediation_terminated_while_it_waits_is_dropped(governed: MakeFleet) -> None:
    # The governor asks Temporal whether the runs it knows still run every second here (every five
    # minutes by default): the test waits for that check in real time, not on the test server's skip.
    checks_often = limits().model_copy(update={"reclaim_every": timedelta(seconds=1)})
    fleet = await governed(1, checks_often)
    [node] = nodes_of(fleet)
    await governor.configure(fleet.client, checks_often, fleet.governor_id, fleet.queue)
    await fleet.act("pause")
    handle = await fleet.fault(node)
    await wait_for_phase(handle, Phase.AWAITING_BUDGET)

    await handle.terminate("removed by hand")

    await fleet.until(lambda status: status.state.waiting == ())
    assert node.writes == []


async def test_the_permit_of_a_terminated_remediation_is_reclaimed(governed: MakeFleet) -> None:
    # The governor asks Temporal whether its holders still run every second here (every five minutes
    # by default), so the reclaim comes in real time, not on a skip of the shared test server's clock.
    checks_often = limits(max_concurrent=1, max_percent=100).model_copy(update={"reclaim_every": timedelta(seconds=1)})
    fleet = await governed(2, checks_often)
    holder, next_one = nodes_of(fleet)
    stuck = await remediations.report_fault(fleet.client, fault(holder), policy(approval=True), task_queue=fleet.queue)
    await wait_for_phase(stuck, Phase.AWAITING_APPROVAL)
    waiting = await fleet.fault(next_one)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)

    await stuck.terminate("an operator removed it by hand")
    status = await waiting.result()

    assert status.phase is Phase.RESOLVED
    final = await fleet.status()
    assert final.state.held == () and final.state.waiting == ()


@contextlib.asynccontextmanager
async def lone_governor(
    env: WorkflowEnvironment, node: str, *, running: bool = False
) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], PermitRequest]]:
    """A governor with no remediations behind it, and a request for a run that does not exist."""
    client = env.client
    governor_id, queue = f"governor-{uuid.uuid4().hex[:6]}", f"lone-{uuid.uuid4().hex[:6]}"
    request = PermitRequest(
        permit_id=f"remediate-{node}/run-1",
        workflow_id=f"remediate-{node}",
        run_id="00000000-0000-0000-0000-000000000001",
        node=node,
        asked_at=await env.get_current_time(),
    )
    async with Worker(client, task_queue=queue, workflows=[GovernorWorkflow], activities=FakeFleet({}).activities()):
        handle = await client.start_workflow(GOVERNOR.name, GovernorInput(), id=governor_id, task_queue=queue)
        if running:  # a request of a run that runs: the governor's own
            ids = {"workflow_id": governor_id, "run_id": handle.result_run_id}
            request = request.model_copy(update=ids)
        yield handle, request
        await end_governor(handle)


async def test_requests_and_returns_are_counted_once_by_permit_id(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    async with lone_governor(time_skipping_env, "x", running=True) as (handle, request):
        governor_id = handle.id
        await governor.act(client, "pause", ALICE, governor_id)
        await handle.signal(REQUEST_SIGNAL.name, request)
        await handle.signal(REQUEST_SIGNAL.name, request)
        assert len((await governor.status(client, governor_id)).state.waiting) == 1

        await handle.signal(RELEASE_SIGNAL.name, PermitReturn(permit_id=request.permit_id))
        await handle.signal(RELEASE_SIGNAL.name, PermitReturn(permit_id=request.permit_id))
        await handle.signal(REQUEST_SIGNAL.name, request)  # a retried ask arriving after the return
        await governor.act(client, "resume", ALICE, governor_id)
        status = await governor.status(client, governor_id)

        assert (status.state.waiting, status.state.held) == ((), ())


async def test_a_grant_left_to_its_asker_is_signalled_only_once_it_asks_to_be(
    own_time_skipping_env: WorkflowEnvironment,
) -> None:
    """An ask that collects its grant gets no signal; one that stopped waiting for it (its moment
    passed) and asks again to be signalled gets the grant made meanwhile. (On a server of its own:
    the governor ends while its delivery may still run, which would hold a shared server's clock.)"""
    client = own_time_skipping_env.client
    async with lone_governor(own_time_skipping_env, "collector", running=True) as (handle, request):
        await handle.signal(COLLECT_SIGNAL.name, request)

        async def held() -> tuple[PermitGrant, ...]:
            return (await governor.grants(client, (request.permit_id, "remediate-other/run-1"), handle.id)).grants

        found = await _when(held)

        assert [grant.permit_id for grant in found] == [request.permit_id], "held, and only that one"
        assert await _deliveries(handle) == 0, "left to its asker: no signal"

        await handle.signal(REQUEST_SIGNAL.name, request)
        delivered = await _when(lambda: _deliveries(handle))

        assert delivered == 1
        assert [p.permit_id for p in (await governor.status(client, handle.id)).state.held] == [request.permit_id]


async def test_a_permit_granted_at_once_is_collected_by_the_ask_and_the_node_quarantined_in_that_task(
    governed: MakeFleet,
) -> None:
    fleet = await governed(1, limits(max_concurrent=5, max_percent=100))
    node = nodes_of(fleet)[0]

    handle = await fleet.fault(node)
    status = await handle.result()

    assert status.phase is Phase.RESOLVED and status.permit is not None
    assert node.collected == 1
    history = await handle.fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events]
    assert PERMIT_SIGNAL.name not in signals
    tasks = [e.event_id for e in history.events if e.HasField("workflow_task_started_event_attributes")]
    quarantined = next(
        e.event_id
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and contracts.QUARANTINE.name.value in str(e.marker_recorded_event_attributes.details)
    )
    assert quarantined < tasks[1], "among the first workflow task's commands"
    assert Phase.AWAITING_BUDGET not in phases(status)
    final = await fleet.status()
    assert (final.state.held, final.state.returned) == ((), (status.permit.permit_id,))


async def test_the_node_read_the_ask_and_its_grant_are_one_step_before_quarantine(governed: MakeFleet) -> None:
    fleet = await governed(1, limits(max_concurrent=5, max_percent=100))
    node = nodes_of(fleet)[0]

    status = await (await fleet.fault(node)).result()

    assert status.phase is Phase.RESOLVED and node.collected == 1
    assert node.steps[:2] == ["collect_permit_unless_held", "quarantine_node"], "no read of its own before the ask"


async def test_a_held_node_asks_for_no_permit_until_its_hold_is_lifted(governed: MakeFleet) -> None:
    fleet = await governed(1, limits(max_concurrent=5, max_percent=100))
    node = nodes_of(fleet)[0]
    node.held = True

    handle = await fleet.fault(node)
    await wait_for_phase(handle, Phase.ON_HOLD)
    await asyncio.sleep(0.3)

    assert node.permit_requests == [] and node.writes == [], "nothing asked of the governor, nothing done"
    node.held = False
    status = await handle.result()

    assert status.phase is Phase.RESOLVED and status.permit is not None
    assert len(node.permit_requests) == 1
    assert phases(status)[:3] == [Phase.DETECTED, Phase.ON_HOLD, Phase.QUARANTINED]


async def test_a_node_gone_before_its_first_read_fails_the_run_untouched(governed: MakeFleet) -> None:
    fleet = await governed(1, limits(max_concurrent=5, max_percent=100))
    node = nodes_of(fleet)[0]
    node.exists = False

    status = await (await fleet.fault(node)).result()

    assert status.phase is Phase.FAILED and "deleted" in status.reason
    assert node.permit_requests == [] and node.writes == []


async def test_an_ask_whose_moment_passed_waits_for_its_permit_as_a_signal(governed: MakeFleet) -> None:
    fleet = await governed(2, limits(max_concurrent=1, max_percent=100))
    first, second = nodes_of(fleet)
    holding = await remediations.report_fault(fleet.client, fault(first), policy(approval=True), task_queue=fleet.queue)
    await wait_for_phase(holding, Phase.AWAITING_APPROVAL)

    waiting = await fleet.fault(second)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)
    await holding.signal("approve", ApprovalSignal(approver="alice", reason="rack drained"))
    status = await waiting.result()

    assert status.phase is Phase.RESOLVED and status.permit is not None
    assert second.collected == 0
    history = await waiting.fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events]
    assert signals.count(PERMIT_SIGNAL.name) == 1
    # The permit the waiting ask got was given back by the holder's last task.
    assert (await holding.result()).phase is Phase.RESOLVED
    returned_by_its_last_task(await holding.fetch_history())
    final = await fleet.status()
    assert final.state.held == () and len(final.state.returned) == 2


T = TypeVar("T")


async def _when(read: Callable[[], Awaitable[T]]) -> T:
    """What `read` answers once it answers something (a governor's state, read in real time)."""
    for _ in range(200):
        if answer := await read():
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("never answered")


async def _deliveries(governor_run: WorkflowHandle[Any, Any]) -> int:
    history = await governor_run.fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events]
    return scheduled.count(contracts.DELIVER_PERMITS.name.value)


async def test_a_request_of_a_run_that_has_ended_is_neither_held_nor_counted_by_the_breaker(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    async with lone_governor(time_skipping_env, "gone") as (handle, request):
        governor_id = handle.id
        await handle.signal(REQUEST_SIGNAL.name, request)
        for _ in range(200):
            status = await governor.status(client, governor_id)
            if not status.state.waiting and not status.state.held:
                break
            await asyncio.sleep(0.05)

        # Dropped when the governor checked its run, or granted and taken back when the grant's signal failed.
        assert (status.state.waiting, status.state.held) == ((), ())
        assert status.state.recent_grants == (), "nothing was quarantined under it"


async def test_the_state_survives_continue_as_new(governed_live: MakeFleet) -> None:
    breaker = BreakerPolicy(share=0.01, at_least=3)
    policy_ = FleetPolicy(budget=FleetBudget(max_concurrent=2, max_percent=100), breaker=breaker)
    fleet = await governed_live(5, policy_)
    first = await fleet.client.start_workflow(
        GOVERNOR.name, GovernorInput(policy=policy_, history_limit=30), id=fleet.governor_id, task_queue=fleet.queue
    )
    handles = [await fleet.fault(node) for node in nodes_of(fleet)]

    tripped = await fleet.until(
        lambda status: status.state.tripped is not None and len(status.state.waiting) == 2 and not status.state.held
    )
    waiting = {w.request.node for w in tripped.state.waiting}
    done = [
        await handle.result() for handle, node in zip(handles, nodes_of(fleet), strict=True) if node.name not in waiting
    ]
    current = await fleet.client.get_workflow_handle(fleet.governor_id).describe()

    assert current.run_id != first.result_run_id, "the governor continued as new"
    assert current.task_queue == governor_task_queue(fleet.governor_id), "onto its own task queue"
    assert len(done) == 3 and {status.phase for status in done} == {Phase.RESOLVED}
    assert all(node.writes == [] for node in nodes_of(fleet) if node.name in waiting)
    await fleet.act("reset_breaker")
    assert {(await handle.result()).phase for handle in handles} == {Phase.RESOLVED}


async def test_an_escalated_node_keeps_its_permit_until_a_person_releases_it(governed: MakeFleet) -> None:
    fleet = await governed(2, limits(max_concurrent=1, max_percent=100))
    broken, next_one = nodes_of(fleet)
    broken.gpus_healthy_after_reboot = False
    held = await fleet.fault(broken)
    await escalated(held)

    waiting = await fleet.fault(next_one)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)
    status = await fleet.status()
    assert [p.node for p in status.state.held] == [broken.name], "the escalated node is still out of service"
    assert next_one.cordoned is False, "the waiting node is untouched"

    await remediations.act_on_escalation(
        fleet.client, broken.name, PersonAction.RELEASE, NodeRelease(by="dave", reason="RMA", keep_cordoned=True)
    )
    assert (await held.result()).phase is Phase.RELEASED
    assert (await waiting.result()).phase is Phase.RESOLVED
    assert fleet.fleet.max_cordoned == 2, "the released node stays cordoned for dave, outside the budget"


async def test_a_node_deleted_while_it_waits_for_its_permit_ends_failed_naming_it(governed: MakeFleet) -> None:
    """The permit step refuses a deleted node for good; the run ends in Failed, as any step's would."""
    fleet = await governed(1, limits(max_concurrent=1, max_percent=100))
    [node] = nodes_of(fleet)
    node.exists = False

    status = await (await fleet.fault(node)).result()

    assert status.phase is Phase.FAILED
    assert status.reason == f"node {node.name} was deleted during the remediation"


async def test_a_permit_used_and_returned_before_a_retried_delivery_still_counts_for_the_breaker(
    governed_live: MakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is lost after the delivery signalled the permit: the remediation quarantines, repairs
    and returns it meanwhile, and the retried delivery finds its run ended. The node was quarantined
    under that permit, so the breaker's window must still count it (it was taken back a second time)."""

    retried = asyncio.Event()

    @implements(contracts.DELIVER_PERMITS)
    async def signal_then_lose_the_worker(delivery: PermitDelivery) -> EndedHolders:
        answer = await deliver_permits(delivery)
        if activity.info().attempt > 1:
            retried.set()
            return answer
        for permit in delivery.permits:
            handle = activity.client().get_workflow_handle(permit.workflow_id, run_id=permit.run_id)
            while (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
                await asyncio.sleep(0.05)
        raise RuntimeError("the worker was lost after signalling")

    monkeypatch.setattr(fake_activities, "deliver_permits", signal_then_lose_the_worker)
    fleet = await governed_live(1, limits(max_concurrent=5, max_percent=100))
    nodes_of(fleet)[0].collect_within = timedelta(0)  # the permit is delivered, not collected

    done = await (await fleet.fault(nodes_of(fleet)[0])).result()
    await asyncio.wait_for(retried.wait(), timeout=30)
    governor_run = fleet.client.get_workflow_handle(fleet.governor_id)
    while (await governor_run.describe()).raw_description.pending_activities:
        await asyncio.sleep(0.05)
    final = await fleet.status()  # a query waits for the task that takes in the retry's answer

    assert done.phase is Phase.RESOLVED
    assert final.state.returned and not final.state.held, "the run returned its permit"
    assert len(final.state.recent_grants) == 1, "the quarantine under the returned permit still counts"


# ---- the permit given back (runs begun under 0.3.0) -----------------------------------------------


def returned_by_its_last_task(history: WorkflowHistory) -> None:
    """The run gave its permit back by its local step, among the commands of the task that ended it:
    no signal of the workflow's own, which waited for the server's answer in a task of its own."""
    kinds = [event.event_type for event in history.events]
    assert EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED not in kinds
    last_task = max(i for i, kind in enumerate(kinds) if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    assert steps(history).count(Step.RETURN_PERMIT) == 1
    assert Step.RETURN_PERMIT in steps(WorkflowHistory(history.workflow_id, history.events[last_task:]))


async def test_a_run_cancelled_mid_drain_gives_its_permit_back(governed_live: MakeFleet) -> None:
    """The node is handed back and the permit goes to the next waiting ask. On the dev server: the
    drain's backoff is real time."""
    fleet = await governed_live(2, limits(max_concurrent=1, max_percent=100))
    draining, next_one = nodes_of(fleet)
    draining.blocked_passes = 10_000  # a budget that never lets the pod go: the drain goes on until cancelled
    handle = await fleet.fault(draining)
    await wait_for_phase(handle, Phase.DRAINING)
    waiting = await fleet.fault(next_one)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)

    await handle.cancel()

    assert (await handle.result()).phase is Phase.CANCELLED
    assert not draining.cordoned, "handed back as gpuheal found it"
    assert (await waiting.result()).phase is Phase.RESOLVED, "the waiting ask got the permit given back"
    returned_by_its_last_task(await handle.fetch_history())
    assert (await fleet.status()).state.held == ()


async def test_a_cancel_that_comes_while_the_permit_goes_back_does_not_stop_it(
    governed_live: MakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step outlives its workflow task (sdk-core heartbeats the task, here of one second) and the
    operator's cancel comes in the next: the run waits for the step, then ends as cancelled."""
    started = asyncio.Event()

    @implements(contracts.RETURN_PERMIT)
    async def return_once_the_cancel_is_taken(give_back: PermitGiveBack) -> PermitGivenBack:
        holder = workflow_id_for(node.name)
        if give_back.returned.permit_id.startswith(f"{holder}/"):  # the cancelled run's step: held
            started.set()
            run = activity.client().get_workflow_handle(holder)
            for _ in range(400):  # bounded: a run that never takes the cancel in fails below, not hangs the worker
                if await _took_a_cancel(run):
                    break
                await asyncio.sleep(0.05)
        return await return_permit(give_back)

    monkeypatch.setattr(fake_activities, "return_permit", return_once_the_cancel_is_taken)
    fleet = await governed_live(2, limits(max_concurrent=1, max_percent=100))
    node, next_one = nodes_of(fleet)
    handle: Handle = await fleet.client.start_workflow(
        REMEDIATION.name,
        REMEDIATION.input(node=node.name, policy=policy(), policy_version=""),
        id=workflow_id_for(node.name),
        task_queue=fleet.queue,
        result_type=REMEDIATION.result,
        start_signal=FAULT_SIGNAL.name,
        start_signal_args=FAULT_SIGNAL.args(fault(node)),
        task_timeout=timedelta(seconds=1),
    )
    await reaches(handle, lambda status: status.permit is not None, "its permit")
    waiting = await fleet.fault(next_one)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)
    await asyncio.wait_for(started.wait(), timeout=60)

    await handle.cancel()

    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    history = await handle.fetch_history()
    assert steps(history).count(Step.RETURN_PERMIT) == 1, "the step ended, recorded, before the run did"
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED
    assert (await waiting.result()).phase is Phase.RESOLVED, "the waiting ask got the permit given back"
    assert (await fleet.status()).state.held == ()


async def _took_a_cancel(run: WorkflowHandle[Any, Any]) -> bool:
    """Whether a workflow task of `run` has completed since a cancel was asked of it."""
    kinds = [event.event_type async for event in run.fetch_history_events()]
    asked = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    return asked in kinds and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[kinds.index(asked) :]


def refused_back(monkeypatch: pytest.MonkeyPatch, node: FakeNode, status: RPCStatusCode) -> asyncio.Event:
    """The Temporal server answers `status` to every signal that gives `node`'s permit back (the
    real `return_permit` sends it); the event is set at the first."""
    signal = WorkflowHandle.signal
    holder = f"{workflow_id_for(node.name)}/"
    tried = asyncio.Event()

    async def answered(handle: WorkflowHandle[Any, Any], name: str, *args: Any, **kwargs: Any) -> None:
        if name == RELEASE_SIGNAL.name and isinstance(args[0], PermitReturn) and args[0].permit_id.startswith(holder):
            tried.set()
            raise RPCError(f"refused by the test: {status.name}", status, b"")
        await signal(handle, name, *args, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "signal", answered)
    return tried


async def test_a_permit_the_governor_refuses_back_for_good_ends_the_run_and_is_reclaimed(
    governed: MakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A return refused for good (PERMISSION_DENIED) is tried once and logged, and the run ends as it
    was to; the governor's holder check finds the run ended and takes the permit back for the next
    ask. Before: retried every 10 s for ever, the run open and holding its permit."""
    checks_often = limits(max_concurrent=1, max_percent=100).model_copy(update={"reclaim_every": timedelta(seconds=1)})
    fleet = await governed(2, checks_often)
    refused, next_one = nodes_of(fleet)
    refused_back(monkeypatch, refused, RPCStatusCode.PERMISSION_DENIED)
    handle = await fleet.fault(refused)
    waiting = await fleet.fault(next_one)

    async with asyncio.timeout(60):  # bounded: a run that never ends fails here, not hangs
        assert (await handle.result()).phase is Phase.RESOLVED
        assert (await waiting.result()).phase is Phase.RESOLVED, "the permit, reclaimed, went to the next ask"

    history = await handle.fetch_history()
    assert steps(history).count(Step.RETURN_PERMIT) == 1, "one attempt, recorded once"
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    assert (await fleet.status()).state.held == ()


async def test_a_cancel_while_the_permit_keeps_failing_to_go_back_ends_the_run(
    governed_live: MakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A return that keeps failing (UNAVAILABLE, retried) has few attempts: the run waits them out,
    then ends as the operator's cancel says. Before: retried for ever, the cancel swallowed."""
    fleet = await governed_live(1, limits(max_concurrent=1, max_percent=100))
    [node] = nodes_of(fleet)
    tried = refused_back(monkeypatch, node, RPCStatusCode.UNAVAILABLE)
    handle = await fleet.fault(node)
    await asyncio.wait_for(tried.wait(), timeout=60)

    await handle.cancel()

    async with asyncio.timeout(90):  # bounded: a run that never ends fails here, not hangs
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    assert not node.cordoned, "the node was handed back before the permit went"


async def test_a_cancel_during_a_reboot_request_waits_for_it_before_the_node_and_permit_go_back(
    governed_live: MakeFleet,
) -> None:
    """The reboot step acts on the node: an operator's cancel reaches it, and the run hands the node
    back and gives its permit to the next node only once the request has ended (here it went
    through: a provider call that does not heartbeat). Before: both at once, the reboot in flight."""
    fleet = await governed_live(2, limits(max_concurrent=1, max_percent=100))
    rebooting, next_one = nodes_of(fleet)
    rebooting.reboot_held = asyncio.Event()
    handle = await fleet.fault(rebooting)
    await _when(lambda: _ran(rebooting, Step.REBOOT))
    waiting = await fleet.fault(next_one)
    await wait_for_phase(waiting, Phase.AWAITING_BUDGET)

    await handle.cancel()
    await _when(lambda: _took_a_cancel(handle))

    assert rebooting.cordoned, "not handed back while its reboot request is in flight"
    assert [p.permit_id.split("/")[0] for p in (await fleet.status()).state.held] == [handle.id]
    rebooting.reboot_held.set()
    assert (await handle.result()).phase is Phase.CANCELLED
    assert (await waiting.result()).phase is Phase.RESOLVED
    order = fleet.fleet.ended
    reboot, release = (
        order.index((rebooting.name, Step.REBOOT.value)),
        order.index((rebooting.name, Step.RELEASE.value)),
    )
    assert reboot < release < order.index((next_one.name, Step.QUARANTINE.value))
    assert not rebooting.cordoned


async def _ran(node: FakeNode, step: Step) -> bool:
    return step.value in node.steps


@pytest.mark.parametrize(
    ("repaired", "then"),
    [
        (RecommendedAction.RESTART_BM, RecommendedAction.REPLACE_VM),
    ],
    ids=["rebooted"],
)
async def test_a_fault_that_comes_while_the_permit_goes_back_changes_nothing(
    governed_live: MakeFleet, monkeypatch: pytest.MonkeyPatch, repaired: RecommendedAction, then: RecommendedAction
) -> None:
    """The guard of the permit's safety (RemediationWorkflow._return_permit_shielded): a fault
    signalled while the run's last task gives the permit back has that task's completion rejected,
    and the task run again ends the same way, acting on the node no more (its release, idempotent,
    may run again)."""
    returning, go = asyncio.Event(), asyncio.Event()
    steps_before: list[str] = []

    @implements(contracts.RETURN_PERMIT)
    async def held_once(give_back: PermitGiveBack) -> PermitGivenBack:
        given = await return_permit(give_back)
        if not returning.is_set():
            steps_before.extend(node.steps)
            returning.set()
            async with asyncio.timeout(60):
                await go.wait()
        return given

    monkeypatch.setattr(fake_activities, "return_permit", held_once)
    fleet = await governed_live(1, limits(max_concurrent=1, max_percent=100))
    [node] = nodes_of(fleet)
    handle = await fleet.fault(node, fault(node, repaired))
    await asyncio.wait_for(returning.wait(), timeout=60)

    await handle.signal(FAULT_SIGNAL.name, fault(node, then, xid=95))
    go.set()

    assert (await handle.result()).phase is Phase.RESOLVED
    assert set(node.steps[len(steps_before) :]) <= {Step.RELEASE.value}, "nothing acted on the node after the permit"
    assert not node.cordoned
    assert (await fleet.status()).state.held == ()


async def test_a_fault_in_the_last_task_of_a_run_resolved_by_a_gpu_reset_does_not_reboot_without_its_permit(
    governed_live: MakeFleet,
) -> None:
    """A GPU reset's ending reads the faults after its last step: a fault needing a reboot that
    came while a local step gave the permit back in the run's last task had that task rejected,
    and its retry rebooted the node without its permit. Such a run gives its permit back by a
    signal, in a task after the one that decided (RemediationWorkflow._permit_by_step)."""
    fleet = await governed_live(1, limits(max_concurrent=1, max_percent=100))
    [node] = nodes_of(fleet)
    node.release_held = asyncio.Event()
    handle = await fleet.fault(node, fault(node, RecommendedAction.COMPONENT_RESET))
    await asyncio.wait_for(node.release_reached.wait(), timeout=60)

    await handle.signal(FAULT_SIGNAL.name, fault(node, RecommendedAction.RESTART_VM, xid=95))
    node.release_held.set()

    assert (await handle.result()).phase is Phase.RESOLVED
    assert Step.REBOOT.value not in node.steps, "no reboot once the permit could have gone back"
    history = await handle.fetch_history()
    assert Step.RETURN_PERMIT not in steps(history)
    kinds = [event.event_type for event in history.events]
    assert kinds.count(EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED) == 1
    assert (await fleet.status()).state.held == ()


async def test_a_run_whose_governor_is_gone_completes_and_starts_no_other(governed: MakeFleet) -> None:
    fleet = await governed(1, limits(max_concurrent=1, max_percent=100))
    [node] = nodes_of(fleet)
    handle = await remediations.report_fault(fleet.client, fault(node), policy(approval=True), task_queue=fleet.queue)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    governor_run = fleet.client.get_workflow_handle(fleet.governor_id)
    await end_governor(governor_run)

    await handle.signal("approve", ApprovalSignal(approver="alice", reason="go"))

    assert (await handle.result()).phase is Phase.RESOLVED
    assert steps(await handle.fetch_history()).count(Step.RETURN_PERMIT) == 1
    assert (await governor_run.describe()).status is WorkflowExecutionStatus.TERMINATED, "not started again"


async def test_a_permit_given_back_twice_is_taken_back_once(time_skipping_env: WorkflowEnvironment) -> None:
    """The governor keeps permits by id (GovernorWorkflow.release): the step run again, its workflow
    task lost and replayed, frees no second permit. A governor of no fleet allows one at a time."""
    client = time_skipping_env.client
    async with lone_governor(time_skipping_env, "twice", running=True) as (handle, first):
        asks = [first, *(first.model_copy(update={"permit_id": f"{first.permit_id}-{n}"}) for n in (2, 3))]
        for ask in asks:
            await handle.signal(REQUEST_SIGNAL.name, ask)
        await _when(lambda: _holds(client, handle.id, [first.permit_id]))
        give_back = PermitGiveBack(governor_id=handle.id, returned=PermitReturn(permit_id=first.permit_id))

        answers = [await ActivityEnvironment(client).run(return_permit, give_back) for _ in range(2)]

        assert answers == [PermitGivenBack(governor_found=True)] * 2
        status = await _when(lambda: _holds(client, handle.id, [asks[1].permit_id]))
        assert status is not None
        assert [w.request.permit_id for w in status.state.waiting] == [asks[2].permit_id], "one permit freed, not two"


async def test_a_permit_given_back_to_a_governor_that_is_gone_is_no_error(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    give_back = PermitGiveBack(governor_id=f"governor-{uuid.uuid4().hex[:6]}", returned=PermitReturn(permit_id="x/1"))

    answer = await ActivityEnvironment(time_skipping_env.client).run(return_permit, give_back)

    assert answer == PermitGivenBack(governor_found=False)


async def _holds(client: Client, governor_id: str, permit_ids: list[str]) -> GovernorStatus | None:
    """The governor's status once it holds exactly these permits."""
    status = await governor.status(client, governor_id)
    return status if [p.permit_id for p in status.state.held] == permit_ids else None
