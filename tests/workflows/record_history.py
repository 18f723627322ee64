"""Record the histories of a release's scenarios, which every later release must replay (test_replay.py).

    .venv/bin/python -m tests.workflows.record_history             # every scenario
    .venv/bin/python -m tests.workflows.record_history approval    # only the ones named

Each scenario runs on a Temporal dev server of its own, with the real worker and workflow code, on the
simulated fleet under the chart's permissions, and writes the history of its run to
`histories/<release>/<name>.json`, the release being gpuheal's version (pyproject.toml; `--release`
names another). A file already there is never written over: runs started by that release look like
it, and the code after it must replay it as it is (CONTRIBUTING.md).

- happy_path: an XID 79 rebooted, back to Resolved.
- approval: a policy that has a person approve the repair; they approve with the `approve` Update.
- gpu_reset: an XID 48 in a node's kernel log; its agent resets the GPU on order, no reboot.
- escalation: a person rejects the repair (Escalated, the node held for a person), then releases it.
- budget_wait: under a budget of one, a second remediation waits in AwaitingBudget until the first
  gives its permit back (`budget_wait.json`), and the governor's run (`budget_wait_governor.json`).
- storm: ten faults at once under a budget of three; the governor's run (`storm_governor.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.agents.agent import Agent
from gpuheal.control import governor, remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.fleet import GOVERNOR_ID, FleetPolicy
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease, RemediationStatus
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from gpuheal_sim.agent_settings import simulated_agent_settings
from gpuheal_sim.demo.devserver import DevServer, start_dev_server
from gpuheal_sim.demo.run import demo_fleet, demo_policy
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.chart import access_manifests, service_account
from tests.integration.test_agent_remediation import xid_record

HISTORIES = Path(__file__).parent / "histories"
NODE = "gpu-node-001"
OTHER_NODE = "gpu-node-002"
# How long a recording waits for a phase or an ending; the simulated fleet reboots in half a second.
PATIENCE = timedelta(minutes=2)

Handle = WorkflowHandle[Any, RemediationStatus]


@dataclass
class Bed:
    """A dev server, a simulated fleet and a worker on the default task queue: the governor is
    `gpuheal-governor`, as in a cluster, and the replay tests know it by that id."""

    server: DevServer
    cluster: SimulatedCluster
    state: Path

    @property
    def client(self) -> Client:
        return self.server.client

    async def report(self, node: str, policy: RemediationPolicy) -> Handle:
        """An XID 79 on `node` (in its simulated GPUs, and reported as a detector reports it)."""
        self.cluster.inject_fault(node, xid=79, gpu=3)
        fault = Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=f"recorded-{node}")
        handle: Handle = await remediations.report_fault(self.client, fault, policy)
        return handle


@asynccontextmanager
async def bed(fleet: FleetPolicy | None = None, nodes: int = 4) -> AsyncIterator[Bed]:
    with tempfile.TemporaryDirectory(prefix="gpuheal-rec-") as directory:
        state = Path(directory)
        # With a state directory the server logs into it, not onto the terminal.
        server = await start_dev_server(state / "temporal")
        try:
            config = FleetConfig(
                nodes=nodes, reboot_seconds=0.5, pod_start_seconds=0.1, access_manifests=access_manifests()
            )
            async with SimulatedCluster(config, state_dir=state / "fleet") as cluster:
                # The worker runs with the chart's permissions, as the integration tests run it.
                settings = WorkerSettings(
                    kubeconfig=cluster.service_account_kubeconfig(*service_account("worker"), state / "worker.kube"),
                    simulator_url=cluster.control_url,
                    metrics_address=None,
                    graceful_shutdown=timedelta(seconds=1),
                    fleet=fleet or FleetPolicy(),
                )
                async with running_worker(settings, server.client):
                    yield Bed(server, cluster, state)
        finally:
            await server.shutdown()


async def reported(client: Client, node: str) -> Handle:
    """The node's remediation once its agent has reported the fault that starts it."""
    handle: Handle = client.get_workflow_handle(workflow_id_for(node), result_type=RemediationStatus)
    deadline = asyncio.get_running_loop().time() + PATIENCE.total_seconds()
    while True:
        try:
            await handle.describe()
            return handle
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def reaches(handle: Handle, done: Callable[[RemediationStatus], bool], what: str) -> RemediationStatus:
    """The run's status once `done` holds for it (the recording fails, naming `what`, after PATIENCE)."""
    deadline = asyncio.get_running_loop().time() + PATIENCE.total_seconds()
    while not done(status := await handle.query(RemediationWorkflow.status)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{handle.id} did not reach {what}; it is {status.phase}: {status.reason}")
        await asyncio.sleep(0.1)
    return status


async def ended(handle: Handle, phase: Phase) -> WorkflowHistory:
    """The history of the run, closed in `phase`."""
    async with asyncio.timeout(PATIENCE.total_seconds()):
        status = await handle.result()
    assert status.phase is phase, f"{handle.id} ended {status.phase}: {status.reason}"
    return await handle.fetch_history()


async def published(handle: Handle, phase: Phase) -> None:
    """Once the run has published `phase` (GpuhealPhase, as the server holds it). A recorded run is
    not queried: a query that comes while a local step runs has the worker complete the workflow
    task early and go on in another, which the history then shows."""
    deadline = asyncio.get_running_loop().time() + PATIENCE.total_seconds()
    while (await handle.describe()).typed_search_attributes.get(attrs.PHASE) != phase.value:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{handle.id} did not reach {phase}")
        await asyncio.sleep(0.1)


async def happy_path() -> dict[str, WorkflowHistory]:
    async with bed() as fleet:
        handle = await fleet.report(NODE, demo_policy(manual=False))
        return {"happy_path": await ended(handle, Phase.RESOLVED)}


async def decided(fleet: Bed, *, approve: bool) -> Handle:
    """A remediation whose policy asks a person, once they approved or rejected its repair (an Update)."""
    handle = await fleet.report(NODE, demo_policy(manual=True))
    await published(handle, Phase.AWAITING_APPROVAL)
    decision = ApprovalSignal(approver="recorder", reason=f"recorded: {'approved' if approve else 'rejected'}")
    await remediations.send_decision(fleet.client, NODE, decision, approve=approve)
    return handle


async def approval() -> dict[str, WorkflowHistory]:
    async with bed() as fleet:
        return {"approval": await ended(await decided(fleet, approve=True), Phase.RESOLVED)}


async def escalation() -> dict[str, WorkflowHistory]:
    async with bed() as fleet:
        handle = await decided(fleet, approve=False)
        await published(handle, Phase.ESCALATED)
        release = NodeRelease(by="recorder", reason="the recorded release")
        await remediations.act_on_escalation(fleet.client, NODE, PersonAction.RELEASE, release)
        return {"escalation": await ended(handle, Phase.RELEASED)}


async def gpu_reset() -> dict[str, WorkflowHistory]:
    """The node's agent (fake NVML, the simulated driver's reset) reports the XID and answers the order."""
    async with bed() as fleet:
        home = fleet.state / "agent"
        settings = simulated_agent_settings(
            NODE,
            home,
            8,
            nvml_poll=timedelta(seconds=1),
            temporal_address=fleet.server.address,
            kubeconfig=fleet.cluster.service_account_kubeconfig(
                *service_account("agent"), fleet.state / "agent.kube", node=NODE
            ),
            remediation_policy=demo_policy(manual=False),
        )
        fleet.cluster.attach_agent(NODE, settings.boot_id_path)
        async with Agent(settings) as agent:
            assert settings.kernel_log is not None
            with settings.kernel_log.open("a") as kernel_log:
                kernel_log.write(xid_record(agent, 48))
            handle = await reported(fleet.client, NODE)
            recorded = await ended(handle, Phase.RESOLVED)
            assert fleet.cluster.reboot_requests(NODE) == 0, "repaired by a reboot, not the GPU reset"
            return {"gpu_reset": recorded}


async def budget_wait() -> dict[str, WorkflowHistory]:
    async with bed(demo_fleet(1)) as fleet:
        first = await fleet.report(NODE, demo_policy(manual=False))
        await reaches(first, lambda status: status.permit is not None, f"{NODE}'s permit")
        waiting = await fleet.report(OTHER_NODE, demo_policy(manual=False))
        await published(waiting, Phase.AWAITING_BUDGET)
        await ended(first, Phase.RESOLVED)
        recorded = await ended(waiting, Phase.RESOLVED)
        return {"budget_wait": recorded, "budget_wait_governor": await governor_when_idle(fleet.client)}


async def storm(nodes: int = 10) -> dict[str, WorkflowHistory]:
    """The governor grants in several passes, while earlier grants are delivered and permits come back."""
    async with bed(demo_fleet(3), nodes=nodes) as fleet:
        handles = [await fleet.report(node, demo_policy(manual=False)) for node in fleet.cluster.node_names()]
        for handle in handles:
            await ended(handle, Phase.RESOLVED)
        return {"storm_governor": await governor_when_idle(fleet.client)}


async def governor_when_idle(client: Client) -> WorkflowHistory:
    """The governor's history once every permit came back (its run stays open)."""
    async with asyncio.timeout(PATIENCE.total_seconds()):
        while (status := await governor.status(client)).state.held or status.state.waiting:
            await asyncio.sleep(0.1)
    return await client.get_workflow_handle(GOVERNOR_ID).fetch_history()


@dataclass(frozen=True)
class Scenario:
    run: Callable[[], Awaitable[dict[str, WorkflowHistory]]]
    # The names of the files it writes (without .json).
    files: tuple[str, ...]


SCENARIOS = {
    "happy_path": Scenario(happy_path, ("happy_path",)),
    "approval": Scenario(approval, ("approval",)),
    "gpu_reset": Scenario(gpu_reset, ("gpu_reset",)),
    "escalation": Scenario(escalation, ("escalation",)),
    "budget_wait": Scenario(budget_wait, ("budget_wait", "budget_wait_governor")),
    "storm": Scenario(storm, ("storm_governor",)),
}


def already_recorded(folder: Path, names: list[str]) -> list[Path]:
    return [path for name in names for stem in SCENARIOS[name].files if (path := folder / f"{stem}.json").exists()]


async def record(folder: Path, names: list[str]) -> None:
    for name in names:
        histories = await SCENARIOS[name].run()
        assert set(histories) == set(SCENARIOS[name].files), histories.keys()
        folder.mkdir(parents=True, exist_ok=True)
        for stem, history in histories.items():
            path = folder / f"{stem}.json"
            # "x": never over a file written since main() looked (a scenario takes a while).
            with path.open("x") as file:
                file.write(history.to_json())
            print(f"wrote {path} ({len(history.events)} events)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"of {', '.join(SCENARIOS)} (all by default)")
    parser.add_argument("--release", default=version("gpuheal"), help="the folder under histories/ (gpuheal's version)")
    options = parser.parse_args()
    names: list[str] = options.scenarios or list(SCENARIOS)
    if unknown := [name for name in names if name not in SCENARIOS]:
        parser.error(f"no such scenario: {', '.join(unknown)}")
    folder = HISTORIES / options.release
    if taken := already_recorded(folder, names):
        parser.error(f"already recorded, and never recorded again in place: {', '.join(map(str, taken))}")
    asyncio.run(record(folder, names))


if __name__ == "__main__":
    main()
