"""`gpuheal demo --storm N --budget K`: N nodes report a fatal XID at once; K may be out of service.

Each fault is injected into the node's simulated GPU (the node's GpuHealthy turns false, as its
agent reports it) and reported to Temporal as a node agent's publisher reports it. Every
remediation asks the fleet governor for a permit before it touches its node: those beyond the
budget wait in AwaitingBudget with their node untouched and go on, in arrival order, as permits come
back. How many nodes were out of service at once is counted from the simulated cluster's own Node
objects (a watch), not from what gpuheal believes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from gpuheal.control import governor, remediations
from gpuheal.control.governor import governor_id_for
from gpuheal.domain.catalog import action_for_xid
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.remediation import RemediationStatus
from gpuheal_sim.demo.quarantine import QuarantineCount, counting_quarantines
from gpuheal_sim.demo.view import PhaseView
from gpuheal_sim.simulator import SimulatedCluster


@dataclass(frozen=True, slots=True)
class Storm:
    """What the storm does: which nodes fault, with which XID, under which limits and policy."""

    nodes: tuple[str, ...]
    xid: int
    gpu: int
    budget: int
    policy: RemediationPolicy
    task_queue: str
    # Seconds the whole storm may take before the demo gives up.
    deadline: float


async def run_storm(console: Console, client: Client, cluster: SimulatedCluster, storm: Storm) -> int:
    """Inject the storm, follow every remediation to its end, and print the count of nodes out of service.

    The last line printed is `max quarantined at once: K`; 0 is returned when every remediation
    resolved and K never passed the budget.
    """
    async with counting_quarantines(cluster.kubeconfig) as count:
        started = datetime.now(UTC)
        await asyncio.gather(*(_fault(client, cluster, node, storm) for node in storm.nodes))
        console.print(
            f"injected XID {storm.xid} on {len(storm.nodes)} of {len(cluster.node_names())} nodes at once; "
            f"the fleet governor lets {storm.budget} be out of service at once\n"
        )
        statuses = await _follow(console, client, storm, started, count)
    console.print()
    console.print(_summary(statuses))
    unresolved = [s for s in statuses.values() if s.phase is not Phase.RESOLVED]
    for status in unresolved:
        console.print(f"[red]{status.node} ended {status.phase.value}: {status.reason}[/]")
    if count.most > storm.budget:
        console.print(f"[red]more nodes were out of service at once than the budget of {storm.budget}[/]")
    elif not unresolved:
        console.print(f"[green]all {len(statuses)} nodes are back in service[/]")
    console.print(f"max quarantined at once: {count.most}")
    return 0 if not unresolved and len(statuses) == len(storm.nodes) and count.most <= storm.budget else 1


async def _fault(client: Client, cluster: SimulatedCluster, node: str, storm: Storm) -> None:
    injected = cluster.inject_fault(node, xid=storm.xid, gpu=storm.gpu)
    fault = Fault(
        node=node,
        action=action_for_xid(storm.xid),
        xid=storm.xid,
        gpu_uuids=(str(injected["gpu"]["uuid"]),),
        source="gpuheal demo --storm",
        event_id=str(uuid.uuid4()),
        detected_at=datetime.now(UTC),
    )
    await remediations.report_fault(client, fault, storm.policy, task_queue=storm.task_queue)


async def _follow(
    console: Console, client: Client, storm: Storm, started: datetime, count: QuarantineCount
) -> dict[str, RemediationStatus]:
    """Print each remediation's phases as they change, and the nodes out of service whenever that
    count changes, until every remediation has settled (or the storm's deadline has passed)."""
    views = {node: PhaseView(console, started, label=node) for node in storm.nodes}
    latest: dict[str, RemediationStatus] = {}
    # Why each waiting node waits, as last printed.
    shown_why: dict[str, str] = {}
    shown_out = -1
    # Every poll queries each open remediation: a larger storm is polled less often.
    interval = 0.1 * max(1.0, len(storm.nodes) / 20)
    governor_id = governor_id_for(storm.task_queue)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + storm.deadline
    while loop.time() < give_up:
        open_nodes = [n for n in storm.nodes if n not in latest or not latest[n].phase.is_settled]
        if not open_nodes:
            break
        found = await asyncio.gather(*(remediations.status(client, n) for n in open_nodes))
        waiting = {w.request.node: w.why for w in (await governor.status(client, governor_id)).state.waiting}
        elapsed = (datetime.now(UTC) - started).total_seconds()
        for status in found:
            latest[status.node] = status
            views[status.node].update(status)
            why = waiting.get(status.node, "") if status.phase is Phase.AWAITING_BUDGET else ""
            if why and shown_why.get(status.node) != why:
                shown_why[status.node] = why
                console.print(f"  [dim]{elapsed:7.2f}s[/]  {status.node}  [yellow]waits: {why}[/]")
        if count.now != shown_out:
            shown_out = count.now
            console.print(
                f"  [dim]{elapsed:7.2f}s[/]  [cyan]out of service now: {count.now}[/] (most at once: {count.most})"
            )
        await asyncio.sleep(interval)
    else:
        console.print(f"[red]the storm did not settle within {storm.deadline:.0f}s[/]")
    return latest


def _summary(statuses: dict[str, RemediationStatus]) -> Table:
    """Per node: how it ended, how long it waited for a permit, and how long the remediation took."""
    table = Table(title="The storm, node by node")
    for column in ("node", "phase", "waited for a permit (s)", "total (s)"):
        table.add_column(column, justify="left" if column in ("node", "phase") else "right")
    for node, status in sorted(statuses.items()):
        history = status.history
        waited = sum(
            (following.entered_at - entry.entered_at).total_seconds()
            for entry, following in itertools.pairwise(history)
            if entry.phase is Phase.AWAITING_BUDGET
        )
        total = (history[-1].entered_at - history[0].entered_at).total_seconds() if history else math.nan
        table.add_row(node, status.phase.value, f"{waited:.2f}", f"{total:.2f}")
    return table
