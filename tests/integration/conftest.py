"""The integration stack: the real dev server, the simulated fleet over HTTP and the real worker.

The fleet enforces the chart's RBAC and admission policies (rendered by Helm's engine), and the worker
and the agents reach it with their own service accounts' tokens, each agent's bound to its node: a
permission the chart lacks fails the test that needs it. The tests' own setup and checks use the admin.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client as k8s
from temporalio.client import Client, WorkflowHandle

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.policy import DrainPolicy, LoopPolicy, RemediationPolicy, RepairPolicy, StepTimeouts
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal.worker import WorkerSettings, running_worker
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from gpuheal_sim.simulator.fleet import DeploymentWorkload, PdbSpec
from tests.chart import access_manifests, service_account
from tests.held import end_held_remediations

Handle = Any
MERGE_PATCH = "application/merge-patch+json"
# The node whose trainer pod `Stack.hold_trainer_budget` takes away.
HELD_NODE = "gpu-node-002"


def busy_trainer() -> DeploymentWorkload:
    """The trainer with one whole-node pod per node under trainer-pdb (minAvailable 3 of 4).

    The budget allows one disruption; a pod that goes has nowhere to be replaced but its own node.
    """
    return DeploymentWorkload(name="trainer", namespace="ml", gpus=8, pdb=PdbSpec(name="trainer-pdb", min_available=3))


def fast_policy(**repair: Any) -> RemediationPolicy:
    """Production semantics at test speed: short backoffs and polls. Repeat offences are not looked
    for unless `loops` says so: the tests fault the same nodes, one after the other, on one server."""
    loops = repair.pop("loops", None) or LoopPolicy(max_per_node=0, gpu_window=timedelta(0))
    drain = repair.pop("drain", None) or DrainPolicy(
        retry_initial=timedelta(milliseconds=100),
        retry_max=timedelta(milliseconds=500),
        timeout=timedelta(seconds=60),
        delete_after=timedelta(seconds=30),
        never_allows_for=timedelta(seconds=2),
    )
    return RemediationPolicy(
        drain=drain,
        loops=loops,
        repair=RepairPolicy(
            node_ready_timeout=timedelta(seconds=30),
            verify_timeout=timedelta(seconds=10),
            **repair,
        ),
        timeouts=StepTimeouts(
            node_call=timedelta(seconds=5),
            drain_pass=timedelta(seconds=10),
            drain_heartbeat=timedelta(seconds=5),
            reboot_call=timedelta(seconds=5),
        ),
    )


@dataclass
class Stack:
    """One simulated fleet with a worker on its own task queue, on the shared dev server."""

    server: DevServer
    cluster: SimulatedCluster
    core: k8s.CoreV1Api
    policy_api: k8s.PolicyV1Api
    task_queue: str
    worker_kubeconfig: Path
    state_dir: Path

    def agent_kubeconfig(self, node: str) -> Path:
        """A kubeconfig for the agent on `node`: the chart's agent account, its token bound to that node."""
        namespace, name = service_account("agent")
        return self.cluster.service_account_kubeconfig(
            namespace, name, self.state_dir / f"agent-{node}.kubeconfig", node=node
        )

    async def report(
        self,
        node: str,
        xid: int = 79,
        action: RecommendedAction = RecommendedAction.RESTART_BM,
        policy: RemediationPolicy | None = None,
    ) -> Handle:
        self.cluster.inject_fault(node, xid=xid, gpu=0)
        fault = Fault(node=node, action=action, xid=xid, event_id=str(uuid.uuid4()))
        return await remediations.report_fault(
            self.server.client, fault, policy or fast_policy(), task_queue=self.task_queue
        )

    async def hold_trainer_budget(self) -> None:
        """Exhaust the budget of `busy_trainer()` for now: one of its pods is being replaced.

        The trainer pod on HELD_NODE goes and its replacement cannot be placed (that node is
        cordoned, the others are full), so the budget allows nothing until `free_trainer_budget`.
        """
        await self.core.patch_node(HELD_NODE, {"spec": {"unschedulable": True}}, _content_type=MERGE_PATCH)
        [pod] = [p for p in await self.pods_on(HELD_NODE) if p.metadata.namespace == "ml"]
        await self.core.delete_namespaced_pod(pod.metadata.name, "ml", grace_period_seconds=0)

        async def exhausted() -> bool:
            pdb = await self.policy_api.read_namespaced_pod_disruption_budget("trainer-pdb", "ml")
            status = pdb.status
            return status is not None and (status.disruptions_allowed, status.current_healthy) == (0, 3)

        await eventually(exhausted, "the trainer's budget exhausted while a pod is replaced")

    async def free_trainer_budget(self) -> None:
        """Let the replacement run again (on HELD_NODE), so the budget allows one disruption."""
        await self.core.patch_node(HELD_NODE, {"spec": {"unschedulable": False}}, _content_type=MERGE_PATCH)

    async def node(self, name: str) -> Any:
        return await self.core.read_node(name)

    async def pods_on(self, node: str) -> list[Any]:
        pods = await self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
        return list(pods.items)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Wait until `check` holds; fail naming `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def run_started_after(client: Client, node: str, since: datetime) -> WorkflowHandle[Any, RemediationStatus]:
    """The run of the node's remediation started after `since`, once there is one.

    The dev server outlives each test, so `remediate-<node>` may already have an older, finished run
    (whose worker is gone: it answers no query): only a run started after `since` counts.
    """
    handle = client.get_workflow_handle(workflow_id_for(node), result_type=RemediationStatus)
    runs: list[str] = []

    async def started() -> bool:
        try:
            description = await handle.describe()
        except Exception:
            return False
        if description.start_time < since:
            return False
        runs.append(description.run_id)
        return True

    await eventually(started, f"a new run of {workflow_id_for(node)}")
    return client.get_workflow_handle(workflow_id_for(node), run_id=runs[-1], result_type=RemediationStatus)


async def phase_of(handle: Handle) -> str:
    status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
    return status.phase.value


async def settled(handle: Handle, timeout: float = 30.0) -> RemediationStatus:
    """The remediation once it ended, or escalated: held for a person, its run still open."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
        if status.phase.is_final:
            return await handle.result()  # type: ignore[no-any-return]
        if status.phase.is_settled:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the remediation did not settle within {timeout}s; last {status.phase}: {status.reason}")


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Build a stack for a fleet config; everything is torn down after the test."""
    exits: list[Callable[[], Awaitable[Any]]] = []

    async def make(in_process_worker: bool = True, **fleet: Any) -> Stack:
        fleet.setdefault("reboot_seconds", 0.3)
        fleet.setdefault("pod_start_seconds", 0.1)
        fleet.setdefault("access_manifests", access_manifests())
        state_dir = tmp_path / f"fleet-{len(exits)}"
        cluster = SimulatedCluster(FleetConfig(**fleet), state_dir=state_dir)
        await cluster.__aenter__()
        exits.append(lambda: cluster.__aexit__(None, None, None))
        task_queue = f"it-{uuid.uuid4()}"
        worker_kubeconfig = cluster.service_account_kubeconfig(
            *service_account("worker"), state_dir / "worker.kubeconfig"
        )
        settings = WorkerSettings(
            task_queue=task_queue,
            kubeconfig=worker_kubeconfig,
            simulator_url=cluster.control_url,
            metrics_address=None,
            graceful_shutdown=timedelta(seconds=1),
        )
        if in_process_worker:
            running = running_worker(settings, dev_server.client)
            await running.__aenter__()
            exits.append(lambda: running.__aexit__(None, None, None))
        exits.append(lambda: end_held_remediations(dev_server.client, cluster.node_names()))
        api = await connect_kubernetes(cluster.kubeconfig)
        exits.append(api.close)
        return Stack(
            dev_server, cluster, k8s.CoreV1Api(api), k8s.PolicyV1Api(api), task_queue, worker_kubeconfig, state_dir
        )

    yield make
    for exit_ in reversed(exits):
        await exit_()


class WorkerFactory:
    """Starts `gpuheal worker` processes for a stack, and keeps what each logs (its stderr)."""

    def __init__(self) -> None:
        self._logs: dict[asyncio.subprocess.Process, bytearray] = {}
        self._drains: list[asyncio.Task[None]] = []

    async def __call__(self, stack: Stack, *flags: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpuheal",
            "worker",
            "--address",
            stack.server.address,
            "--task-queue",
            stack.task_queue,
            "--kubeconfig",
            str(stack.worker_kubeconfig),
            "--simulator-url",
            stack.cluster.control_url,
            "--metrics-address",
            "",
            "--sticky-queue-timeout-seconds",
            "1",
            # Only the provider the fleet's nodes need (the simulator's comes with --simulator-url):
            # a worker imports just the SDKs of the providers it runs.
            "--providers",
            "manual" if stack.cluster.config.cloud == "sim" else stack.cluster.config.cloud,
            *flags,
            stderr=asyncio.subprocess.PIPE,
            # The cloud SDKs reach the simulator's clouds through their standard settings.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **stack.cluster.client_environment()},
        )
        log = self._logs[process] = bytearray()
        assert process.stderr is not None
        # A worker imports every cloud SDK before it polls: on a busy 2-core machine that alone takes 20 s.
        while b"worker polling" not in (line := await asyncio.wait_for(process.stderr.readline(), 120)):
            assert line, "the worker exited before it started polling"
            log += line
        log += line
        # Keep reading its log, so a full pipe never blocks the worker and the test can read it.
        self._drains.append(asyncio.create_task(_drain(process.stderr, log)))
        return process

    def log(self, process: asyncio.subprocess.Process) -> str:
        """What the worker has logged so far."""
        return self._logs[process].decode(errors="replace")

    async def close(self) -> None:
        for process in self._logs:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await asyncio.gather(*self._drains)


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk


@pytest.fixture
async def spawn_worker() -> AsyncIterator[WorkerFactory]:
    """Start `gpuheal worker` processes for a stack; any still alive are killed afterwards."""
    workers = WorkerFactory()
    yield workers
    await workers.close()
