"""The publisher against real dependencies: the simulator's Kubernetes API and the Temporal dev server."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client as k8s
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.publisher import (
    InProcessDeviceApi,
    KubernetesReporter,
    Publisher,
    PublisherSettings,
    RetrySettings,
    TemporalRemediations,
)
from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import GPU_HEALTHY_CONDITION, workflow_id_for
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal_sim.demo.devserver import DevServer
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.agents.publisher.grpc_device_api import GrpcDeviceApi
from tests.chart import access_manifests, service_account

# Fast retries: an outage in a test lasts as long as the test makes it. A dependency that is up
# takes each event directly, however busy the machine running the tests (the hand-off has tests of its own).
FAST = PublisherSettings(
    retry=RetrySettings(
        delivery_timeout=timedelta(seconds=5),
        hand_off=timedelta(seconds=5),
        initial_backoff=timedelta(seconds=0.05),
        max_backoff=timedelta(seconds=0.2),
    )
)


def closed_port() -> int:
    """A loopback port nothing listens on: a dependency that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Stack:
    """A simulated fleet with nodes unique to the test, the dev server and a task queue nobody polls.

    `api` is the admin's, for the tests' checks; `agent_apis` hold each node's agent's client (the
    chart's agent account, its token bound to that node), which the publishers write with.
    """

    sim: SimulatedCluster
    api: k8s.ApiClient
    core: k8s.CoreV1Api
    temporal: Client
    task_queue: str
    nodes: list[str]
    spool_dir: Path
    agent_apis: dict[str, k8s.ApiClient]

    def remediations(self, address: str | None = None) -> TemporalRemediations:
        if address is not None:
            return TemporalRemediations(address=address, task_queue=self.task_queue)
        return TemporalRemediations(self.temporal, task_queue=self.task_queue)

    def publisher(self, node: str | None = None, **backends: Any) -> Publisher:
        """The publisher of `node`'s agent (the first node's by default)."""
        backends.setdefault("nodes", KubernetesReporter(self.agent_apis[node or self.nodes[0]]))
        backends.setdefault("remediations", self.remediations())
        return Publisher(self.spool_dir, settings=backends.pop("settings", FAST), **backends)

    async def gpu_condition(self, node: str) -> Any:
        found = await self.core.read_node(node)
        assert found.status is not None
        return next(c for c in found.status.conditions or [] if c.type == GPU_HEALTHY_CONDITION)

    async def node_events(self, node: str) -> list[Any]:
        events = await self.core.list_namespaced_event("default")
        return [e for e in events.items if e.involved_object.name == node]

    async def remediation_exists(self, node: str) -> bool:
        try:
            await self.temporal.get_workflow_handle(workflow_id_for(node)).describe()
        except RPCError:
            return False
        return True

    async def faults_signalled(self, node: str) -> list[Fault]:
        """The faults the node's remediation received, in history order (signal-with-start included)."""
        history = await self.temporal.get_workflow_handle(workflow_id_for(node)).fetch_history()
        faults: list[Fault] = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                signal = event.workflow_execution_signaled_event_attributes
                assert signal.signal_name == "fault"
                faults.extend(await self.temporal.data_converter.decode(signal.input.payloads, [Fault]))
        return faults


@pytest.fixture
async def stack(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[Stack]:
    prefix = f"pub-{uuid.uuid4().hex[:8]}-"
    config = FleetConfig(nodes=2, workloads=False, node_name_prefix=prefix, access_manifests=access_manifests())
    async with SimulatedCluster(config, state_dir=tmp_path / "fleet") as sim:
        api = await connect_kubernetes(sim.kubeconfig)
        agent_apis = {
            node: await connect_kubernetes(
                sim.service_account_kubeconfig(*service_account("agent"), tmp_path / f"{node}.kubeconfig", node=node)
            )
            for node in config.node_names()
        }
        stack = Stack(
            sim,
            api,
            k8s.CoreV1Api(api),
            dev_server.client,
            f"publisher-test-{uuid.uuid4()}",
            config.node_names(),
            tmp_path / "spool",
            agent_apis,
        )
        try:
            yield stack
        finally:
            await api.close()  # type: ignore[no-untyped-call]
            for agent_api in agent_apis.values():
                await agent_api.close()  # type: ignore[no-untyped-call]
            # No worker polls the test's task queue: end what the test started, so nothing lingers.
            for node in stack.nodes:
                with contextlib.suppress(RPCError):
                    await dev_server.client.get_workflow_handle(workflow_id_for(node)).terminate("test over")


# Connects the publisher to a Device API server (keyword arguments go to the client).
Connect = Callable[..., InProcessDeviceApi]


@pytest.fixture(params=["grpc", "in-process"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """Each test runs with both Device API clients: the agent's, in the server's process, and the
    same over the server's socket; both must give the same stored statuses, errors and watch events."""
    channels: list[GrpcDeviceApi] = []

    def make(server: DeviceApiServer, **options: Any) -> InProcessDeviceApi:
        if request.param == "in-process":
            return InProcessDeviceApi(server, **options)
        client = GrpcDeviceApi(server, **options)
        channels.append(client)
        return client

    yield make
    for client in channels:
        await client.close()
