"""What a process holds in memory: its resident set, read from /proc while a benchmark runs.

The kernel's own figure (`VmRSS` in /proc/<pid>/status) is what the kubelet's memory limit and the
OOM killer go by, so it is the figure the targets are written in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


def resident_bytes(pid: int) -> int:
    """The process's resident set now, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel writes it in kB
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: is {pid} a kernel thread?")


@dataclass(slots=True)
class RssSamples:
    """Resident-set samples of one process: (seconds since sampling began, bytes)."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(size for _, size in self.samples)

    def between(self, start: float, end: float) -> list[int]:
        """The sizes sampled from `start` to `end` seconds."""
        return [size for at, size in self.samples if start <= at <= end]

    def growth(self, start: float, end: float) -> int:
        """How far the resident set grew over [start, end]: the last sample's size less the first's.

        Flat memory grows by about nothing; a leak grows with the time the window spans.
        """
        window = self.between(start, end)
        if len(window) < 2:
            raise RuntimeError(f"fewer than two samples between {start:.1f} s and {end:.1f} s")
        return window[-1] - window[0]


@asynccontextmanager
async def sampling_rss(pid: int, every: float = 0.5) -> AsyncIterator[RssSamples]:
    """Sample `pid`'s resident set every `every` seconds while the block runs, and once more at its end
    if the process is still there."""
    samples = RssSamples()
    began = time.perf_counter()

    def take() -> None:
        samples.samples.append((time.perf_counter() - began, resident_bytes(pid)))

    async def keep_sampling() -> None:
        while True:
            take()
            await asyncio.sleep(every)

    sampler = asyncio.create_task(keep_sampling())
    try:
        yield samples
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):  # the process has exited
            take()
