"""Remediations on a fleet whose node lifecycle controller, kubelets and GPU agents behave as on a cluster.

The dev server and the worker are real; the simulated fleet's node lifecycle controller taints nodes
(pkg/controller/nodelifecycle/node_lifecycle_controller.go), its kubelets post Ready and bootID and
its GPU agents post GpuHealthy, each on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta
from typing import Any

from gpuheal.control import remediations
from gpuheal.domain import marks
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationStatus
from gpuheal_sim.simulator import SimulatedCluster
from tests.integration.conftest import Stack, StackFactory, eventually, fast_policy, settled

NODE = "gpu-node-001"
MERGE = "application/merge-patch+json"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def taints(cluster: SimulatedCluster) -> list[dict[str, Any]]:
    node = cluster.get_object("nodes", NODE)
    assert node is not None
    return list(node["spec"].get("taints", []))


async def report_without_touching_the_gpus(stack: Stack, verify_timeout: timedelta | None = None) -> RemediationStatus:
    """A fault reported straight to Temporal: the simulated GPUs stay healthy, GpuHealthy stays True."""
    fault = Fault(node=NODE, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    policy = fast_policy()
    if verify_timeout is not None:
        repair = policy.repair.model_copy(update={"verify_timeout": verify_timeout})
        policy = policy.model_copy(update={"repair": repair})
    handle = await remediations.report_fault(stack.server.client, fault, policy, task_queue=stack.task_queue)
    return await settled(handle)


async def test_gpu_health_reported_before_the_reboot_does_not_resolve(make_stack: StackFactory) -> None:
    """The node's agent never reports after the reboot: its GpuHealthy=True from the old boot lingers
    on a node that is Ready on a new boot, and must not count as the GPUs proven healthy."""
    stack = await make_stack(workloads=False, gpu_agent_start_seconds=3600)
    before = await stack.node(NODE)
    boot_before = before.status.node_info.boot_id
    assert {c.type: c.status for c in before.status.conditions}["GpuHealthy"] == "True"

    status = await report_without_touching_the_gpus(stack, verify_timeout=timedelta(seconds=3))

    assert status.phase is Phase.ESCALATED, "a stale GpuHealthy=True resolved the remediation"
    assert f"GpuHealthy=True was reported on boot {boot_before}, before the reboot" in status.reason
    node = await stack.node(NODE)
    assert node.status.node_info.boot_id != boot_before
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.spec.unschedulable, "an escalated node stays cordoned for a person"
    assert marks.ESCALATION_ANNOTATION in (node.metadata.annotations or {})


async def test_lifecycle_controller_taints_come_back_byte_identical_across_a_remediation(
    make_stack: StackFactory,
) -> None:
    """A node cordoned by a person carries the controller's unschedulable taint (with its timeAdded);
    the reboot outlasts the grace, so unreachable and then not-ready taints come and go meanwhile.
    After the remediation every taint gpuheal does not own is exactly as it was."""
    stack = await make_stack(
        workloads=False, node_monitor_grace_seconds=0.5, reboot_seconds=1.5, kubelet_ready_seconds=0.5
    )
    operator = {"key": "example.com/maintenance", "value": "rack-7", "effect": "PreferNoSchedule"}
    await stack.core.patch_node(NODE, {"spec": {"taints": [operator], "unschedulable": True}}, _content_type=MERGE)

    async def cordon_tainted() -> bool:
        return UNSCHEDULABLE in {t["key"] for t in taints(stack.cluster)}

    await eventually(cordon_tainted, "the controller's unschedulable taint")
    before = json.dumps(taints(stack.cluster))
    await asyncio.sleep(1.1)  # a taint dropped and added again would carry another timeAdded
    seen: set[tuple[str, str]] = set()

    async def watch_taints() -> None:
        while True:
            seen.update((t["key"], t["effect"]) for t in taints(stack.cluster))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_taints())
    try:
        status = await report_without_touching_the_gpus(stack)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    assert status.phase is Phase.RESOLVED, status.reason
    assert stack.cluster.reboot_requests(NODE) == 1
    assert {
        (marks.QUARANTINE_TAINT_KEY, "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    } <= seen, "the reboot outlasted the grace: the controller tainted the node meanwhile"

    async def as_before() -> bool:
        return json.dumps(taints(stack.cluster)) == before

    await eventually(as_before, "the node's taints exactly as before the remediation", timeout=5)
    node = await stack.node(NODE)
    assert node.spec.unschedulable, "cordoned before, cordoned after"
