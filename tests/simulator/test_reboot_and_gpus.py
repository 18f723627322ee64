"""Reboots, fake GPU faults, the GpuHealthy condition and the /sim/v1 control API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio import client

from gpuheal.domain.gpu_check import GPU_CHECK, GpuCheckOrder, GpuCheckReport
from gpuheal.domain.gpu_health import read_stamp
from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.gpus import gpu_uuid

from .conftest import aio_api, eventually, fast_config


def _conditions(node: Any) -> dict[str, Any]:
    return {c.type: c for c in node.status.conditions}


async def _post(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with session.post(url, **kwargs) as response:
            return response.status, await response.json()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_reboot_goes_not_ready_then_ready_with_a_new_boot_id(tmp_path: Path) -> None:
    # A grace shorter than the reboot, so the node lifecycle controller notices the silent kubelet.
    config = fast_config(node_monitor_grace_seconds=0.2, reboot_seconds=1.0)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        await _reboot_goes_not_ready_then_ready(cluster, client.CoreV1Api(api))


async def _reboot_goes_not_ready_then_ready(cluster: SimulatedCluster, core: Any) -> None:
    node = "gpu-node-001"
    boot = (await core.read_node(node)).status.node_info.boot_id
    status, receipt = await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/reboot", {"requestId": "r-1"})
    assert status == 202
    assert receipt["node"] == node and receipt["rebootRequests"] == 1 and receipt["requestedAt"].endswith("Z")

    async def unreachable() -> Any:
        current = await core.read_node(node)
        return current if current.spec.taints and len(current.spec.taints) == 2 else None

    down = await eventually(unreachable, timeout=5)
    ready = _conditions(down)["Ready"]
    assert (ready.status, ready.reason) == ("Unknown", "NodeStatusUnknown")
    assert ready.message == "Kubelet stopped posting node status."
    assert {t.key for t in down.spec.taints} == {"node.kubernetes.io/unreachable"}
    trainer = (await core.list_namespaced_pod("ml", field_selector=f"spec.nodeName={node}")).items[0]
    assert {c.type: c.status for c in trainer.status.conditions}["Ready"] == "False"
    # The same requestId again is not a second request; a new one during the reboot is counted only.
    _, again = await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/reboot", {"requestId": "r-1"})
    assert again["duplicate"] is True and again["rebootRequests"] == 1
    _, during = await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/reboot")
    assert during["rebootRequests"] == 2 and during["alreadyRebooting"] is True

    async def back() -> Any:
        current = await core.read_node(node)
        return current if _conditions(current)["Ready"].status == "True" else None

    up = await eventually(back, timeout=5)
    assert up.status.node_info.boot_id != boot
    assert _conditions(up)["Ready"].reason == "KubeletReady"
    assert up.spec.taints is None
    _, truth = await _get(f"{cluster.control_url}/sim/v1/nodes/{node}")
    assert truth["rebootRequests"] == 2 and truth["rebootsCompleted"] == 1
    assert truth["bootId"] == up.status.node_info.boot_id and truth["ready"] is True
    assert truth["lastRebootRequestAt"] == during["requestedAt"]
    assert cluster.reboot_requests(node) == 2 and cluster.reboots_completed(node) == 1

    async def restarted() -> Any:
        pod = await core.read_namespaced_pod(trainer.metadata.name, "ml")
        ready = {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        return pod if ready else None

    pod = await eventually(restarted, timeout=5)
    assert pod.status.container_statuses[0].restart_count == 1
    events = await core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}")
    assert {e.reason for e in events.items} >= {"NodeNotReady", "Rebooted", "NodeReady"}


async def test_fault_sets_gpu_healthy_false_and_reboot_clears_it(cluster: SimulatedCluster, core: Any) -> None:
    node = "gpu-node-002"
    status, result = await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/faults", {"xid": 79, "gpu": 3})
    assert status == 201
    assert result["gpu"]["uuid"] == gpu_uuid(node, 3) and result["gpu"]["pci"] == "0000:5D:00.0"
    assert result["gpu"]["healthy"] is False and result["gpuHealthy"] is False
    faulty = await core.read_node(node)
    cond = _conditions(faulty)["GpuHealthy"]
    assert (cond.status, cond.reason) == ("False", "GpuFault")
    assert "XID 79" in cond.message and gpu_uuid(node, 3) in cond.message
    assert faulty.status.allocatable["nvidia.com/gpu"] == "7"
    _, truth = await _get(f"{cluster.control_url}/sim/v1/nodes/{node}")
    assert [g["xids"] for g in truth["gpus"]][3] == [79]
    cluster.request_reboot(node)

    async def healed() -> Any:
        current = await core.read_node(node)
        conds = _conditions(current)
        return current if conds["Ready"].status == "True" and conds["GpuHealthy"].status == "True" else None

    healthy = await eventually(healed, timeout=5)
    assert _conditions(healthy)["GpuHealthy"].reason == "GpusHealthy"
    assert healthy.status.allocatable["nvidia.com/gpu"] == "8"


async def test_fault_that_survives_reboot(tmp_path: Path) -> None:
    async with (
        SimulatedCluster(fast_config(nodes=1, workloads=False), state_dir=tmp_path) as cluster,
        await aio_api(cluster) as api,
    ):
        core: Any = client.CoreV1Api(api)
        node = "gpu-node-000"
        uuid = gpu_uuid(node, 5)
        status, _ = await _post(
            f"{cluster.control_url}/sim/v1/nodes/{node}/faults", {"xid": 48, "gpu": uuid, "survivesReboot": True}
        )
        assert status == 201
        cluster.inject_fault(node, 31, 1)
        boot = (await core.read_node(node)).status.node_info.boot_id
        cluster.request_reboot(node)

        async def rebooted() -> Any:
            current = await core.read_node(node)
            return (
                current
                if current.status.node_info.boot_id != boot and _conditions(current)["Ready"].status == "True"
                else None
            )

        after = await eventually(rebooted, timeout=5)

        async def reported() -> Any:
            # The GPU agent reports once it has started again on the new boot.
            cond = _conditions(await core.read_node(node))["GpuHealthy"]
            return cond if read_stamp(cond.message)[1] == after.status.node_info.boot_id else None

        cond = await eventually(reported, timeout=5)
        assert cond.status == "False" and "XID 48" in cond.message and "XID 31" not in cond.message
        cluster.clear_faults(node)
        assert _conditions(await core.read_node(node))["GpuHealthy"].status == "True"


async def test_config_option_keeps_every_fault_over_reboots(tmp_path: Path) -> None:
    config = fast_config(nodes=1, workloads=False, fault_survives_reboot=True)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster:
        cluster.inject_fault("gpu-node-000", 79, 0)
        cluster.request_reboot("gpu-node-000")

        async def done() -> bool:
            return cluster.reboots_completed("gpu-node-000") == 1

        await eventually(done, timeout=5)
        assert cluster.node_state("gpu-node-000")["gpus"][0]["healthy"] is False


async def test_control_api_errors(cluster: SimulatedCluster) -> None:
    base = f"{cluster.control_url}/sim/v1/nodes"
    status, body = await _post(f"{base}/nope/reboot")
    assert status == 404 and "nope" in body["error"]
    status, body = await _get(f"{base}/nope")
    assert status == 404 and "error" in body
    status, body = await _post(f"{base}/nope/faults", {"xid": 79, "gpu": 0})
    assert status == 404
    status, body = await _post(f"{base}/gpu-node-000/faults", {"xid": "79", "gpu": 0})
    assert (status, body["field"]) == (400, "xid")
    status, body = await _post(f"{base}/gpu-node-000/faults", {"xid": 79, "gpu": 8})
    assert (status, body["field"]) == (400, "gpu")
    status, body = await _post(f"{base}/gpu-node-000/faults", {"xid": 79, "gpu": True})
    assert (status, body["field"]) == (400, "gpu")
    status, body = await _post(f"{base}/gpu-node-000/reboot", {"requestId": 7})
    assert (status, body["field"]) == (400, "requestId")
    status, body = await _post(f"{base}/gpu-node-000/faults", raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]
    assert cluster.reboot_requests("gpu-node-000") == 0, "a rejected request changes nothing"
    status, body = await _get(f"{cluster.control_url}/sim/v1/nodes")
    assert status == 200 and body["nodes"][0]["name"] == "gpu-node-000"


async def test_slow_reboot_reply_records_the_request_before_answering(tmp_path: Path) -> None:
    config = fast_config(nodes=1, workloads=False, reboot_reply_seconds=1.0)
    async with SimulatedCluster(config, state_dir=tmp_path) as slow:
        reply = asyncio.create_task(_post(f"{slow.control_url}/sim/v1/nodes/gpu-node-000/reboot"))
        await asyncio.sleep(0.3)
        assert not reply.done(), "the answer is held back"
        assert slow.reboot_requests("gpu-node-000") == 1, "the request was recorded at once"
        status, body = await reply
        assert status == 202
        assert body["rebootRequests"] == 1


async def test_a_terminated_machine_never_comes_back_and_its_node_and_pods_go(
    cluster: SimulatedCluster, core: Any
) -> None:
    node = "gpu-node-001"
    pods = await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    assert pods.items, "the demo workloads place pods on every node"
    terminate = f"{cluster.control_url}/sim/v1/nodes/{node}/terminate"

    status, receipt = await _post(terminate)
    assert status == 202 and receipt["node"] == node and receipt["terminatedAt"].endswith("Z")
    # Asked again before the node goes (a retried call): the first termination, not a second.
    status, again = await _post(terminate)
    assert status == 202 and again == {**receipt, "alreadyTerminated": True}
    # A reboot of a terminated machine is counted and starts nothing.
    status, rebooted = await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/reboot")
    assert status == 202 and rebooted["alreadyRebooting"]

    async def deleted() -> bool:
        names = [item.metadata.name for item in (await core.list_node()).items]
        return node not in names

    await eventually(deleted)
    left = await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    assert left.items == [], "the pod garbage collector removes the pods of a deleted node"
    assert (await _post(terminate))[0] == 404
    assert (await _get(f"{cluster.control_url}/sim/v1/nodes/gpu-node-002"))[1]["terminatedAt"] is None


async def test_the_simulated_agent_answers_a_gpu_check_once_from_the_gpus_truth(
    cluster: SimulatedCluster, core: Any
) -> None:
    node = "gpu-node-001"
    boot = (await core.read_node(node)).status.node_info.boot_id

    async def check(order_id: str) -> GpuCheckReport:
        order = GpuCheckOrder(id=order_id, holder="test", level=1, at=datetime.now(UTC), boot_id=boot)
        patch = {"metadata": {"annotations": {GPU_CHECK.annotation: order.model_dump_json()}}}
        await core.patch_node(node, patch, _content_type="application/merge-patch+json")

        async def answered() -> GpuCheckReport | None:
            found = await core.read_node(node)
            condition = next((c for c in found.status.conditions if c.type == GPU_CHECK.condition), None)
            report = GpuCheckReport.model_validate_json(condition.message) if condition else None
            return report if report is not None and report.id == order_id else None

        return await eventually(answered)

    passed = await check("run-1/check-0")
    assert (passed.ok, passed.tool, passed.detail) == (True, "simulator", "All 8 GPUs are healthy")
    await _post(f"{cluster.control_url}/sim/v1/nodes/{node}/faults", {"xid": 79, "gpu": 2})
    failed = await check("run-1/check-1")
    assert not failed.ok and failed.detail.startswith("XID 79 on GPU 2 (")
