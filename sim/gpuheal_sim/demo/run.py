"""The demo: an embedded Temporal, a simulated fleet, the worker, one fatal XID, watched live."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from temporalio.client import Client

from gpuheal.agents.agent import Agent, AgentSettings
from gpuheal.control import remediations
from gpuheal.domain.catalog import action_for_xid
from gpuheal.domain.fleet import BreakerPolicy, FleetBudget, FleetPolicy
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import DrainPolicy, LoopPolicy, RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.shutdown import shutdown_requested
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.agent_settings import simulated_agent_settings
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from gpuheal_sim.demo.injector import DemoInjector, demo_injector
from gpuheal_sim.demo.load import Load, RunningLoad
from gpuheal_sim.demo.storm import Storm, run_storm
from gpuheal_sim.demo.view import PhaseView, phase_table
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from gpuheal_sim.simulator.access import parse_manifests

# The GPU the demo's XID names (the last one on nodes with fewer).
_FAULTY_GPU = 3
# What the Helm chart gives the worker and the agents (its ServiceAccounts, RBAC and admission
# policy, rendered by Helm; tests/helm/test_chart.py keeps this copy identical to the chart).
CHART_ACCESS = Path(__file__).with_name("chart-access.yaml")


def chart_service_account(manifests: str, component: str) -> tuple[str, str]:
    """(namespace, name) of the chart's ServiceAccount for `component` ("worker", "agent" or "injector-api")."""
    for doc in parse_manifests(manifests):
        labels = (doc.get("metadata") or {}).get("labels") or {}
        if doc["kind"] == "ServiceAccount" and labels.get("app.kubernetes.io/component") == component:
            return str(doc["metadata"]["namespace"]), str(doc["metadata"]["name"])
    raise LookupError(f"no ServiceAccount for the {component} in {CHART_ACCESS}")


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
    # Where the fleet lives ("sim", "aws", "azure", "gcp", "nebius", "redfish"): whose SDK reboots the node.
    provider: str = "sim"
    # Nodes that run a real agent (fake NVML, a kernel log file).
    agents: int = 2
    # The whole remediation must end within this, or the demo fails (a storm gets this per wave).
    deadline: timedelta = timedelta(minutes=2)
    # Nodes that fault at once (0: one node, through its agent's kernel log), and how many
    # remediations the fleet governor lets hold their nodes out of service at once.
    storm: int = 0
    budget: int = 3
    # Event generators on every node's intake beside the fault (None: no load).
    load: Load | None = None
    # How the XID gets into the node's kernel log: written by the demo ("kernel-log"), or injected
    # through the fault injector's central API ("injector").
    via: str = "kernel-log"

    @property
    def fleet_nodes(self) -> int:
        """The fleet's size: a storm leaves two nodes of the fleet in service at least."""
        return max(self.nodes, self.storm + 2) if self.storm else self.nodes


def demo_policy(manual: bool) -> RemediationPolicy:
    """Production defaults with the waits shortened to demo scale."""
    return RemediationPolicy(
        drain=DrainPolicy(
            retry_initial=timedelta(milliseconds=250),
            retry_max=timedelta(seconds=2),
            timeout=timedelta(minutes=2),
            delete_after=timedelta(seconds=20),
            never_allows_for=timedelta(seconds=20),
        ),
        repair=RepairPolicy(
            require_approval=manual,
            node_ready_timeout=timedelta(minutes=1),
            verify_timeout=timedelta(seconds=30),
        ),
        # Every run faults the same GPU of the same node again, and the state dir keeps the runs
        # before it: here that is no repeat offence.
        loops=LoopPolicy(max_per_node=0, gpu_window=timedelta(0)),
    )


def demo_fleet(budget: int) -> FleetPolicy:
    """The governor's limits in the demo: `budget` remediations at once, whatever the fleet's size.

    The breaker is out of the way: the demo's Temporal keeps its state between runs, and demos run
    one after the other within the breaker's window would otherwise trip it.
    """
    return FleetPolicy(
        budget=FleetBudget(max_concurrent=budget, max_percent=100),
        breaker=BreakerPolicy(share=1, at_least=1_000_000),
    )


