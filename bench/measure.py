"""What the benchmarks observe: cordons as the API server reports them, CPU time, and percentiles."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gpuheal.domain import marks
from gpuheal_sim.demo.quarantine import out_of_service, watching_nodes


class CordonWatch:
    """Watches every node and notes when each one first carries gpuheal's quarantine taint, and when
    it is back in service after that (neither tainted nor cordoned)."""

    def __init__(self) -> None:
        self.cordoned_at: dict[str, float] = {}
        self.back_at: dict[str, float] = {}
        self.changed = asyncio.Event()

    def forget(self, node: str) -> None:
        self.cordoned_at.pop(node, None)
        self.back_at.pop(node, None)

    def observe(self, event_type: str, raw: dict[str, Any]) -> None:
        name = raw["metadata"]["name"]
        taints = raw.get("spec", {}).get("taints") or []
        if name not in self.cordoned_at and any(t.get("key") == marks.QUARANTINE_TAINT_KEY for t in taints):
            self.cordoned_at[name] = time.perf_counter()
            self.changed.set()
        elif name in self.cordoned_at and name not in self.back_at and not out_of_service(raw):
            self.back_at[name] = time.perf_counter()
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        """Until `count` nodes were cordoned."""
        await self._until(lambda: len(self.cordoned_at) >= count)

    async def wait_for_back(self, count: int) -> None:
        """Until `count` cordoned nodes were back in service."""
        await self._until(lambda: len(self.back_at) >= count)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
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
    # ceil, not round: round() halves to even, which took p99 of 100 samples to the 100th
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


def describe(values: Sequence[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.1f} ms   p99 {percentile(values, 0.99) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(values) * 1000:7.1f} ms   n={len(values)}"
    )


def verdict(benchmark: str, met: bool, figure: str, target: str) -> None:
    """The one line per target that `make bench` ends each benchmark with."""
    print(f"VERDICT {benchmark}: {'met' if met else 'missed'} ({figure} vs target {target})")


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (field 3 of proc(5) is the first)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: the fields that follow are counted from its end.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, all threads) the process used so far, from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


def parent_of(pid: int) -> int:
    """The process's parent, from /proc/<pid>/stat."""
    return int(_stat_fields(pid)[1])  # field 4 of proc(5)


def machine_cpu_seconds() -> float:
    """The CPU time every process of the machine used so far (all cores), from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    # cpu user nice system idle iowait irq softirq steal …: all but idle and iowait is work.
    user, nice, system, _, _, irq, softirq, steal = (int(field) for field in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class CpuAccount:
    """CPU seconds each of some processes used from its creation to `stop`, and what the rest of the
    machine used meanwhile (on shared cores, a slow run is often others' load)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._began = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_cpu_seconds()
        self._wall = time.perf_counter()
        self.used: dict[str, float] = {}
        self.others = 0.0
        self.wall = 0.0

    def stop(self) -> None:
        self.used = {name: cpu_seconds(pid) - self._began[name] for name, pid in self.pids.items()}
        self.others = max(0.0, machine_cpu_seconds() - self._machine - sum(self.used.values()))
        self.wall = time.perf_counter() - self._wall

    def describe(self) -> str:
        each = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.used.items())
        total = sum(self.used.values())
        cores = os.cpu_count() or 1
        return (
            f"{each} = {total:.1f} CPU s in {self.wall:.1f} s ({total / (self.wall * cores):.0%} of {cores} cores); "
            f"other processes {self.others:.1f} CPU s"
        )
