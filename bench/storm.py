"""A fault storm: half of a 1,500-node fleet reports a fatal XID at once, beside bare Temporal.

Every faulty node gets a full remediation (quarantine, drain, reboot, wait, verify, release) on a
fleet without workloads and with instant reboots. The storm runs twice, each time on a dev server of
its own: with the fleet governor handing out permits with no limit that binds, run as a large fleet
deploys it, in a worker process of its own (so what is measured is the cost of asking for them: the
permit round trip, and the quarantine rate beside the same storm with the governor switched off),
and without it. The baseline runs, with the same worker limits, as
many bare workflows, each running a no-op for each step a remediation ran, in its order: a local
activity for each of its local activities, an activity for each of its activities (its patch
markers are no steps). That ratio is what gpuheal's work and design cost beside the plain Temporal
way of running those steps.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from bench.baseline import BareWorkflow
from bench.measure import describe
from bench.stack import remediation_stack, worker_process
from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import PERMIT_SIGNAL
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.steps import Step
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from gpuheal_sim.demo.run import demo_policy

TARGET_RATE = 25.0
TARGET_RATIO = 1.5
TARGET_GOVERNED_RATIO = 0.8
_IN_FLIGHT = 100
# Storms with the governor and without it, one after the other.
PAIRS = 3


async def _all(count: int, start: Callable[[int], Awaitable[WorkflowHandle[Any, Any]]]) -> list[Any]:
    """Start workflow i for every i, at most _IN_FLIGHT starts at a time, then wait for all results.

    Only the starts are limited, as a fleet's agents each send one; the workflows all run at once.
    """
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(index: int) -> Any:
        async with gate:
            handle = await start(index)
        return await handle.result()

    return await asyncio.gather(*(one(i) for i in range(count)))


@dataclass(frozen=True, slots=True)
class StormRun:
    # Seconds from the first report to the last node cordoned, and to all back in service.
    last_cordon: float
    finished: float
    # The steps of one remediation, in order: True for a local activity, False for an activity.
    steps: list[bool]
    # Seconds from each remediation's ask for a permit to the governor's grant (none ungoverned) …
    permit_waits: list[float]
    # … and how many of the grants the asks collected themselves (the rest came as signals).
    collected: int


async def _remediations(
    server: DevServer, state: Path, nodes: int, faulty: int, *worker_args: str, name: str, governor_apart: bool = False
) -> StormRun:
    fleet_args = ("--nodes", str(nodes), "--reboot-seconds", "0", "--no-workloads")
    stack_of = remediation_stack(
        server, state / name, *fleet_args, worker_args=worker_args, governor_apart=governor_apart
    )
    async with stack_of as stack:
        width = max(3, len(str(nodes - 1)))  # as the simulator names its nodes
        names = [f"gpu-node-{i:0{width}d}" for i in range(0, nodes, max(1, nodes // faulty))][:faulty]
        policy = demo_policy(False)
        started = time.perf_counter()

        async def report(index: int) -> WorkflowHandle[Any, Any]:
            fault = Fault(node=names[index], action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
            return await remediations.report_fault(server.client, fault, policy, task_queue=stack.task_queue)

        results = await _all(len(names), report)
        finished = time.perf_counter() - started
        failed = [r for r in results if r.phase is not Phase.RESOLVED]
        if failed:
            raise RuntimeError(f"{len(failed)} remediations did not resolve, e.g. {failed[0].reason}")
        await stack.cordons.wait_for(len(names))
        last_cordon = max(stack.cordons.cordoned_at.values()) - started
        histories = await _histories(server.client, names)
    steps = [_is_local(e) for e in histories[0].events if _is_step(e)]
    granted = [(h, r.permit) for h, r in zip(histories, results, strict=True) if r.permit is not None]
    if granted and len(granted) != len(names):
        raise RuntimeError(f"only {len(granted)} of {len(names)} remediations received a permit")
    waits = [(permit.granted_at - _asked_at(h)).total_seconds() for h, permit in granted]
    collected = sum(1 for h, _ in granted if not any(_is_permit(e) for e in h.events))
    return StormRun(last_cordon, finished, steps, waits, collected)


async def _on_own_server(storm: Callable[[DevServer], Awaitable[StormRun]]) -> StormRun:
    """Run `storm` on a fresh in-memory dev server."""
    own = await start_dev_server()
    try:
        return await storm(own)
    finally:
        await own.shutdown()


async def _histories(client: Client, nodes: list[str]) -> list[WorkflowHistory]:
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(node: str) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(workflow_id_for(node)).fetch_history()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


def _is_step(event: HistoryEvent) -> bool:
    return event.HasField("activity_task_scheduled_event_attributes") or _is_local(event)


def _is_local(event: HistoryEvent) -> bool:
    """A local activity's marker (not a patch's)."""
    marker = event.marker_recorded_event_attributes
    return event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_local_activity"


def _asked_at(history: WorkflowHistory) -> datetime:
    """When the remediation first asked for its permit: the start of the workflow task that ran the
    ask, which is the `asked_at` it sent the governor (the workflow's clock)."""
    task_started: datetime | None = None
    for event in history.events:
        if event.HasField("workflow_task_started_event_attributes"):
            task_started = event.event_time.ToDatetime(UTC)
        elif _is_ask(event) and task_started is not None:
            return task_started
    raise RuntimeError(f"{history.workflow_id} never asked for a permit")


def _is_ask(event: HistoryEvent) -> bool:
    """The marker of an ask's local activity (one that waits for its grant, or not)."""
    details = event.marker_recorded_event_attributes.details
    if not event.HasField("marker_recorded_event_attributes") or "data" not in details:
        return False
    step = json.loads(details["data"].payloads[0].data).get("activity_type")
    return step in (Step.ASK_PERMIT.value, Step.COLLECT_PERMIT.value, Step.COLLECT_UNLESS_HELD.value)


def _is_permit(event: HistoryEvent) -> bool:
    signaled = event.workflow_execution_signaled_event_attributes
    return event.HasField("workflow_execution_signaled_event_attributes") and signaled.signal_name == PERMIT_SIGNAL.name


async def _baseline(server: DevServer, count: int, steps: list[bool]) -> float:
    task_queue = f"bench-bare-{uuid.uuid4()}"
    client: Client = server.client
    async with worker_process("-m", "bench.baseline_worker", "--address", server.address, "--task-queue", task_queue):
        started = time.perf_counter()

        async def bare(index: int) -> WorkflowHandle[Any, Any]:
            return await client.start_workflow(
                BareWorkflow.run, steps, id=f"bare-{task_queue}-{index}", task_queue=task_queue
            )

        await _all(count, bare)
        return time.perf_counter() - started


async def run(server: DevServer, state: Path, nodes: int, faulty: int) -> dict[str, float]:
    print(f"storm: {faulty} of {nodes} nodes faulted at once; without the governor, then with it, {PAIRS} times")
    # The governor hands out permits to all at once: its limits are not what this storm measures,
    # the cost of asking for them is.
    unlimited = ("--max-remediations", "100000", "--max-remediating-percent", "100")
    breaker = ("--breaker-share", "1", "--breaker-at-least", "100000")

    def storm(governed: bool, index: int) -> Callable[[DevServer], Awaitable[StormRun]]:
        args = (*unlimited, *breaker) if governed else ("--no-fleet-governor",)
        name = f"{'governed' if governed else 'ungoverned'}-{index}"
        return lambda own: _remediations(own, state, nodes, faulty, *args, name=name, governor_apart=governed)

    pairs: list[tuple[StormRun, StormRun]] = []
    for index in range(1, PAIRS + 1):
        # Each storm on a dev server of its own: the one run second does not inherit the first's
        # workflows (on one server, the governed storm ran behind 750 finished remediations).
        off = await _on_own_server(storm(False, index))
        on = await _on_own_server(storm(True, index))
        pairs.append((off, on))
        print(
            f"  pair {index}: all cordoned after {on.last_cordon:6.2f} s, governor off {off.last_cordon:6.2f} s: "
            f"on / off {off.last_cordon / on.last_cordon:.2f} ×",
            flush=True,
        )
    # The pair of the median ratio speaks for the storm: on two shared cores one storm's time swings
    # by a fifth from run to run.
    pairs.sort(key=lambda pair: pair[0].last_cordon / pair[1].last_cordon)
    ungoverned, governed = pairs[len(pairs) // 2]
    rate, rate_off = faulty / governed.last_cordon, faulty / ungoverned.last_cordon
    print(
        f"  quarantined            {rate:8.1f} nodes/s   (all {faulty} cordoned after {governed.last_cordon:.2f} s; "
        f"target ≥ {TARGET_RATE:.0f}/s, NVSentinel 2.5/s; the median pair)"
    )
    print(f"  … governor off         {rate_off:8.1f} nodes/s   (cordoned after {ungoverned.last_cordon:.2f} s)")
    print(
        f"  governor on / off      {rate / rate_off:8.2f} ×     (median of {PAIRS}; target ≥ {TARGET_GOVERNED_RATIO})"
    )
    print(f"  ask → permit granted   {describe(governed.permit_waits)}")
    print(f"  grants collected by the ask (not signalled): {governed.collected} of {faulty}")
    local = sum(governed.steps)
    kinds = f"{local} local activities and {len(governed.steps) - local} activities"
    print(f"  all back in service    {governed.finished:8.2f} s   ({kinds} per remediation)", flush=True)
    bare = await _baseline(server, faulty, governed.steps)
    ratio = governed.finished / bare
    print(f"  bare Temporal baseline {bare:8.2f} s   ({faulty} workflows × as many no-ops of each kind)")
    print(f"  ratio                  {ratio:8.2f} ×     (target ≤ {TARGET_RATIO})")
    return {"storm_rate": rate, "storm_governed_ratio": rate / rate_off, "storm_ratio": ratio}