async def run_demo(options: DemoOptions) -> int:
    """Run the demo; the exit status is 0 once the node is back in service.

    SIGTERM or Ctrl-C stops it at any point: everything it started (the worker, the agents, the
    fleet, the Temporal dev server) is stopped in turn before it returns, with 1 unless the
    remediation had already ended in Resolved (as under --keep).
    """
    console = Console(soft_wrap=True)
    stop = shutdown_requested()
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    demo = asyncio.create_task(_run(console, options, outcome, stop))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({demo, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not demo.done():
        console.print("stopping: the worker, the node agents, the fleet and Temporal …")
        demo.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await demo
    if stop.is_set():
        console.print("stopped: everything the demo started is down")
    if not outcome.done():
        console.print("the remediation had not ended")
        return 1
    return outcome.result()


async def _run(console: Console, options: DemoOptions, outcome: asyncio.Future[int], stop: asyncio.Event) -> None:
    """Everything the demo starts, in order; `outcome` is set once the remediation has ended."""
    action = action_for_xid(options.xid)
    if not action.is_actionable:
        console.print(f"[red]XID {options.xid} is not fatal in the catalog (action NONE): nothing to remediate[/]")
        outcome.set_result(2)
        return
    agents = "" if options.storm else " and the node agents"
    console.print(f"[bold]gpuheal demo[/]: starting Temporal, the simulated fleet, the worker{agents} …")
    server = await start_dev_server(options.state_dir / "temporal", port=options.port, ui=True)
    access = CHART_ACCESS.read_text()
    try:
        fleet = FleetConfig(
            nodes=options.fleet_nodes,
            gpus_per_node=options.gpus_per_node,
            reboot_seconds=options.reboot_seconds,
            cloud=options.provider,
            access_manifests=access,
        )
        async with SimulatedCluster(fleet, state_dir=options.state_dir / "fleet") as cluster:
            # The worker and each agent call the API as the chart's service accounts, an agent's
            # token bound to its node as a pod's projected token is.
            credentials = options.state_dir / "credentials"
            worker_kubeconfig = cluster.service_account_kubeconfig(
                *chart_service_account(access, "worker"), credentials / "worker.kubeconfig"
            )
            agent_account = chart_service_account(access, "agent")
            await _end_earlier_runs(console, server.client)
            await _run_fleet(console, options, server, cluster, worker_kubeconfig, agent_account, outcome, stop)
    finally:
        await server.shutdown()


async def _run_fleet(
    console: Console,
    options: DemoOptions,
    server: DevServer,
    cluster: SimulatedCluster,
    worker_kubeconfig: Path,
    agent_account: tuple[str, str],
    outcome: asyncio.Future[int],
    stop: asyncio.Event,
) -> None:
    """The worker and the node agents on the running fleet; one fault injected and followed to its end."""
    credentials = worker_kubeconfig.parent
    settings = WorkerSettings(
        kubeconfig=worker_kubeconfig,
        simulator_url=cluster.control_url,
        metrics_address=None,
        # A stopped demo cancels what is in flight at once; the remediation is durable in Temporal.
        graceful_shutdown=timedelta(seconds=1),
        fleet=demo_fleet(options.budget),
    )
    async with (
        cloud_client_environment(cluster),
        running_worker(settings, server.client),
        contextlib.AsyncExitStack() as agents,
    ):
        if options.storm:
            _print_addresses(console, server, cluster.url, cluster.kubeconfig, 0, None)
            outcome.set_result(
                await run_storm(
                    console, server.client, cluster, _storm(options, settings.task_queue, sorted(cluster.node_names()))
                )
            )
            await _keep(console, options, stop)
            return
        nodes = sorted(cluster.node_names())
        # The agents' unix sockets live under a short private directory: a socket path may not exceed
        # 107 bytes, which a checkout at a deep path would pass under the state directory.
        sockets = Path(agents.enter_context(tempfile.TemporaryDirectory(prefix="gpuheal-demo-")))
        by_node = {}
        for node in nodes[: options.agents]:
            kubeconfig = cluster.service_account_kubeconfig(
                *agent_account, credentials / f"agent-{node}.kubeconfig", node=node
            )
            agent_settings = _agent_settings(options, node, server, kubeconfig, sockets / node)
            # The agent is its node's only GPU agent, and reads the node's boot ID as on a real node.
            cluster.attach_agent(node, agent_settings.boot_id_path)
            by_node[node] = await agents.enter_async_context(Agent(agent_settings))
        _print_addresses(console, server, cluster.url, cluster.kubeconfig, len(by_node), sockets)
        injector = None
        if options.via == "injector":
            logs = {node: agent.settings.kernel_log for node, agent in by_node.items() if agent.settings.kernel_log}
            api_account = chart_service_account(CHART_ACCESS.read_text(), "injector-api")
            api_kubeconfig = cluster.service_account_kubeconfig(*api_account, credentials / "injector-api.kubeconfig")
            injector = await agents.enter_async_context(
                demo_injector(
                    cluster, api_account[0], logs, options.gpus_per_node, sockets / "injector", api_kubeconfig
                )
            )
            console.print(
                f"  injector     {injector.url}  (POST /api/v1/faults/gpu/inject/xid-<n>; as the chart's "
                "injector-api account)"
            )
        faulty = by_node[nodes[min(1, len(by_node) - 1)]]
        if options.manual:
            console.print(
                f"  decide       TEMPORAL_ADDRESS={server.address} {installed('gpuheal')} approve "
                f"{faulty.settings.node} --reason WHY  (or reject), in another terminal"
            )
        # The remediation followed is the faulty node's begun from here on: under load, a generator's
        # fatal XID on that node may begin it just before the demo's own, which then joins it.
        since = datetime.now(UTC)
        async with contextlib.AsyncExitStack() as load:
            if options.load is not None:
                await load.enter_async_context(
                    RunningLoad(console, server.client, options.load, list(by_node.values()))
                )
            status = await _remediate(console, server.client, faulty, options, since, injector)
        outcome.set_result(0 if status is not None and status.phase is Phase.RESOLVED else 1)
        await _keep(console, options, stop)


async def _keep(console: Console, options: DemoOptions, stop: asyncio.Event) -> None:
    if options.keep:
        console.print("[bold]--keep[/]: everything keeps running; Ctrl-C to stop.")
        await stop.wait()


def _storm(options: DemoOptions, task_queue: str, nodes: list[str]) -> Storm:
    return Storm(
        nodes=tuple(nodes[: options.storm]),
        xid=options.xid,
        gpu=min(_FAULTY_GPU, options.gpus_per_node - 1),
        budget=options.budget,
        policy=demo_policy(manual=False),
        task_queue=task_queue,
        deadline=options.deadline.total_seconds() * math.ceil(options.storm / options.budget),
    )


async def _end_earlier_runs(console: Console, client: Client) -> None:
    """Terminate what an earlier demo, stopped midway, left running in the kept Temporal state.

    Its fleet is gone: its remediations would act on this fleet's nodes of the same names (and take
    in their faults), and its governor would go on counting their permits. The demo's Temporal
    serves only demos of this state directory, one at a time, so whatever runs there is theirs.
    """
    ended = []
    async for execution in client.list_workflows("ExecutionStatus = 'Running'"):
        await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
            "left running by an earlier demo; its fleet is gone"
        )
        ended.append(execution.id)
    if ended:
        console.print(f"  ended {len(ended)} workflow(s) an earlier demo left running: {', '.join(sorted(ended))}")


@contextlib.asynccontextmanager
async def cloud_client_environment(cluster: SimulatedCluster) -> AsyncIterator[None]:
    """Give this process the environment a worker on that cloud has, pointed at the simulator.

    The demo's worker runs in this process, and the cloud SDKs read their endpoints and
    credentials from the process environment through their standard chains.
    """
    saved = dict(os.environ)
    os.environ.update(cluster.client_environment())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _agent_settings(
    options: DemoOptions, node: str, server: DevServer, kubeconfig: Path, socket_dir: Path
) -> AgentSettings:
    """A node agent as it runs on a node, with a fake NVML and a file for its kernel log."""
    return simulated_agent_settings(
        node,
        options.state_dir / "nodes" / node,
        options.gpus_per_node,
        socket_dir=socket_dir,
        temporal_address=server.address,
        kubeconfig=kubeconfig,
        remediation_policy=demo_policy(options.manual),
    )


async def _remediate(
    console: Console,
    client: Client,
    agent: Agent,
    options: DemoOptions,
    since: datetime,
    injector: DemoInjector | None,
) -> RemediationStatus | None:
    """Write the XID into the node's kernel log, as the injector does (or have the injector do it),
    and follow the remediation to its end."""
    node = agent.settings.node
    faulty = min(_FAULTY_GPU, options.gpus_per_node - 1)
    gpu = agent.nvml.device_info(faulty)
    assert agent.settings.kernel_log is not None
    detected = datetime.now(UTC)
    if injector is not None:
        fault_id = await injector.inject(node, options.xid, faulty)
        console.print(
            f"injected XID {options.xid} for GPU {faulty} ({gpu.uuid}) on {node} through "
            f"POST /api/v1/faults/gpu/inject/xid-{options.xid}: fault {fault_id}; following it\n"
        )
    else:
        _write_kernel_log(console, agent, options, faulty)
    view = PhaseView(console, detected)
    deadline = detected + options.deadline + (timedelta(hours=1) if options.manual else timedelta(0))
    status: RemediationStatus | None = None
    while datetime.now(UTC) < deadline:
        try:
            status = await remediations.status(client, node)
        except remediations.RemediationNotFound:
            status = None
        if status is None or (status.history and status.history[0].entered_at < since):
            await asyncio.sleep(0.05)  # the agent has not reported it yet (a kept state dir holds older runs)
            continue
        view.update(status)
        if status.phase.is_settled:
            break
        await asyncio.sleep(0.1)
    else:
        console.print(f"[red]the remediation did not finish within {options.deadline}[/]")
        return status
    assert status is not None
    console.print()
    console.print(phase_table(status, datetime.now(UTC)))
    for step in status.repair:
        console.print(f"repair: {step}")
    if status.phase is Phase.RESOLVED:
        cycle = (datetime.now(UTC) - detected).total_seconds()
        console.print(f"[green]{node} is back in service[/] (kernel log line to back in service: {cycle:.1f}s)")
    elif status.phase is Phase.ESCALATED:
        console.print(f"[red]{node} is escalated, held cordoned for a person: {status.reason}[/]")
    else:
        console.print(f"[red]{node} ended {status.phase.value}: {status.reason}[/]")
    return status


def _write_kernel_log(console: Console, agent: Agent, options: DemoOptions, faulty: int) -> None:
    """Append the XID record for GPU `faulty` to the node's kernel log file, as the kernel would show it."""
    gpu = agent.nvml.device_info(faulty)
    assert agent.settings.kernel_log is not None
    with agent.settings.kernel_log.open("a") as kernel_log:
        kernel_log.write(
            f"3,1042,{int(time.monotonic() * 1e6)},-;NVRM: NVRM: Xid (PCI:{gpu.pci_bus_id}): "
            f"{options.xid}, GPU has fallen off the bus\n"
        )
    console.print(
        f"wrote XID {options.xid} for GPU {faulty} ({gpu.uuid}) into {agent.settings.node}'s kernel log "
        f"({agent.settings.kernel_log}); its agent reports it\n"
    )


def _print_addresses(
    console: Console, server: DevServer, sim_url: str, kubeconfig: Path, agents: int, sockets: Path | None
) -> None:
    console.print(f"  Temporal     {server.address}  (export TEMPORAL_ADDRESS={server.address} for temporal/gpuheal)")
    console.print(f"  Temporal UI  {server.ui_url}  (its log: {server.log})")
    console.print(f"  fleet        {sim_url}  (KUBECONFIG={kubeconfig} {installed('kubectl')} get nodes)")
    if sockets is not None:
        console.print(f"  agents       {agents} node agent(s) with fake NVML, sockets under {sockets}/<node>")
    else:
        console.print(f"  budget       watch it: TEMPORAL_ADDRESS={server.address} {installed('gpuheal')} budget")


def installed(script: str) -> str:
    """How to run one of this environment's scripts from here (`.venv/bin/gpuheal` in a checkout):
    the environment's bin directory is often not on PATH."""
    path = Path(sysconfig.get_path("scripts")) / script
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
