"""A fault storm: half of a 1,500-node fleet reports a fatal XID at once, beside bare Temporal.

Every faulty node gets a full remediation (quarantine, drain, reboot, wait, verify, release) on a
fleet without workloads and with instant reboots, with no budget limiting concurrency (the fleet governor grants every permit at once). The baseline
runs, on the same dev server and with the same worker limits, as many bare workflows with as many
no-op activities as a remediation ran steps (its activities plus its local activities), so the ratio
is what gpuheal's work and design cost beside the plain Temporal way of running those steps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.baseline import BareWorkflow
from bench.stack import remediation_stack, worker_process
from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.demo.run import demo_policy

TARGET_RATE = 25.0
TARGET_RATIO = 1.5
_IN_FLIGHT = 100


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


async def _remediations(server: DevServer, state: Path, nodes: int, faulty: int) -> tuple[float, float, int]:
    fleet_args = ("--nodes", str(nodes), "--reboot-seconds", "0", "--no-workloads")
    # The governor hands out permits to all at once: its limits are not what this storm measures.
    unlimited = ("--max-remediations", "100000", "--max-remediating-percent", "100")
    breaker = ("--breaker-share", "1", "--breaker-at-least", "100000")
    async with remediation_stack(server, state / "storm", *fleet_args, worker_args=(*unlimited, *breaker)) as stack:
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
        history = await server.client.get_workflow_handle(f"remediate-{names[0]}").fetch_history()
        # Steps of one remediation: activities, and local activities (recorded as markers).
        activities = sum(
            1
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes") or e.HasField("marker_recorded_event_attributes")
        )
    return last_cordon, finished, activities


async def _baseline(server: DevServer, count: int, activities: int) -> float:
    task_queue = f"bench-bare-{uuid.uuid4()}"
    client: Client = server.client
    async with worker_process("-m", "bench.baseline_worker", "--address", server.address, "--task-queue", task_queue):
        started = time.perf_counter()

        async def bare(index: int) -> WorkflowHandle[Any, Any]:
            return await client.start_workflow(
                BareWorkflow.run, activities, id=f"bare-{task_queue}-{index}", task_queue=task_queue
            )

        await _all(count, bare)
        return time.perf_counter() - started


async def run(server: DevServer, state: Path, nodes: int, faulty: int) -> dict[str, float]:
    last_cordon, finished, activities = await _remediations(server, state, nodes, faulty)
    rate = faulty / last_cordon
    print(f"storm: {faulty} of {nodes} nodes faulted at once ({activities} activities per remediation)")
    print(
        f"  quarantined            {rate:8.1f} nodes/s   (all {faulty} cordoned after {last_cordon:.2f} s; "
        f"target ≥ {TARGET_RATE:.0f}/s, NVSentinel 2.5/s)"
    )
    print(f"  all back in service    {finished:8.2f} s", flush=True)
    bare = await _baseline(server, faulty, activities)
    ratio = finished / bare
    print(f"  bare Temporal baseline {bare:8.2f} s   ({faulty} workflows × {activities} no-op activities)")
    print(f"  ratio                  {ratio:8.2f} ×     (target ≤ {TARGET_RATIO})")
    return {"storm_rate": rate, "storm_ratio": ratio}
