"""The nodes a worker read a moment ago, which an ask for a permit reuses."""

from __future__ import annotations

from datetime import timedelta

from kubernetes.aio.client.models import V1Node, V1NodeStatus, V1NodeSystemInfo, V1ObjectMeta

from gpuheal.activities.recent_nodes import RecentNodes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(name: str, boot: str = "boot-1", **labels: str) -> V1Node:
    info = V1NodeSystemInfo(
        architecture="amd64",
        boot_id=boot,
        container_runtime_version="containerd://1.7",
        kernel_version="6.8",
        kube_proxy_version="",
        kubelet_version="v1.31",
        machine_id="m",
        operating_system="linux",
        os_image="Ubuntu",
        system_uuid="u",
    )
    return V1Node(metadata=V1ObjectMeta(name=name, labels=labels), status=V1NodeStatus(node_info=info))


def test_a_read_moments_ago_serves_with_its_labels_and_boot() -> None:
    clock = Clock()
    recent = RecentNodes(timedelta(seconds=5), clock)
    recent.remember("gpu-1", node("gpu-1", "boot-7", rack="r4"))
    clock.now += 4

    seen = recent.recall("gpu-1")

    assert seen is not None and (seen.labels, seen.boot_id) == ({"rack": "r4"}, "boot-7")


def test_an_old_read_does_not_serve_and_is_forgotten() -> None:
    clock = Clock()
    recent = RecentNodes(timedelta(seconds=5), clock)
    recent.remember("gpu-1", node("gpu-1"))
    clock.now += 6

    assert recent.recall("gpu-1") is None
    recent.remember("gpu-2", node("gpu-2"))
    assert recent.recall("gpu-1") is None and recent.recall("gpu-2") is not None
    assert list(recent._seen) == ["gpu-2"], "reads past their time are dropped as new ones come"


def test_a_node_read_as_deleted_is_forgotten() -> None:
    recent = RecentNodes(timedelta(seconds=5), Clock())
    recent.remember("gpu-1", node("gpu-1"))

    assert recent.remember("gpu-1", None) is None
    assert recent.recall("gpu-1") is None, "an ask then reads the node itself (and finds it gone)"
