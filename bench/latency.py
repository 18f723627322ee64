"""Fault to cordon and fault to back in service on the demo fleet, one remediation at a time.

The fleet is the demo's (4 nodes × 8 GPUs, a Deployment with a PodDisruptionBudget, a DaemonSet, a
Job, mirror pods) with reboots that take no time and pods that exit 0.1 s after SIGTERM, so the
figures are gpuheal's and Temporal's own cost. Cordon time is when the node watch shows the taint.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.measure import describe, percentile, verdict
from bench.stack import remediation_stack
from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.demo.run import demo_policy
from gpuheal_sim.simulator.fleet import FleetConfig, default_workloads

TARGET_CORDON_P99 = 0.250
TARGET_CYCLE = 2.0
# The worker's governor on, with limits that do not bind: at its defaults every run counts toward
# the breaker (5 quarantines within an hour trip it), and the sixth waits for a person.
UNBOUND_GOVERNOR = (
    *("--max-remediations", "100000", "--max-remediating-percent", "100"),
    *("--breaker-share", "1", "--breaker-at-least", "100000"),
)


@dataclass(frozen=True, slots=True)
class Latencies:
    """Seconds from each report to its node's cordon and to its remediation's end, and per phase."""

    to_cordon: list[float]
    to_service: list[float]
    phases: dict[str, list[float]]


def _fleet_config(path: Path) -> Path:
    quick = [
        w.model_copy(update={"shutdown_seconds": 0.1}) if w.kind == "Deployment" else w
        for w in default_workloads(4)
        if w.kind != "Job"
    ]
    # A node back from its reboot is Ready and reports healthy GPUs at once (the simulator's own
    # waits for the kubelet and the GPU agent would add 1.5 s of its own to every cycle).
    config = FleetConfig(
        nodes=4,
        gpus_per_node=8,
        reboot_seconds=0,
        kubelet_ready_seconds=0,
        gpu_agent_start_seconds=0,
        pod_start_seconds=0.05,
        workloads=quick,
    )
    path.write_text(config.model_dump_json())
    return path


async def run(server: DevServer, state: Path, runs: int) -> Latencies:
    config = _fleet_config(state / "latency-fleet.json")
    stack_of = remediation_stack(server, state / "latency", "--config", str(config), worker_args=UNBOUND_GOVERNOR)
    async with stack_of as stack:
        nodes = [f"gpu-node-{i:03d}" for i in range(4)]
        to_cordon: list[float] = []
        to_service: list[float] = []
        phases: dict[str, list[float]] = {}
        for index in range(runs):
            node = nodes[index % len(nodes)]
            stack.cordons.forget(node)
            fault = Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
            started = time.perf_counter()
            handle = await remediations.report_fault(
                server.client, fault, demo_policy(False), task_queue=stack.task_queue
            )
            status = await handle.result()
            to_service.append(time.perf_counter() - started)
            if status.phase is not Phase.RESOLVED:
                raise RuntimeError(f"run {index} on {node} ended {status.phase.value}: {status.reason}")
            to_cordon.append(stack.cordons.cordoned_at[node] - started)
            for entry, following in zip(status.history, status.history[1:], strict=False):
                seconds = (following.entered_at - entry.entered_at).total_seconds()
                phases.setdefault(entry.phase.value, []).append(seconds)
    print(f"fault → cordon           {describe(to_cordon)}   (target p99 < {TARGET_CORDON_P99 * 1000:.0f} ms)")
    print(f"fault → back in service  {describe(to_service)}   (target p99 < {TARGET_CYCLE:.1f} s)")
    medians = ", ".join(f"{name} {percentile(values, 0.5) * 1000:.0f}" for name, values in phases.items())
    print(f"  median ms per phase: {medians}")
    cordon_p99, cycle_p99 = percentile(to_cordon, 0.99), percentile(to_service, 0.99)
    verdict(
        "fault-to-cordon",
        cordon_p99 < TARGET_CORDON_P99,
        f"p99 {cordon_p99 * 1000:.0f} ms on the demo fleet",
        f"< {TARGET_CORDON_P99 * 1000:.0f} ms",
    )
    verdict("fault-to-service", cycle_p99 < TARGET_CYCLE, f"p99 {cycle_p99:.2f} s", f"< {TARGET_CYCLE:.0f} s")
    return Latencies(to_cordon, to_service, phases)
