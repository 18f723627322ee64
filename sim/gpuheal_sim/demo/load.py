"""`gpuheal demo --load`: an event generator on every node's intake, at the seed's per-node rates.

Each node's `gpuheal-eventgen` runs in the demo's process (`gpuheal.tools.eventgen.run`), sending
its continuous mix to that node's agent over the agent's unix socket, as the chart's event-generator
DaemonSet does on a cluster. The mix holds fatal XID 79 events: each starts a remediation of its
node, so a heavier load brings more nodes under the fleet governor's budget beside the demo's fault.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from temporalio.client import Client

from gpuheal.control import remediations
from gpuheal.tools import eventgen

if TYPE_CHECKING:  # `gpuheal demo --help` needs only the levels
    from gpuheal.agents.agent import Agent


class Load(enum.StrEnum):
    """The seed's three load levels for a 1,500-node cluster (30, 100 and 300 events/s in all)."""

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"

    @property
    def per_node_rate(self) -> float:
        """Events/s each node's generator sends (1.2, 4 and 12 a minute)."""
        return _PER_NODE_RATE[self]


_PER_NODE_RATE = {Load.LIGHT: 0.02, Load.MEDIUM: 0.067, Load.HEAVY: 0.2}


class IntakeRate:
    """The events the intakes took, sampled: the rate over the last `window` seconds of samples."""

    def __init__(self, agents: Sequence[Agent], window: float = 10.0) -> None:
        self._agents = agents
        self._window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def taken(self) -> int:
        return sum(agent.intake.events_taken for agent in self._agents if agent.intake is not None)

    def start(self) -> None:
        self._samples.clear()
        self._samples.append((time.monotonic(), self.taken()))

    def sample(self) -> float:
        """Events/s taken over the last `window` seconds (or since `start`, when that is sooner)."""
        now, taken = time.monotonic(), self.taken()
        self._samples.append((now, taken))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        since, before = self._samples[0]
        return (taken - before) / max(now - since, 1e-9)


class RunningLoad:
    """The generators, one per agent, from `async with` until its end; the intake rate is shown
    every `every` seconds meanwhile, and a summary at the end."""

    def __init__(
        self, console: Console, client: Client, load: Load, agents: Sequence[Agent], every: float = 2.0
    ) -> None:
        self._console = console
        self._client = client
        self._load = load
        self._agents = agents
        self._every = every
        self._stop = asyncio.Event()
        self._generators: list[asyncio.Task[eventgen.Stats]] = []
        self._reporter: asyncio.Task[None] | None = None
        self._rate = IntakeRate(agents)
        # When the load began, by the monotonic clock (its lines) and the wall clock (remediations).
        self._started = 0.0
        self._since = datetime.min.replace(tzinfo=UTC)

    @property
    def asked(self) -> float:
        """Events/s asked of every generator together."""
        return self._load.per_node_rate * len(self._agents)

    async def __aenter__(self) -> RunningLoad:
        self._started, self._since = time.monotonic(), datetime.now(UTC)
        self._rate.start()
        for agent in self._agents:
            assert agent.intake is not None, "the agent is started"
            settings = eventgen.Settings(
                node=agent.settings.node,
                socket=agent.intake.settings.socket_path,
                rate=self._load.per_node_rate,
                # It names the node's GPUs, from the agent's Device API, as in the chart.
                device_api=agent.device_api_socket,
            )
            # No signal handlers: the demo's own SIGINT/SIGTERM stop it, and it has no SIGUSR1 to give.
            self._generators.append(asyncio.create_task(eventgen.run(settings, self._stop, lambda *_: None)))
        self._console.print(
            f"load ({self._load}): gpuheal-eventgen on {len(self._agents)} node(s) at {self._load.per_node_rate} "
            f"events/s each ({self.asked:.2f}/s in all), the mix with its 8% fatal XID 79"
        )
        self._reporter = asyncio.create_task(self._report())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        self._stop.set()
        results = await asyncio.gather(*self._generators, return_exceptions=True)
        stats = [result for result in results if isinstance(result, eventgen.Stats)]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                self._console.print(f"[red]load: a generator failed: {type(result).__name__}: {result}[/]")
        if exc_type is not None:
            return
        elapsed = time.monotonic() - self._started
        sent = sum(s.sent for s in stats)
        fatal = sum(s.by_kind.get(eventgen.Kind.FATAL_XID, 0) for s in stats)
        taken = self._rate.taken()
        self._console.print(
            f"load: {sent} events sent, {taken} taken by {len(self._agents)} intake(s) in {elapsed:.1f}s "
            f"({taken / max(elapsed, 1e-9):.2f} events/s; {self.asked:.2f}/s asked), {fatal} of them fatal XID 79"
        )
        if fatal:
            begun = await self._remediations_begun()
            self._console.print(f"load: remediations begun since the load started: {', '.join(begun) or 'none yet'}")

    async def _remediations_begun(self) -> list[str]:
        """Each loaded node whose remediation began since the load did, with its phase now."""
        begun = []
        for agent in self._agents:
            with contextlib.suppress(remediations.RemediationNotFound):
                status = await remediations.status(self._client, agent.settings.node)
                if status.history and status.history[0].entered_at >= self._since:
                    begun.append(f"{status.node} ({status.phase.value})")
        return begun

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            elapsed = time.monotonic() - self._started
            self._console.print(
                f"  [dim]{elapsed:7.2f}s[/]  [cyan]load[/]   intake {self._rate.sample():.2f} events/s over the last "
                f"{min(elapsed, 10):.0f} s ({self._rate.taken()} taken on {len(self._agents)} node(s), "
                f"{self.asked:.2f}/s asked)"
            )
