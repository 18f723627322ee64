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
from kubernetes.aio.client.exceptions import ApiException

from gpuheal.domain import marks
from gpuheal.kubeclient import connect

NodeObserver = Callable[[str, dict[str, Any]], None]
# How long the server keeps one watch open before it is resumed with another.
_WATCH_SECONDS = 120


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

    The changes come from watches that each resume at the last resourceVersion seen, so none is
    missed; a watch the server expired (410 Gone) is replaced by a fresh list, which reports the
    nodes gone meanwhile as DELETED. A watch that failed otherwise raises as the context exits.
    """
    async with await connect(kubeconfig) as api:
        core = client.CoreV1Api(api)
        known: set[str] = set()

        async def relist() -> str:
            listed = await core.list_node()
            names = set()
            for node in listed.items:
                raw = api.sanitize_for_serialization(node)  # the JSON form, as a watch gives
                names.add(raw["metadata"]["name"])
                observe("ADDED", raw)
            for gone in known - names:
                observe("DELETED", {"metadata": {"name": gone}})
            known.clear()
            known.update(names)
            assert listed.metadata is not None and listed.metadata.resource_version is not None
            return listed.metadata.resource_version

        async def follow(since: str) -> None:
            while True:
                watcher = watch.Watch()  # type: ignore[no-untyped-call]
                # The server ends each watch well within the client's own 5-minute request timeout.
                nodes = watcher.stream(core.list_node, resource_version=since, timeout_seconds=_WATCH_SECONDS)  # type: ignore[no-untyped-call]
                try:
                    async with nodes as stream:
                        async for event in stream:
                            raw = event["raw_object"]
                            name = raw["metadata"]["name"]
                            if event["type"] == "DELETED":
                                known.discard(name)
                            else:
                                known.add(name)
                            observe(event["type"], raw)
                            since = raw["metadata"].get("resourceVersion") or since
                except ApiException as error:
                    if error.status != 410:
                        raise
                    since = await relist()

        task = asyncio.create_task(follow(await relist()))
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
