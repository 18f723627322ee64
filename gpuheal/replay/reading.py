"""A recorded log, read into the faults the node's agent would have reported, each with its time.

A kernel log goes through the agent's own monitor (`KernelLogMonitor`): the same parser, catalog,
XID overrides and flood control, its clock set to each line's stamp. With no NVML to ask, each GPU is
named by a UUID derived from the node and its PCI address, so a GPU that faults again is known
again. A health-event stream (`.jsonl`: one event per line, as the intake takes it in JSON) gives
its events' faults at their `generated_at`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import KernelLogMonitor
from gpuheal.agents.kmsg.parser import KmsgParser
from gpuheal.domain.faults import Fault
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.replay.clock import EPOCH, line_time

# Derived GPU UUIDs: the same node and address give the same UUID in every replay.
_GPU_NAMESPACE = uuid.UUID("6f1d2c3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f")
HEALTH_EVENTS_SUFFIX = ".jsonl"


class UnreadableLog(ValueError):
    """A log that cannot be replayed; the message names the file and, where it can, the line."""


@dataclass(frozen=True, slots=True)
class TimedFault:
    """A fault the node's agent would have reported, and when."""

    at: datetime
    fault: Fault


async def read_log(path: Path, xids: XidPolicy, year: int) -> list[TimedFault]:
    """The faults of one node's log (the node is the file's name without its suffix); `year` is the
    year of syslog stamps, which name none."""
    try:
        text = await asyncio.to_thread(path.read_text, "utf-8", errors="replace")
    except OSError as error:
        raise UnreadableLog(f"{path}: cannot be read: {error.strerror or error}") from None
    if path.suffix == HEALTH_EVENTS_SUFFIX:
        return _health_events(path, text)
    return await _kernel_log(path.stem, text.splitlines(keepends=True), xids, year)


async def _kernel_log(node: str, lines: list[str], xids: XidPolicy, year: int) -> list[TimedFault]:
    now = EPOCH
    faults: list[TimedFault] = []

    class Collect:
        async def submit(self, event: HealthEvent) -> None:
            if event.needs_remediation:
                faults.append(TimedFault(at=now, fault=event.to_fault()))

    monitor = KernelLogMonitor(
        node,
        Collect(),
        policy=xids,
        gpu_map=GpuMap(_derived_gpus(node, lines)),
        clock=lambda: (now - EPOCH).total_seconds(),
        now=lambda: now,
        boot_id_path=Path("/nonexistent/gpuheal-replay/boot_id"),
    )
    for line in lines:
        now = line_time(line, now, year)
        await monitor.feed(line)
    return faults


def _derived_gpus(node: str, lines: list[str]) -> dict[str, str]:
    """A UUID for each GPU address the log names (read with a parser of its own)."""
    parser = KmsgParser()
    addresses = {event.pci_key for line in lines if (event := parser.feed(line)) is not None}
    return {address: f"GPU-{uuid.uuid5(_GPU_NAMESPACE, f'{node}/{address}')}" for address in addresses}


def _health_events(path: Path, text: str) -> list[TimedFault]:
    faults: list[TimedFault] = []
    at = EPOCH
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = HealthEvent.model_validate_json(line)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the event"
            raise UnreadableLog(f"{path} line {number}: {where}: {first['msg']}") from None
        at = event.generated_at or at
        if event.needs_remediation:
            faults.append(TimedFault(at=at, fault=event.to_fault()))
    return faults
