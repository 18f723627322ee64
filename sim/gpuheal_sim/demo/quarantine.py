"""How many nodes are out of service at once, counted from the cluster's own Node objects.

The count comes from a watch on the API server, so every change is seen (a poll could miss a node
that was cordoned and released between two samples), and it is independent of gpuheal's own state:
the demo's storm and the tests compare it with the budget gpuheal was given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes.aio import client, watch

from gpuheal.domain import marks
from gpuheal.kubeclient import connect

NodeObserver = Callable[[str, dict[str, Any]], None]


def out_of_service(node: dict[str, Any]) -> bool:
    """Cordoned, or carrying gpuheal's quarantine taint."""
    spec = node.get("spec") or {}
    taints = spec.get("taints") or []
    return bool(spec.get("unschedulable")) or any(t.get("key") == marks.QUARANTINE_TAINT_KEY for t in taints)


class QuarantineCount:
    """The nodes out of service now, and the most there ever were at once (in all, and per group).

    `group_label` names the node label whose values group the nodes (a rack); "" counts no groups.
    """

    def __init__(self, group_label: str = "") -> None:
        self.group_label = group_label
        # Node name -> its group, for every node out of service now.
        self.out: dict[str, str] = {}
        self.most = 0
        self.most_per_group: dict[str, int] = {}
        # Every node that was ever out of service while watched.
        self.ever: set[str] = set()
        self.changed = asyncio.Event()

    @property
    def now(self) -> int:
        return len(self.out)

    def observe(self, event_type: str, node: dict[str, Any]) -> None:
        metadata = node.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if event_type != "DELETED" and out_of_service(node):
            labels = metadata.get("labels") or {}
            group = str(labels.get(self.group_label, "")) if self.group_label else ""
            self.out[name] = group
            self.ever.add(name)
            self.most = max(self.most, len(self.out))
            if group:
                in_group = sum(1 for g in self.out.values() if g == group)
                self.most_per_group[group] = max(self.most_per_group.get(group, 0), in_group)
        else:
            self.out.pop(name, None)
        self.changed.set()


@asynccontextmanager
async def watching_nodes(kubeconfig: Path, observe: NodeObserver) -> AsyncIterator[None]:
    """Feed `observe(event type, node as JSON)` with the nodes as listed now, then with every change.

    The changes come from a watch that starts at the list's resourceVersion, so none is missed; a
    watch that failed or ended while the context ran raises as the context exits.
    """
    async with await connect(kubeconfig) as api:
        core = client.CoreV1Api(api)
        listed = await core.list_node()
        for node in listed.items:
            observe("ADDED", api.sanitize_for_serialization(node))  # the JSON form, as a watch gives
        assert listed.metadata is not None
        since = listed.metadata.resource_version

        async def follow() -> None:
            watcher = watch.Watch()  # type: ignore[no-untyped-call]
            nodes = watcher.stream(core.list_node, resource_version=since, timeout_seconds=3600)  # type: ignore[no-untyped-call]
            async with nodes as stream:
                async for event in stream:
                    observe(event["type"], event["raw_object"])
            raise RuntimeError("the node watch ended: changes after this were not seen")

        task = asyncio.create_task(follow())
        try:
            yield
            if task.done():
                task.result()  # the watch failed while the context ran: what it counted is incomplete
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def counting_quarantines(kubeconfig: Path, group_label: str = "") -> AsyncIterator[QuarantineCount]:
    """A QuarantineCount kept current from the fleet's API server while the context runs."""
    count = QuarantineCount(group_label)
    async with watching_nodes(kubeconfig, count.observe):
        yield count
