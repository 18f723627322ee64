"""What the benchmarks observe: cordons as the API server reports them, and percentiles."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gpuheal.domain import marks
from gpuheal_sim.demo.quarantine import watching_nodes


class CordonWatch:
    """Watches every node and notes when each one first carries gpuheal's quarantine taint."""

    def __init__(self) -> None:
        self.cordoned_at: dict[str, float] = {}
        self.changed = asyncio.Event()

    def forget(self, node: str) -> None:
        self.cordoned_at.pop(node, None)

    def observe(self, event_type: str, raw: dict[str, Any]) -> None:
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
    """A CordonWatch fed by a node watch on the fleet's API server."""
    cordons = CordonWatch()
    async with watching_nodes(kubeconfig, cordons.observe):
        yield cordons


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def describe(values: Sequence[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.1f} ms   p99 {percentile(values, 0.99) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(values) * 1000:7.1f} ms   n={len(values)}"
    )


def verdict(benchmark: str, met: bool, figure: str, target: str) -> None:
    """The one line per target that `make bench` ends each benchmark with."""
    print(f"VERDICT {benchmark}: {'met' if met else 'missed'} ({figure} vs target {target})")
