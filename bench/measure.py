"""What the benchmarks observe: cordons as the API server reports them, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes.aio import client, watch

from gpuheal.domain import marks
from gpuheal.kubeclient import connect


class CordonWatch:
    """Watches every node and notes when each one first carries gpuheal's quarantine taint."""

    def __init__(self) -> None:
        self.cordoned_at: dict[str, float] = {}
        self.changed = asyncio.Event()

    def forget(self, node: str) -> None:
        self.cordoned_at.pop(node, None)

    def observe(self, raw: dict[str, Any]) -> None:
        name = raw["metadata"]["name"]
        taints = raw.get("spec", {}).get("taints") or []
        if name not in self.cordoned_at and any(t.get("key") == marks.QUARANTINE_TAINT_KEY for t in taints):
            self.cordoned_at[name] = time.perf_counter()
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.cordoned_at) < count:
            self.changed.clear()
            await self.changed.wait()


@asynccontextmanager
async def watching_cordons(kubeconfig: Path) -> AsyncIterator[CordonWatch]:
    """A CordonWatch fed by a node watch on the fleet's API server, from the current resourceVersion."""
    cordons = CordonWatch()
    async with await connect(kubeconfig) as api:
        core = client.CoreV1Api(api)
        listed = await core.list_node()
        assert listed.metadata is not None
        since = listed.metadata.resource_version

        async def follow() -> None:
            watcher = watch.Watch()  # type: ignore[no-untyped-call]
            nodes = watcher.stream(core.list_node, resource_version=since, timeout_seconds=3600)  # type: ignore[no-untyped-call]
            async with nodes as stream:
                async for event in stream:
                    cordons.observe(event["raw_object"])

        task = asyncio.create_task(follow())
        try:
            yield cordons
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def describe(values: Sequence[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.1f} ms   p99 {percentile(values, 0.99) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(values) * 1000:7.1f} ms   n={len(values)}"
    )
