"""The drain activity: one pass over the pods of a quarantined node.

A pass evicts what it may, deletes what is overdue, waits a few seconds at most for those pods to
terminate and reports what is left. The workflow sleeps on a durable timer between passes, so a
drain held up for an hour by a PodDisruptionBudget costs timers, not a worker slot, and survives any
worker restart.
"""

from __future__ import annotations

import asyncio

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.models import V1Eviction, V1ObjectMeta, V1Pod
from temporalio import activity

from gpuheal.activities.kube import read_node
from gpuheal.domain.policy import DrainMode
from gpuheal.domain.steps import DrainProgress, DrainRequest, PodRef

_MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_SETTLE_POLL = 0.1


class DrainActivities:
    """Evicts and deletes pods through the Kubernetes API."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    @activity.defn(name="drain_node")
    async def drain_node(self, request: DrainRequest) -> DrainProgress:
        """Move the node's pods off it, each namespace by its drain mode.

        Immediate pods go through the Eviction API, so PodDisruptionBudgets hold: a 429 leaves the pod
        for a later pass. AllowCompletion pods are left to finish. DeleteAfterTimeout pods are deleted
        once the workflow says the drain is overdue. DaemonSet pods, mirror pods and pods that already
        finished stay where they are. Progress is reported through heartbeats.
        """
        node = await read_node(self._core, request.node)
        if node is not None and not (node.spec and node.spec.unschedulable):
            return DrainProgress(uncordoned=True)
        evicted = deleted = 0
        blocked: list[PodRef] = []
        remaining: list[PodRef] = []
        movable = await self._pods_to_move(request.node)
        for index, pod in enumerate(movable):
            ref = _ref(pod)
            remaining.append(ref)
            if pod.metadata and pod.metadata.deletion_timestamp is not None:
                continue  # already terminating: wait for it to go
            mode = request.policy.mode_for(ref.namespace)
            if mode is DrainMode.IMMEDIATE:
                if await self._evict(ref):
                    evicted += 1
                else:
                    blocked.append(ref)
            elif mode is DrainMode.DELETE_AFTER_TIMEOUT and request.delete_overdue:
                await self._delete(ref)
                deleted += 1
            activity.heartbeat({"done": index + 1, "of": len(movable), "evicted": evicted, "deleted": deleted})
        if evicted or deleted:
            remaining = await self._settle(request.node, request.policy.settle.total_seconds())
        return DrainProgress(evicted=evicted, deleted=deleted, blocked=tuple(blocked), remaining=tuple(remaining))

    async def _pods_to_move(self, node: str) -> list[V1Pod]:
        pods = await self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
        return [pod for pod in pods.items if _must_leave(pod)]

    async def _settle(self, node: str, seconds: float) -> list[PodRef]:
        """Wait up to `seconds` while pods on the node are terminating; return what is still there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            pods = await self._pods_to_move(node)
            terminating = sum(1 for pod in pods if pod.metadata and pod.metadata.deletion_timestamp is not None)
            if not terminating or loop.time() >= deadline:
                return [_ref(pod) for pod in pods]
            activity.heartbeat({"terminating": terminating})
            await asyncio.sleep(_SETTLE_POLL)

    async def _evict(self, pod: PodRef) -> bool:
        """Ask the Eviction API to move a pod; False when a disruption budget refuses (HTTP 429)."""
        eviction = V1Eviction(metadata=V1ObjectMeta(name=pod.name, namespace=pod.namespace))
        try:
            await self._core.create_namespaced_pod_eviction(pod.name, pod.namespace, eviction)
        except ApiException as error:
            if error.status == 429:
                return False
            if error.status != 404:  # a pod that is already gone needs no eviction
                raise
        return True

    async def _delete(self, pod: PodRef) -> None:
        try:
            await self._core.delete_namespaced_pod(pod.name, pod.namespace)
        except ApiException as error:
            if error.status != 404:
                raise


def _must_leave(pod: V1Pod) -> bool:
    """Whether draining has to move this pod: not finished, not a DaemonSet's, not a mirror pod."""
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return False
    meta = pod.metadata
    if meta is None:
        return False
    if _MIRROR_ANNOTATION in (meta.annotations or {}):
        return False
    return not any(owner.kind == "DaemonSet" and owner.controller for owner in meta.owner_references or [])


def _ref(pod: V1Pod) -> PodRef:
    assert pod.metadata is not None
    return PodRef(namespace=pod.metadata.namespace or "default", name=pod.metadata.name or "")
