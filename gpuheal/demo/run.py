"""The demo: an embedded Temporal, a simulated fleet, the worker, one fatal XID, watched live."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from rich.console import Console
from temporalio.client import Client

from gpuheal.control import remediations
from gpuheal.demo.devserver import DevServer, start_dev_server
from gpuheal.demo.view import PhaseView, phase_table
from gpuheal.domain.catalog import action_for_xid
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.simulator import FleetConfig, SimulatedCluster
from gpuheal.worker import WorkerSettings, running_worker

_FAULTY_GPU = 3


@dataclass(frozen=True, slots=True)
class DemoOptions:
    nodes: int = 4
    gpus_per_node: int = 8
    xid: int = 79
    manual: bool = False
    keep: bool = False
    reboot_seconds: float = 2.0
    state_dir: Path = Path(".state/demo")
    port: int = 7233
    # The whole remediation must end within this, or the demo fails.
    deadline: timedelta = timedelta(minutes=2)


def demo_policy(manual: bool) -> RemediationPolicy:
    """Production defaults with the waits shortened to demo scale."""
    return RemediationPolicy(
        drain=DrainPolicy(
            retry_initial=timedelta(milliseconds=250),
            retry_max=timedelta(seconds=2),
            timeout=timedelta(minutes=2),
            delete_after=timedelta(seconds=20),
        ),
        repair=RepairPolicy(
            provider="simulator",
            require_approval=manual,
            node_poll_interval=timedelta(milliseconds=250),
            node_ready_timeout=timedelta(minutes=1),
            verify_timeout=timedelta(seconds=30),
        ),
    )


async def run_demo(options: DemoOptions) -> int:
    """Run the demo; the exit status is 0 once the node is back in service."""
    console = Console(soft_wrap=True)
    action = action_for_xid(options.xid)
    if not action.is_actionable:
        console.print(f"[red]XID {options.xid} is not fatal in the catalog (action NONE): nothing to remediate[/]")
        return 2
    console.print("[bold]gpuheal demo[/]: starting Temporal, the simulated fleet and the worker …")
    server = await start_dev_server(options.state_dir / "temporal", port=options.port, ui=True)
    try:
        fleet = FleetConfig(
            nodes=options.nodes, gpus_per_node=options.gpus_per_node, reboot_seconds=options.reboot_seconds
        )
        async with SimulatedCluster(fleet, state_dir=options.state_dir / "fleet") as cluster:
            settings = WorkerSettings(kubeconfig=cluster.kubeconfig, simulator_url=cluster.url, metrics_address=None)
            async with running_worker(settings, server.client):
                _print_addresses(console, server, cluster.url, cluster.kubeconfig)
                node = sorted(cluster.node_names())[min(1, options.nodes - 1)]
                status = await _remediate(console, server.client, cluster.url, node, options)
                if options.keep:
                    console.print("[bold]--keep[/]: everything keeps running; Ctrl-C to stop.")
                    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
                        await asyncio.Event().wait()
    finally:
        await server.shutdown()
    return 0 if status is not None and status.phase is Phase.RESOLVED else 1


async def _remediate(
    console: Console, client: Client, sim_url: str, node: str, options: DemoOptions
) -> RemediationStatus | None:
    """Inject the XID, report it as the node's agent would, and follow the workflow to its end."""
    detected = datetime.now(UTC)
    async with aiohttp.ClientSession() as session:
        fault_url = f"{sim_url}/sim/v1/nodes/{node}/faults"
        async with session.post(fault_url, json={"xid": options.xid, "gpu": _FAULTY_GPU}) as response:
            response.raise_for_status()
            gpu_uuid = str((await response.json()).get("gpu", {}).get("uuid", ""))
    fault = Fault(
        node=node,
        action=action_for_xid(options.xid),
        xid=options.xid,
        gpu_uuids=(gpu_uuid,) if gpu_uuid else (),
        message=f"Xid {options.xid} injected by gpuheal demo",
        source="gpuheal-demo",
        detected_at=detected,
    )
    console.print(f"injected XID {options.xid} on {node} GPU {_FAULTY_GPU} → {fault.action.name}")
    handle = await remediations.report_fault(client, fault, demo_policy(options.manual))
    console.print(f"workflow [bold]{handle.id}[/] started\n")
    view = PhaseView(console, detected)
    deadline = detected + options.deadline + (timedelta(hours=1) if options.manual else timedelta(0))
    status: RemediationStatus | None = None
    while datetime.now(UTC) < deadline:
        status = await remediations.status(client, node)
        view.update(status)
        if status.phase.is_final:
            break
        await asyncio.sleep(0.1)
    else:
        console.print(f"[red]the remediation did not finish within {options.deadline}[/]")
        return status
    assert status is not None
    console.print()
    console.print(phase_table(status, datetime.now(UTC)))
    if status.phase is Phase.RESOLVED:
        console.print(
            f"[green]{node} is back in service[/] (cycle {(datetime.now(UTC) - detected).total_seconds():.1f}s)"
        )
    else:
        console.print(f"[red]{node} ended {status.phase.value}: {status.reason}[/]")
    return status


def _print_addresses(console: Console, server: DevServer, sim_url: str, kubeconfig: Path) -> None:
    console.print(f"  Temporal     {server.address}  (export TEMPORAL_ADDRESS={server.address} for temporal/gpuheal)")
    console.print(f"  Temporal UI  {server.ui_url}")
    console.print(f"  fleet        {sim_url}  (KUBECONFIG={kubeconfig})")
