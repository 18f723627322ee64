"""The publisher: the one sink every detector's health events go through.

Each accepted event fans out to up to three dependencies, each a `Lane` with its own spool, so a
dependency that is away holds up only its own deliveries and each keeps its events in order:

- **Device API** (`device-api`): the `Healthy` condition of every GPU of the node the event names
  (all of them when it names none), for fatal and healthy events. Non-fatal unhealthy events are
  informational and leave the condition alone, since device plugins withdraw GPUs whose condition
  is False.
- **Kubernetes** (`kubernetes`): the node's `GpuHealthy` condition for fatal and healthy events,
  and a Kubernetes Event on the Node for every non-fatal event (Warning, or Normal when healthy).
- **Temporal** (`temporal`): fatal, actionable events (`needs_remediation`) start or join the
  node's `remediate-<node>` workflow.

STORE_ONLY events never change the cluster, and the publisher reads the Device API condition as
part of the cluster (device plugins act on it): such events are only logged. Conditions come from
`OpenFaults`, one ledger per lane, updated when the lane delivers, so a spooled backlog replays
into the same verdicts in the same order.

Spools live under `spool_dir/<lane>/`, each within its own `SpoolLimits` (64 MiB and 10,000
entries on disk, 8 MiB of faults in memory by default); in each, events that need remediation are
never dropped to make room: what the disk cannot take is held in memory, and `problems` (the
agent's readiness) says so, as it does for faults moved aside unread; `close` gives faults held in
memory a grace to be delivered or written to disk. A new publisher on the same directory delivers
whatever an earlier one left behind. `submit` raises `SpoolFull` only when a lane can hold a fault
neither on disk nor in memory; the lanes that took the event keep it, so a resent event may reach
them twice, which every backend takes as once (see `lane`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from gpuheal.agents.publisher.device_api import GpuHealthApi, publish_gpu_health
from gpuheal.agents.publisher.kubernetes import NodeReporter
from gpuheal.agents.publisher.lane import Deliver, Lane, RetrySettings
from gpuheal.agents.publisher.ledger import OpenFaults, is_fault
from gpuheal.agents.publisher.spool import Spool, SpoolLimits, SpoolStats
from gpuheal.agents.publisher.temporal import Remediations
from gpuheal.domain.health import HealthEvent

log = logging.getLogger(__name__)

# Where the agent keeps its spools unless told otherwise (a hostPath, so they outlive the pod).
DEFAULT_SPOOL_DIR = Path("/var/lib/gpuheal/spool")

DEVICE_API = "device-api"
KUBERNETES = "kubernetes"
TEMPORAL = "temporal"


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Spool bounds (per dependency) and delivery timing."""

    spool: SpoolLimits = field(default_factory=SpoolLimits)
    retry: RetrySettings = field(default_factory=RetrySettings)


class Publisher:
    """Routes health events to the Device API, Kubernetes and Temporal; any of them may be left out.

    `async with Publisher(spool_dir, remediations=..., nodes=..., device_api=...) as publisher:` then
    `await publisher.submit(event)`. The backends' connections belong to the caller.
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        device_api: GpuHealthApi | None = None,
        nodes: NodeReporter | None = None,
        remediations: Remediations | None = None,
        settings: PublisherSettings | None = None,
    ) -> None:
        self.settings = settings or PublisherSettings()
        self._device_api = device_api
        self._nodes = nodes
        self._remediations = remediations
        self._gpu_faults = OpenFaults()
        self._node_faults = OpenFaults()
        self._lanes: dict[str, Lane] = {}
        # Unix time a dependency last took an event (None before one did): the agent's metrics report it.
        self.last_delivered: float | None = None
        if device_api is not None:
            self._add_lane(spool_dir, DEVICE_API, self._to_device_api)
        if nodes is not None:
            self._add_lane(spool_dir, KUBERNETES, self._to_kubernetes)
        if remediations is not None:
            self._add_lane(spool_dir, TEMPORAL, self._to_temporal)

    def _add_lane(self, spool_dir: Path, name: str, deliver: Deliver) -> None:
        spool = Spool(spool_dir / name, self.settings.spool)

        async def delivered(event: HealthEvent) -> None:
            await deliver(event)
            self.last_delivered = time.time()

        self._lanes[name] = Lane(name, delivered, spool, self.settings.retry)

    async def start(self) -> None:
        """Resume delivering events spooled by an earlier run."""
        for lane in self._lanes.values():
            lane.start()

    async def close(self) -> None:
        """Stop retrying; undelivered events stay spooled for the next publisher on the directory.

        Lanes holding faults in memory get the shutdown grace (see `Lane.close`), all at once.
        """
        await asyncio.gather(*(lane.close() for lane in self._lanes.values()))

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def pending(self) -> dict[str, int]:
        """Spooled, undelivered events per dependency."""
        return {name: lane.pending for name, lane in self._lanes.items()}

    def spool_stats(self) -> dict[str, SpoolStats]:
        """Each dependency's spool as it stands (for metrics)."""
        return {name: lane.stats() for name, lane in self._lanes.items()}

    def problems(self) -> list[str]:
        """Why a fault may not reach its remediation: it would be lost if the agent stopped now, or it
        waits for a person; empty when neither."""
        found = []
        for name, stats in self.spool_stats().items():
            if stats.held:
                found.append(f"{name}: {stats.held} actionable events held in memory (the disk refused them)")
            if stats.over_budget:
                found.append(f"{name}: spool over budget ({stats.entries} entries, {stats.bytes} bytes)")
            if stats.faults_aside:
                found.append(
                    f"{name}: {stats.faults_aside} actionable events could not be read from the spool and lie moved "
                    "aside (*.a.json.bad): no remediation until a person acts"
                )
        return found

    async def wait_delivered(self) -> None:
        """Return once every spool is empty (after `start`, which resumes spooled deliveries)."""
        for lane in self._lanes.values():
            await lane.wait_idle()

    async def submit(self, event: HealthEvent) -> None:
        """Deliver the event to the dependencies it concerns, or spool it; returns when each has it."""
        if not event.changes_the_cluster:
            log.info(
                "store-only health event %s from %s on %s: %s",
                event.id,
                event.agent,
                event.node,
                event.message,
                extra={"node": event.node, "gpu": event.gpu_uuids},
            )
            return
        actionable = event.needs_remediation
        targets = []
        if DEVICE_API in self._lanes and (is_fault(event) or event.is_healthy):
            targets.append(self._lanes[DEVICE_API])
        if KUBERNETES in self._lanes:
            targets.append(self._lanes[KUBERNETES])
        if TEMPORAL in self._lanes and actionable:
            targets.append(self._lanes[TEMPORAL])
        if len(targets) == 1:
            await targets[0].submit(event, actionable=actionable)
        elif targets:
            # The lanes are independent; a slow one should not delay the others' deliveries. Each
            # finishes with the event before a lane's failure (SpoolFull) is raised.
            outcomes = await asyncio.gather(
                *(lane.submit(event, actionable=actionable) for lane in targets), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _to_device_api(self, event: HealthEvent) -> None:
        assert self._device_api is not None
        await publish_gpu_health(self._device_api, self._gpu_faults, event)

    async def _to_kubernetes(self, event: HealthEvent) -> None:
        assert self._nodes is not None
        if is_fault(event) or event.is_healthy:
            self._node_faults.apply(event)
            await self._nodes.set_gpu_condition(event.node, self._node_faults.node_verdict(event.node))
        if not event.is_fatal:
            await self._nodes.record_event(event)

    async def _to_temporal(self, event: HealthEvent) -> None:
        assert self._remediations is not None
        await self._remediations.report(event.to_fault())
