"""A replay, start to end: every log's lines and events in time order, each node's agent reading
its own, the fleet's remediations deciding, and the agents told what the remediations did."""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.replay.fleet import Fleet, NodeReplay
from gpuheal.replay.reading import (
    KERNEL_LOG_SUFFIX,
    Event,
    Line,
    ReplayedAgent,
    TimedFault,
    gpus_named,
    health_events,
    kernel_log_lines,
)


async def replay_logs(
    files: Sequence[Path], document: PolicyDocument, *, gpu_nodes: int, repair_time: timedelta, year: int
) -> list[NodeReplay]:
    """What the policy would have done with the logs: per node, in name order."""
    fleet = Fleet(document.remediation(), document.fleet or FleetPolicy(), gpu_nodes, repair_time)
    with tempfile.TemporaryDirectory(prefix="gpuheal-replay-") as boot_dir:  # the replayed agents' boot IDs
        agents: dict[str, ReplayedAgent] = {}
        streams: list[Iterator[Line | Event]] = []
        for path in files:
            fleet.node(path.stem)
            if path.suffix == KERNEL_LOG_SUFFIX:
                agents[path.stem] = ReplayedAgent(path.stem, document.xids, gpus_named(path), Path(boot_dir))
                streams.append(kernel_log_lines(path, year))
            else:
                streams.append(health_events(path))
        for item in heapq.merge(*streams, key=lambda item: item.at):
            await _run_until(fleet, agents, item.at)
            if isinstance(item, Line):
                for fault in await agents[item.node].read(item):
                    fleet.fault(fault)
            elif item.event.needs_remediation:
                fleet.fault(TimedFault(at=item.at, fault=item.event.to_fault()))
        await _run_until(fleet, agents, None)
    return fleet.nodes()


async def _run_until(fleet: Fleet, agents: dict[str, ReplayedAgent], until: datetime | None) -> None:
    """Let the remediations' timers run to `until`; each node whose remediation ends learns of it as
    its live agent would (a new boot after a reboot, the marks gone), and reports what it held back."""
    while (ended := fleet.next_ended(until)) is not None:
        agent = agents.get(ended.node)
        if agent is None or ended.ended_at is None:
            continue
        if ended.rebooted:
            await agent.rebooted(ended.ended_at)
        for fault in await agent.remediation_ended(ended.ended_at):
            fleet.fault(fault)
