"""What collects a node's diagnostics bundle before a reboot wipes its state.

- `BugReportCollector`: NVIDIA's `nvidia-bug-report.sh --output-file <dir>/nvidia-bug-report.log`
  (a plain argv, no shell, its process group killed when it overstays), which writes the gzipped
  log beside the name it is given.
- `NvmlProbe`: where the script is not installed, what NVML reports of every GPU (identity, ECC
  counts, retired pages, remapped rows, or that it is lost), as gzipped JSON.

`choose` picks one by the agent's `--diagnostics` mode: "auto" (the script where it is installed,
else NVML), "nvidia-bug-report" or "nvml".
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from gpuheal.agents.command import CommandError, run_bounded
from gpuheal.agents.nvml.interface import GpuLostError, Nvml, NvmlError

CollectorMode = Literal["auto", "nvidia-bug-report", "nvml"]
COLLECTOR_MODES: tuple[CollectorMode, ...] = ("auto", "nvidia-bug-report", "nvml")


class CollectError(Exception):
    """The bundle could not be collected; the message says why."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle collected into a file, and what collected it."""

    path: Path
    tool: str


class Collector(Protocol):
    name: str

    async def collect(self, into: Path, node: str, reason: str) -> Bundle:
        """Collect into the directory `into`; raises CollectError."""
        ...


class BugReportCollector:
    """`nvidia-bug-report.sh`; see the module docstring."""

    name = "nvidia-bug-report.sh"

    def __init__(self, script: str = "nvidia-bug-report.sh", *, timeout: timedelta = timedelta(minutes=10)) -> None:
        self.script = script
        self.timeout = timeout

    async def collect(self, into: Path, node: str, reason: str) -> Bundle:
        log = into / "nvidia-bug-report.log"
        try:
            finished = await run_bounded([self.script, "--output-file", str(log)], self.timeout)
        except CommandError as error:
            raise CollectError(str(error)) from error
        written = into / "nvidia-bug-report.log.gz"
        if not written.is_file():
            raise CollectError(f"{self.script} (exit {finished.returncode}) wrote no {written.name}: {finished.said()}")
        return Bundle(written, self.name)


class NvmlProbe:
    """What NVML reports of every GPU; see the module docstring."""

    name = "nvml"

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml

    async def collect(self, into: Path, node: str, reason: str) -> Bundle:
        probe = await asyncio.to_thread(self._probe, node, reason)
        path = into / "nvml-probe.json.gz"
        path.write_bytes(gzip.compress(json.dumps(probe, indent=1, default=str).encode()))
        return Bundle(path, self.name)

    def _probe(self, node: str, reason: str) -> dict[str, Any]:
        gpus: list[dict[str, Any]] = []
        try:
            count = self._nvml.device_count()
        except NvmlError as error:
            raise CollectError(f"NVML cannot count the GPUs: {error}") from error
        for index in range(count):
            gpu: dict[str, Any] = {"index": index}
            try:
                gpu.update(asdict(self._nvml.device_info(index)))
                gpu["signals"] = asdict(self._nvml.health_signals(index))
            except GpuLostError as error:
                gpu["lost"] = str(error)
            except NvmlError as error:
                gpu["error"] = str(error)
            gpus.append(gpu)
        return {"node": node, "reason": reason, "collected_at": datetime.now(UTC).isoformat(), "gpus": gpus}


def choose(
    mode: CollectorMode,
    *,
    nvml: Nvml | None,
    script: str = "nvidia-bug-report.sh",
    timeout: timedelta = timedelta(minutes=10),
) -> Collector | None:
    """The collector for `mode` on this node; None where NVML is wanted and the agent has none."""
    if mode == "nvidia-bug-report" or (mode == "auto" and shutil.which(script) is not None):
        return BugReportCollector(script, timeout=timeout)
    return NvmlProbe(nvml) if nvml is not None else None
