"""Conformance of the simulated node lifecycle controller, kubelet and GPU agent with a real cluster.

Upstream sources (kubernetes/kubernetes) are named in each test; where upstream leaves room, the
simulator takes the stricter reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes.aio import client

from gpuheal.domain.gpu_health import read_stamp
from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.timestamps import parse_rfc3339, utcnow

from .conftest import aio_api, eventually, fast_config, new_watch

NODE = "gpu-node-000"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MERGE = "application/merge-patch+json"


def raw_node(cluster: SimulatedCluster, name: str = NODE) -> dict[str, Any]:
    node = cluster.get_object("nodes", name)
    assert node is not None
    return node


def taints(cluster: SimulatedCluster, name: str = NODE) -> list[dict[str, Any]]:
    return list(raw_node(cluster, name)["spec"].get("taints", []))


def condition(node: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == ctype)


@contextlib.asynccontextmanager
async def watched(cluster: SimulatedCluster, name: str = NODE) -> AsyncIterator[list[dict[str, Any]]]:
    """Every version of the node the API serves from now on, as JSON, while the block runs."""
    seen: list[dict[str, Any]] = []
    rv = raw_node(cluster, name)["metadata"]["resourceVersion"]
    api = await aio_api(cluster)
    core: Any = client.CoreV1Api(api)

    async def follow() -> None:
        watcher = new_watch()
        async with watcher.stream(
            core.list_node, field_selector=f"metadata.name={name}", resource_version=rv, timeout_seconds=60
        ) as stream:
            async for event in stream:
                seen.append(event["raw_object"])

    task = asyncio.create_task(follow())
    try:
        yield seen
    finally:
        await asyncio.sleep(0.2)  # let the last changes arrive
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()  # type: ignore[no-untyped-call]


async def test_cordon_adds_the_unschedulable_taint_with_time_added_and_uncordon_removes_it(tmp_path: Path) -> None:
    """doNoScheduleTaintingPass (pkg/controller/nodelifecycle/node_lifecycle_controller.go) adds
    node.kubernetes.io/unschedulable:NoSchedule while spec.unschedulable is true and removes it
    after; SwapNodeControllerTaint (pkg/controller/util/node/controller_utils.go) stamps every taint
    it adds, NoSchedule ones included, with timeAdded. Other taints stay as they were."""
    async with (
        SimulatedCluster(fast_config(nodes=1, workloads=False), state_dir=tmp_path) as cluster,
        await aio_api(cluster) as api,
    ):
        core: Any = client.CoreV1Api(api)
        foreign = {"key": "example.com/rack", "value": "7", "effect": "PreferNoSchedule"}
        await core.patch_node(NODE, {"spec": {"taints": [foreign]}}, _content_type=MERGE)
        await core.patch_node(NODE, {"spec": {"unschedulable": True}}, _content_type=MERGE)

        async def tainted() -> list[dict[str, Any]] | None:
            found = taints(cluster)
            return found if len(found) == 2 else None

        first, added = await eventually(tainted, timeout=5)
        assert first == foreign
        assert list(added) == ["key", "effect", "timeAdded"]
        assert (added["key"], added["effect"]) == (UNSCHEDULABLE, "NoSchedule")
        assert abs((utcnow() - parse_rfc3339(added["timeAdded"])).total_seconds()) < 5
        # A second pass (any later change) keeps the taint as it was added.
        await core.patch_node(NODE, {"metadata": {"labels": {"touched": "yes"}}}, _content_type=MERGE)
        await asyncio.sleep(0.2)
        assert taints(cluster) == [foreign, added]

        await core.patch_node(NODE, {"spec": {"unschedulable": False}}, _content_type=MERGE)

        async def untainted() -> bool:
            return taints(cluster) == [foreign]

        await eventually(untainted, timeout=5)


async def test_a_node_down_longer_than_the_grace_goes_unknown_with_unreachable_taints(tmp_path: Path) -> None:
    """tryUpdateNodeHealth: only when the kubelet has not posted for node-monitor-grace-period do
    Ready, MemoryPressure, DiskPressure and PIDPressure turn Unknown ("NodeStatusUnknown", "Kubelet
    stopped posting node status.", lastTransitionTime now, lastHeartbeatTime as the kubelet last
    posted); monitorNodeHealth marks the pods not ready (MarkPodsNotReady) and records NodeNotReady.
    doNoScheduleTaintingPass adds unreachable:NoSchedule, processTaintBaseEviction /
    doNoExecuteTaintingPass unreachable:NoExecute, both with timeAdded
    (pkg/controller/nodelifecycle/node_lifecycle_controller.go, staging/src/k8s.io/api/core/v1/
    well_known_taints.go). When the kubelet comes back with Ready=False (KubeletNotReady, its first
    status after boot: pkg/kubelet/nodestatus/setters.go ReadyCondition) the unreachable taints are
    swapped for not-ready ones; Ready=True removes them all."""
    config = fast_config(
        nodes=2, node_monitor_grace_seconds=0.6, reboot_seconds=1.5, kubelet_ready_seconds=0.6, pod_start_seconds=0.1
    )
    async with (
        SimulatedCluster(config, state_dir=tmp_path) as cluster,
        await aio_api(cluster) as api,
    ):
        core: Any = client.CoreV1Api(api)
        before = raw_node(cluster)
        boot = before["status"]["nodeInfo"]["bootID"]
        heartbeat = condition(before, "Ready")["lastHeartbeatTime"]
        async with watched(cluster) as versions:
            cluster.request_reboot(NODE)
            await asyncio.sleep(0.3)
            early = raw_node(cluster)
            assert condition(early, "Ready")["status"] == "True", "within the grace the node still shows Ready"
            assert "taints" not in early["spec"]

            async def unknown() -> dict[str, Any] | None:
                node = raw_node(cluster)
                return node if condition(node, "Ready")["status"] == "Unknown" else None

            down = await eventually(unknown, timeout=5)
            for ctype in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                cond = condition(down, ctype)
                assert (cond["status"], cond["reason"], cond["message"]) == (
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                ), ctype
                assert cond["lastHeartbeatTime"] == heartbeat, "the controller does not forge the kubelet's heartbeat"

            async def unreachable() -> list[dict[str, Any]] | None:
                found = taints(cluster)
                return found if len(found) == 2 else None

            found = await eventually(unreachable, timeout=5)
            assert {(t["key"], t["effect"]) for t in found} == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
            assert all("timeAdded" in t for t in found)
            trainer = (await core.list_namespaced_pod("ml", field_selector=f"spec.nodeName={NODE}")).items[0]
            assert {c.type: c.status for c in trainer.status.conditions}["Ready"] == "False"
            events = await core.list_namespaced_event("default", field_selector=f"involvedObject.name={NODE}")
            assert any(e.reason == "NodeNotReady" and e.source.component == "node-controller" for e in events.items)

            async def back() -> dict[str, Any] | None:
                node = raw_node(cluster)
                return node if condition(node, "Ready")["status"] == "True" else None

            up = await eventually(back, timeout=10)
        assert up["status"]["nodeInfo"]["bootID"] != boot
        assert "taints" not in up["spec"]
        booted = [v for v in versions if v["status"]["nodeInfo"]["bootID"] != boot]
        first = condition(booted[0], "Ready")
        assert (first["status"], first["reason"]) == ("False", "KubeletNotReady"), "the first status after boot"
        not_ready = [
            {(t["key"], t["effect"]) for t in v["spec"].get("taints", [])}
            for v in booted
            if condition(v, "Ready")["status"] == "False"
        ]
        assert {(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")} in not_ready
        assert all(UNREACHABLE not in {k for k, _ in s} for s in not_ready if (NOT_READY, "NoExecute") in s), (
            "not-ready and unreachable NoExecute taints are mutually exclusive"
        )


async def test_a_reboot_shorter_than_the_grace_never_shows_not_ready(tmp_path: Path) -> None:
    """With the upstream default grace (50 s) a 0.3 s reboot is never noticed by the node lifecycle
    controller: no Unknown conditions, no unreachable taints; the kubelet's own first status after
    boot (new bootID, Ready=False KubeletNotReady) and then Ready=True are all there is."""
    async with SimulatedCluster(fast_config(nodes=1, workloads=False), state_dir=tmp_path) as cluster:
        boot = raw_node(cluster)["status"]["nodeInfo"]["bootID"]
        async with watched(cluster) as versions:
            cluster.request_reboot(NODE)

            async def back() -> bool:
                node = raw_node(cluster)
                return bool(
                    node["status"]["nodeInfo"]["bootID"] != boot and condition(node, "Ready")["status"] == "True"
                )

            await eventually(back, timeout=5)
        assert versions, "the reboot was seen through the watch"
        statuses = [(v["status"]["nodeInfo"]["bootID"] == boot, condition(v, "Ready")["status"]) for v in versions]
        assert "Unknown" not in {status for _, status in statuses}
        assert (False, "False") in statuses, "the kubelet's first post on the new boot says NotReady"
        assert all(UNREACHABLE not in {t["key"] for t in v["spec"].get("taints", [])} for v in versions)


async def test_gpu_healthy_keeps_its_pre_reboot_value_until_the_agent_reports(tmp_path: Path) -> None:
    """The GPU agent is a writer of its own (a DaemonSet pod on a real node): the kubelet's Ready and
    new bootID do not touch GpuHealthy, which keeps what the agent last wrote, naming the boot it was
    written on, until the agent has started again after the reboot."""
    config = fast_config(nodes=1, workloads=False, kubelet_ready_seconds=0.1, gpu_agent_start_seconds=1.0)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster:
        cluster.inject_fault(NODE, 79, 3)
        faulty = condition(raw_node(cluster), "GpuHealthy")
        old_boot = raw_node(cluster)["status"]["nodeInfo"]["bootID"]
        assert faulty["status"] == "False" and read_stamp(faulty["message"])[1] == old_boot
        cluster.request_reboot(NODE)

        async def ready_on_a_new_boot() -> dict[str, Any] | None:
            node = raw_node(cluster)
            fresh = node["status"]["nodeInfo"]["bootID"] != old_boot
            return node if fresh and condition(node, "Ready")["status"] == "True" else None

        ready = await eventually(ready_on_a_new_boot, timeout=5)
        assert condition(ready, "GpuHealthy") == faulty, "the pre-reboot report lingers, untouched"
        assert ready["status"]["allocatable"]["nvidia.com/gpu"] == "7"
        new_boot = ready["status"]["nodeInfo"]["bootID"]

        async def reported() -> dict[str, Any] | None:
            cond = condition(raw_node(cluster), "GpuHealthy")
            return cond if read_stamp(cond["message"])[1] == new_boot else None

        fresh = await eventually(reported, timeout=5)
        assert (fresh["status"], fresh["reason"]) == ("True", "GpusHealthy")
        assert raw_node(cluster)["status"]["allocatable"]["nvidia.com/gpu"] == "8"


async def test_no_execute_eviction_counts_from_time_added_and_a_swap_does_not_postpone_it(tmp_path: Path) -> None:
    """The taint eviction controller (pkg/controller/tainteviction/taint_eviction.go,
    processPodOnNode) evicts a pod tolerationSeconds after it first saw the NoExecute taint and keeps
    the earlier deadline when the taints change; the simulator counts from the taint's timeAdded
    (never later). A pod that tolerates the taint for ever stays."""
    config = fast_config(
        nodes=2, workloads=False, node_monitor_grace_seconds=0.3, reboot_seconds=2.0, kubelet_ready_seconds=10
    )
    async with (
        SimulatedCluster(config, state_dir=tmp_path) as cluster,
        await aio_api(cluster) as api,
    ):
        core: Any = client.CoreV1Api(api)
        for name, seconds in (("brief", 3), ("forever", None)):
            tolerations = [
                {"key": key, "operator": "Exists", "effect": "NoExecute"}
                | ({"tolerationSeconds": seconds} if seconds is not None else {})
                for key in (UNREACHABLE, NOT_READY)
            ]
            pod = {
                "metadata": {"name": name},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}], "tolerations": tolerations},
            }
            await core.create_namespaced_pod("default", pod)
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        cluster.request_reboot(NODE)

        async def evicted() -> bool:
            pod = await core.read_namespaced_pod("brief", "default")
            return pod.metadata.deletion_timestamp is not None

        await eventually(evicted, timeout=8)
        elapsed = asyncio.get_running_loop().time() - started
        assert (NOT_READY, "NoExecute") in {(t["key"], t["effect"]) for t in taints(cluster)}, (
            "the node came back NotReady meanwhile: the unreachable taint was swapped for a newer not-ready one"
        )
        # Unreachable from ~0.3 s (timeAdded in whole seconds): due after 2.3-3.3 s; counted from the
        # not-ready taint added at ~2.0 s it would be 4-5 s.
        assert 1.5 < elapsed < 3.9, elapsed
        forever = await core.read_namespaced_pod("forever", "default")
        assert forever.metadata.deletion_timestamp is None
