"""Recorded logs, read line by line in time order, and each node's agent as the replay plays it.

A kernel log (`<node>.log`) goes through the agent's own monitor (`KernelLogMonitor`): the same
parser, catalog, XID overrides and flood control, its clock set to each line's time (`clock`). What
the live agent learns besides its log, the replay tells it as it happens: a new boot (in the log, or
after a replayed reboot) and the end of the node's remediation, which forget its flood-control
windows. With no NVML to ask, a GPU the log does not name by UUID (`GPU at PCI:… GPU-…`) is named by
one derived from the node and its PCI address. A health-event stream (`<node>.jsonl`) holds one
event per line in the intake's JSON form (the protobuf `HealthEvent`: `nodeName`, `isFatal`, …),
checked as the intake checks it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from google.protobuf import json_format

from gpuheal.agents.intake.convert import to_domain
from gpuheal.agents.intake.validate import IntakeLimits, event_problems
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import KernelLogMonitor
from gpuheal.agents.kmsg.parser import KmsgParser
from gpuheal.domain.faults import Fault
from gpuheal.domain.health import HealthEvent
from gpuheal.domain.xid_policy import XidPolicy
from gpuheal.protos import health_event_pb2 as pb
from gpuheal.replay.clock import EPOCH, NodeClock

# Derived GPU UUIDs: the same node and address give the same UUID in every replay.
_GPU_NAMESPACE = uuid.UUID("6f1d2c3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f")
KERNEL_LOG_SUFFIX = ".log"
HEALTH_EVENTS_SUFFIX = ".jsonl"


class UnreadableLog(ValueError):
    """A log that cannot be replayed; the message names the file and, where it can, the line."""


@dataclass(frozen=True, slots=True)
class TimedFault:
    """A fault the node's agent would have reported, and when."""

    at: datetime
    fault: Fault


@dataclass(frozen=True, slots=True)
class Line:
    """One kernel log line of a node, when it was written, and whether a boot begins with it."""

    node: str
    at: datetime
    text: str
    new_boot: bool


@dataclass(frozen=True, slots=True)
class Event:
    """One health event of a stream, when it was generated (or when the event before it was)."""

    node: str
    at: datetime
    event: HealthEvent


def kernel_log_lines(path: Path, year: int) -> Iterator[Line]:
    """The node's kernel log, a line at a time (a log of gigabytes is never held whole)."""
    clock = NodeClock(year)
    with _opened(path) as log:
        for text in log:
            at, new_boot = clock.read(text)
            yield Line(path.stem, at, text, new_boot)


def health_events(path: Path) -> Iterator[Event]:
    """The node's health events, each checked as the intake checks it (it must name this node)."""
    limits = IntakeLimits(node=path.stem)
    at = EPOCH
    with _opened(path) as stream:
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                wire = json_format.Parse(text, pb.HealthEvent())
            except json_format.ParseError as error:
                raise UnreadableLog(f"{path} line {number}: not an intake event: {error}") from None
            if problems := event_problems(wire, limits):
                raise UnreadableLog(f"{path} line {number}: {'; '.join(problems)}")
            event = to_domain(wire, limits)
            at = max(at, event.generated_at or at)
            yield Event(path.stem, at, event)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[TextIO]:
    """A regular file's lines (undecodable bytes replaced); a FIFO or a device is refused, not waited on."""
    if not path.is_file():
        raise UnreadableLog(f"{path}: not a regular file")
    try:
        with path.open(encoding="utf-8", errors="replace") as opened:
            yield opened
    except OSError as error:
        raise UnreadableLog(f"{path}: cannot be read: {error.strerror or error}") from None


class ReplayedAgent:
    """One node's agent as the replay plays it: its kernel-log monitor on the replay's clock."""

    def __init__(self, node: str, xids: XidPolicy, gpus: dict[str, str], boot_dir: Path) -> None:
        self._now = EPOCH
        self._boot_id = boot_dir / f"{uuid.uuid4()}.boot_id"
        self._boot_id.write_text(str(uuid.uuid4()))
        self._faults: list[TimedFault] = []
        self._monitor = KernelLogMonitor(
            node,
            self,
            policy=xids,
            gpu_map=GpuMap(gpus),
            clock=lambda: (self._now - EPOCH).total_seconds(),
            now=lambda: self._now,
            boot_id_path=self._boot_id,
        )

    async def submit(self, event: HealthEvent) -> None:
        """The monitor's sink: what the agent would hand to Temporal, with when."""
        if event.needs_remediation:
            self._faults.append(TimedFault(at=self._now, fault=event.to_fault()))

    async def read(self, line: Line) -> list[TimedFault]:
        """The faults the agent reports for a line of its log."""
        self._now = line.at
        if line.new_boot:
            await self.rebooted(line.at)
        await self._monitor.feed(line.text)
        return self._taken()

    async def rebooted(self, at: datetime) -> None:
        """The node booted again: the monitor sees a new boot ID and forgets what it held."""
        self._now = at
        self._boot_id.write_text(str(uuid.uuid4()))
        await self._monitor.check_boot()

    async def remediation_ended(self, at: datetime) -> list[TimedFault]:
        """The node's remediation ended (the agent sees its marks go): repeats logged since are reported."""
        self._now = at
        await self._monitor.remediation_ended()
        return self._taken()

    def _taken(self) -> list[TimedFault]:
        taken = list(self._faults)
        self._faults.clear()
        return taken


def gpus_named(path: Path) -> dict[str, str]:
    """Each GPU address the node's log names, with its UUID: the log's own (`GPU at PCI:…` lines),
    else one derived from the node and the address (read with a parser of its own)."""
    parser = KmsgParser()
    with _opened(path) as log:
        addresses = {event.pci_key for line in log if (event := parser.feed(line))}
    named = parser.known_gpus()
    derived = {key: f"GPU-{uuid.uuid5(_GPU_NAMESPACE, f'{path.stem}/{key}')}" for key in addresses - named.keys()}
    return named | derived
