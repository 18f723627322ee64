"""A worker killed with SIGKILL mid-remediation: a new worker finishes, the node reboots exactly once.

The workers here are separate `gpuheal worker` processes, so SIGKILL is a real crash: no graceful
shutdown, no activity completion, nothing flushed.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from gpuheal.control import governor
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationStatus
from tests.integration.conftest import StackFactory, WorkerFactory, busy_trainer, eventually, phase_of
from tests.integration.test_remediation import NODE, gpuheal_marks


async def reboot_attempts(handle: Any) -> int:
    """The attempt number of the reboot step that completed, from the workflow's history."""
    history = await handle.fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "request_reboot"
    }
    [started] = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]
    return int(started.attempt)


async def kill(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


async def test_worker_killed_during_the_drain(make_stack: StackFactory, spawn_worker: WorkerFactory) -> None:
    stack = await make_stack(in_process_worker=False, workloads=[busy_trainer()])
    await stack.hold_trainer_budget()
    first = await spawn_worker(stack)
    handle = await stack.report(NODE)

    async def blocked() -> bool:
        status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
        return status.phase is Phase.DRAINING and status.drain is not None and bool(status.drain.blocked)

    await eventually(blocked, "the drain held up by the disruption budget")
    await kill(first)
    await spawn_worker(stack)
    await stack.free_trainer_budget()

    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert stack.cluster.reboot_requests(NODE) == 1
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()
    assert await phase_of(handle) == "Resolved"


@pytest.mark.parametrize(
    "reboot_seconds",
    [
        pytest.param(1.0, id="retry-finds-the-node-rebooted"),
        pytest.param(12.0, id="retry-asks-the-provider-while-it-reboots"),
    ],
)
async def test_worker_killed_during_the_reboot_call(
    make_stack: StackFactory, spawn_worker: WorkerFactory, reboot_seconds: float
) -> None:
    # The simulator records the reboot at once and answers 3 s later, so the worker dies mid-call,
    # after the provider acted and before the activity could report it.
    stack = await make_stack(
        in_process_worker=False, workloads=False, reboot_seconds=reboot_seconds, reboot_reply_seconds=3.0
    )
    first = await spawn_worker(stack)
    handle = await stack.report(NODE)

    async def reboot_requested() -> bool:
        return stack.cluster.reboot_requests(NODE) == 1

    await eventually(reboot_requested, "the reboot request reaching the provider")
    await kill(first)
    await spawn_worker(stack)

    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    assert await reboot_attempts(handle) == 2, "the reboot step was cut off and ran again on the new worker"
    assert stack.cluster.reboot_requests(NODE) == 1, "the retried step did not reboot the node again"
    assert stack.cluster.reboots_completed(NODE) == 1
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp", "nebius", "redfish"])
async def test_worker_killed_right_after_the_cloud_call(
    make_stack: StackFactory, spawn_worker: WorkerFactory, cloud: str
) -> None:
    # The cloud records the reboot and answers 3 s later; the node stays down well past the retry,
    # so the new worker finds its record, an unchanged bootID and a provider that either confirms the
    # request or keeps no record: either way it must not call again.
    stack = await make_stack(
        in_process_worker=False, workloads=False, cloud=cloud, reboot_seconds=8.0, reboot_reply_seconds=3.0
    )
    first = await spawn_worker(stack)
    handle = await stack.report(NODE)

    async def reboot_requested() -> bool:
        return stack.cluster.reboot_requests(NODE) == 1

    await eventually(reboot_requested, f"the reboot request reaching {cloud}")
    await kill(first)
    await spawn_worker(stack)

    status: RemediationStatus = await handle.result()

    assert status.phase is Phase.RESOLVED, status.reason
    # Cut off at least once; on a busy machine the new worker's first attempt may also outlast the
    # test's 5 s step timeout (google.cloud.compute_v1 alone imports in ~7 s), which changes nothing
    # below: however many attempts, the cloud is asked once.
    assert await reboot_attempts(handle) >= 2, "the reboot step was cut off and ran again on the new worker"
    assert stack.cluster.reboot_requests(NODE) == 1, f"{cloud} was asked to reboot the node again"
    assert stack.cluster.reboots_completed(NODE) == 1
    [step] = status.repair
    assert step.startswith(f"reboot via {cloud}: reboot already requested at "), step


async def test_permits_are_neither_lost_nor_doubled_when_the_worker_is_killed_while_many_ask(
    make_stack: StackFactory, spawn_worker: WorkerFactory
) -> None:
    """Eight faults at once under a budget of two; the worker dies while permits are held and asked
    for. The budget holds throughout (sampled from the cluster's own nodes), every remediation ends
    Resolved holding one permit of its own, and the governor is left holding none."""
    stack = await make_stack(in_process_worker=False, workloads=False, nodes=8)
    limits = ("--max-remediations", "2", "--max-remediating-percent", "100", "--breaker-at-least", "100")
    first = await spawn_worker(stack, *limits)
    most_cordoned = 0
    sampling = True

    async def sample() -> None:
        nonlocal most_cordoned
        while sampling:
            nodes = (await stack.core.list_node()).items
            most_cordoned = max(most_cordoned, sum(bool(n.spec and n.spec.unschedulable) for n in nodes))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    handles = [await stack.report(node) for node in stack.cluster.node_names()]
    queue = stack.task_queue

    async def busy() -> bool:
        state = (await governor.status(stack.server.client, governor_id_for(queue))).state
        return len(state.held) == 2 and len(state.waiting) >= 1

    await eventually(busy, "two permits held and more asked for", timeout=60)
    await kill(first)
    await spawn_worker(stack, *limits)
    results: list[RemediationStatus] = [await asyncio.wait_for(h.result(), 180) for h in handles]
    sampling = False
    await sampler

    assert [r.phase for r in results] == [Phase.RESOLVED] * 8, [r.reason for r in results]
    assert most_cordoned <= 2, f"{most_cordoned} nodes were out of service at once"
    permits = [r.permit.permit_id for r in results if r.permit is not None]
    assert len(permits) == 8 and len(set(permits)) == 8, "one permit each, none shared"
    final = await governor.status(stack.server.client, governor_id_for(queue))
    assert (final.state.held, final.state.waiting) == ((), ()), "every permit came back"
    assert all(stack.cluster.reboot_requests(node) == 1 for node in stack.cluster.node_names())
