"""The few Kubernetes API patterns the node activities share: conditional patches and node reads.

One asyncio `ApiClient` (gpuheal.kubeclient) serves every activity of a worker: it keeps a
connection pool, so a storm of remediations costs requests, not connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.models import V1Node

MERGE_PATCH = "application/merge-patch+json"

ResultT = TypeVar("ResultT")


async def read_node(core: client.CoreV1Api, name: str) -> V1Node | None:
    """The node, or None when it does not exist."""
    try:
        return await core.read_node(name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def merge_patch_node(core: client.CoreV1Api, node: V1Node, patch: dict[str, Any]) -> V1Node:
    """Merge-patch a node on the condition that nobody changed it since `node` was read.

    The patch carries the resourceVersion that was read, so the API server answers 409 Conflict when
    the node moved on in between; the caller reads it again and decides afresh.
    """
    assert node.metadata is not None and node.metadata.name is not None
    metadata = dict(patch.get("metadata", {}))
    metadata["resourceVersion"] = node.metadata.resource_version
    return await core.patch_node(node.metadata.name, {**patch, "metadata": metadata}, _content_type=MERGE_PATCH)


def is_conflict(error: ApiException) -> bool:
    return bool(error.status == 409)


def annotations_of(node: V1Node) -> dict[str, str]:
    return dict((node.metadata.annotations if node.metadata else None) or {})


def condition_of(node: V1Node, kind: str) -> tuple[str, str] | None:
    """(status, message) of a node condition, or None when the node has none of that type."""
    for condition in (node.status.conditions if node.status else None) or []:
        if condition.type == kind:
            return condition.status, condition.message or ""
    return None


def boot_id_of(node: V1Node) -> str:
    info = node.status.node_info if node.status else None
    return (info.boot_id if info else None) or ""


async def on_fresh_node(
    core: client.CoreV1Api, name: str, change: Callable[[V1Node | None], Awaitable[ResultT]], attempts: int = 5
) -> ResultT:
    """Read the node and apply `change` to it, reading again whenever a conditional write loses a race.

    After `attempts` lost races the last 409 propagates and Temporal retries the whole activity.
    """
    for attempt in range(attempts):
        node = await read_node(core, name)
        try:
            return await change(node)
        except ApiException as error:
            if not is_conflict(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
