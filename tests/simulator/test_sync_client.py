"""The synchronous official client against a cluster running in a background thread."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import kubernetes.client
import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from gpuheal_sim.simulator import SimulatedCluster

from .conftest import eventually_sync, fast_config, sync_api


def test_replace_node_with_stale_resource_version_is_409(thread_cluster: SimulatedCluster) -> None:
    core: Any = kubernetes.client.CoreV1Api(sync_api(thread_cluster))
    node = core.read_node("gpu-node-000")
    node.metadata.labels["first"] = "yes"
    replaced = core.replace_node("gpu-node-000", node)
    assert replaced.metadata.labels["first"] == "yes"
    node.metadata.labels["second"] = "yes"  # still the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_node("gpu-node-000", node)
    assert err.value.status == 409
    assert err.value.reason == "Conflict"
    body = json.loads(str(err.value.body))
    assert body["details"] == {"name": "gpu-node-000", "kind": "nodes"}
    assert "second" not in core.read_node("gpu-node-000").metadata.labels


def test_watch_stream_sees_modified_and_deleted(thread_cluster: SimulatedCluster) -> None:
    core: Any = kubernetes.client.CoreV1Api(sync_api(thread_cluster))
    rv = core.list_namespaced_pod("ml").metadata.resource_version
    victim = core.list_namespaced_pod("ml").items[0].metadata.name

    def delete_later() -> None:
        time.sleep(0.2)
        core.delete_namespaced_pod(victim, "ml", grace_period_seconds=0)

    thread = threading.Thread(target=delete_later)
    thread.start()
    seen: list[tuple[str, str]] = []
    w: Any = watch.Watch()  # type: ignore[no-untyped-call]
    for event in w.stream(core.list_namespaced_pod, "ml", resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if ("DELETED", victim) in seen and any(kind == "ADDED" for kind, _ in seen):
            w.stop()
    thread.join()
    assert ("DELETED", victim) in seen
    assert any(kind == "ADDED" and name != victim for kind, name in seen), "the ReplicaSet replaced the pod"


def test_thread_helpers_and_reboot(thread_cluster: SimulatedCluster) -> None:
    core: Any = kubernetes.client.CoreV1Api(sync_api(thread_cluster))
    boot = core.read_node("gpu-node-003").status.node_info.boot_id
    receipt = thread_cluster.request_reboot("gpu-node-003")
    assert receipt["rebootRequests"] == 1
    assert thread_cluster.reboot_requests("gpu-node-003") == 1
    assert thread_cluster.node_state("gpu-node-003")["rebooting"] is True

    def rebooted() -> str | None:
        node = core.read_node("gpu-node-003")
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        return node.status.node_info.boot_id if ready == "True" and node.status.node_info.boot_id != boot else None

    eventually_sync(rebooted, timeout=5)
    assert thread_cluster.reboots_completed("gpu-node-003") == 1
    stored = thread_cluster.get_object("nodes", "gpu-node-003")
    assert (
        stored is not None
        and stored["status"]["nodeInfo"]["bootID"] == thread_cluster.node_state("gpu-node-003")["bootId"]
    )
    assert len(thread_cluster.list_objects("pods", "ml")) == 4


def test_running_in_thread_context_manager_writes_a_working_kubeconfig() -> None:
    with SimulatedCluster.running_in_thread(fast_config(nodes=2, workloads=False)) as cluster:
        core: Any = kubernetes.client.CoreV1Api(sync_api(cluster))
        assert [n.metadata.name for n in core.list_node().items] == ["gpu-node-000", "gpu-node-001"]
        assert cluster.url.startswith("https://127.0.0.1:")
        kubeconfig = cluster.kubeconfig
        assert kubeconfig.exists() and oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert not kubeconfig.exists(), "a temporary state directory is removed on stop"
