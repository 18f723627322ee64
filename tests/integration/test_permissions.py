"""The chart's permissions end to end: the worker and the agents use only what it grants, and an
agent's token cannot touch another node.

The fleet enforces the RBAC and the ValidatingAdmissionPolicy the Helm chart renders; the worker and
the agents call it with their own service accounts' tokens (see conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client as k8s
from kubernetes.aio.client.exceptions import ApiException

from gpuheal.domain.marks import GPU_HEALTHY_CONDITION
from gpuheal.domain.phases import Phase
from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import SimulatedCluster, service_account_username
from tests import permissions
from tests.chart import service_account
from tests.integration.conftest import StackFactory, eventually
from tests.integration.test_agent_remediation import node_agent, remediate_through_the_agent
from tests.integration.test_remediation import NODE

OTHER_NODE = "gpu-node-002"
STRATEGIC = "application/strategic-merge-patch+json"


def used(cluster: SimulatedCluster, component: str) -> set[permissions.Permission]:
    """What the chart's `component` account did on `cluster`, as (verb, group, resource-or-path)."""
    user = service_account_username(*service_account(component))
    return {(a.verb, a.group, a.resource or a.path) for a in cluster.accesses(user)}


async def test_a_remediation_uses_only_what_the_chart_grants(make_stack: StackFactory, tmp_path: Path) -> None:
    """Every request the worker and the agent made in a whole remediation is in tests/permissions.py."""
    stack = await make_stack()
    async with node_agent(stack, tmp_path, stack.server.address) as (agent, kernel_log):
        status = await remediate_through_the_agent(agent, kernel_log, stack, 79)

    assert status.phase is Phase.RESOLVED, status.reason
    worker, node_agent_used = used(stack.cluster, "worker"), used(stack.cluster, "agent")
    assert worker <= permissions.WORKER, worker - permissions.WORKER
    assert node_agent_used <= permissions.AGENT, node_agent_used - permissions.AGENT
    # The run did exercise them: the node read and patched, its pods listed and evicted ...
    assert {
        ("get", "", "nodes"),
        ("patch", "", "nodes"),
        ("list", "", "pods"),
        ("create", "", "pods/eviction"),
    } <= worker
    # ... and the agent followed its node and wrote its GpuHealthy condition.
    assert {("list", "", "nodes"), ("watch", "", "nodes"), ("patch", "", "nodes/status")} <= node_agent_used
    assert stack.cluster.denials() == [], "no request of theirs was refused"


async def test_another_nodes_agent_cannot_pass_a_rebooting_node_off_as_healthy(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """While NODE reboots, the agent of another node tries to mark it Ready with a new boot ID and
    healthy GPUs; the API server refuses each write (403) and the remediation goes on as if nothing
    happened, waiting for the kubelet's own Ready and boot ID."""
    stack = await make_stack(workloads=False, reboot_seconds=3.0)
    boot_before = (await stack.node(NODE)).status.node_info.boot_id
    handle = await stack.report(NODE)

    async def rebooting() -> bool:
        return bool(stack.cluster.node_state(NODE)["rebooting"])

    await eventually(rebooting, f"{NODE} rebooting")
    forged = "00000000-0000-0000-0000-00000000f0f0"
    writes: list[dict[str, Any]] = [
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "forged"}]
            }
        },
        {"status": {"nodeInfo": {"bootID": forged}}},
        {
            "status": {
                "conditions": [{"type": GPU_HEALTHY_CONDITION, "status": "True", "reason": "Forged", "message": "x"}]
            }
        },
    ]
    api = await connect(stack.agent_kubeconfig(OTHER_NODE))
    try:
        core = k8s.CoreV1Api(api)
        for write in writes:
            with pytest.raises(ApiException) as refused:
                await core.patch_node_status(NODE, write, _content_type=STRATEGIC)
            assert refused.value.status == 403
            message = json.loads(refused.value.body or "{}")["message"]
            assert f"this user running on node '{OTHER_NODE}' may not modify node '{NODE}'" in message
        assert stack.cluster.node_state(NODE)["rebooting"], "the writes were refused while the node was down"
    finally:
        await api.close()  # type: ignore[no-untyped-call]

    status = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason
    assert stack.cluster.reboot_requests(NODE) == 1
    node = await stack.node(NODE)
    assert node.status.node_info.boot_id == stack.cluster.node_state(NODE)["bootId"] != boot_before
    assert node.status.node_info.boot_id != forged
    assert all(c.reason != "Forged" and c.message != "forged" for c in node.status.conditions)
