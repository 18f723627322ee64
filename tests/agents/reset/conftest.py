"""A simulated node to order GPU resets on, and a node's reset parts: fake NVML, kernel log, monitor, watcher."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client as k8s

from gpuheal.agents.kmsg.follow import KernelLog, KernelLogFormat, ReadFrom
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import KernelLogMonitor
from gpuheal.agents.nvml.interface import GpuInfo
from gpuheal.agents.orders import FollowSettings, NodeOrderWatcher
from gpuheal.agents.reset import (
    GpuResetHandler,
    GpuResetter,
    ResetAcknowledgements,
    ResetSettings,
)
from gpuheal.domain.gpu_reset import GPU_RESET_CONDITION, GPU_RESET_REQUEST_ANNOTATION, GpuResetOrder, GpuResetReport
from gpuheal.domain.health import HealthEvent
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal_sim.fake_driver import KernelLogResetter
from gpuheal_sim.fake_nvml import FakeNvml
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster
from tests.chart import access_manifests, service_account

GPUS = 4
# Short bounds: a test waits at most about a second for anything the watcher does.
FAST = ResetSettings(
    confirm_timeout=timedelta(seconds=3),
    nvml_grace=timedelta(seconds=1),
    confirm_poll=timedelta(seconds=0.05),
)
FOLLOW_FAST = FollowSettings(poll_interval=timedelta(seconds=0.1))


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Wait until `check` (sync or async) holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Cluster:
    """The simulated fleet and a client of it; `node` is the node the tests order resets on.

    `api` is the admin's (the tests' own orders and checks); `agent_api` is the node's agent's, the
    chart's agent account with its token bound to the node, which the watchers use.
    """

    sim: SimulatedCluster
    api: k8s.ApiClient
    core: k8s.CoreV1Api
    node: str
    agent_api: k8s.ApiClient

    async def order(self, gpus: Sequence[str], order_id: str | None = None) -> GpuResetOrder:
        """Write a reset order on the node, as the worker's activity does."""
        order = GpuResetOrder(id=order_id or f"remediate-{uuid.uuid4()}", holder="test", gpus=list(gpus), at=now())
        await self.annotate(order.model_dump_json())
        return order

    async def annotate(self, raw: str) -> None:
        await self.core.patch_node(
            self.node,
            {"metadata": {"annotations": {GPU_RESET_REQUEST_ANNOTATION: raw}}},
            _content_type="application/merge-patch+json",
        )

    async def node_json(self) -> dict[str, Any]:
        """The node as the API serves it (raw JSON, as the watcher sees it)."""
        response = await self.core.read_node_without_preload_content(self.node)
        data: dict[str, Any] = await response.json()
        return data

    async def condition(self) -> Any:
        """The node's GpuReset condition, or None."""
        found = await self.core.read_node(self.node)
        assert found.status is not None
        return next((c for c in found.status.conditions or [] if c.type == GPU_RESET_CONDITION), None)

    async def report(self, order_id: str, timeout: float = 10.0) -> tuple[str, str, GpuResetReport]:
        """Wait for the report on `order_id`; (status, reason, report)."""
        answered: list[Any] = []

        async def reported() -> bool:
            condition = await self.condition()
            if condition is None:
                return False
            report = GpuResetReport.model_validate_json(condition.message)
            answered[:] = [condition, report]
            return report.id == order_id

        await eventually(reported, f"the report on {order_id}", timeout)
        condition, report = answered
        return condition.status, condition.reason, report


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    config = FleetConfig(
        nodes=1,
        gpus_per_node=GPUS,
        workloads=False,
        node_name_prefix=f"rst-{uuid.uuid4().hex[:8]}-",
        access_manifests=access_manifests(),
    )
    async with SimulatedCluster(config, state_dir=tmp_path / "fleet") as sim:
        node = config.node_names()[0]
        agent_kubeconfig = sim.service_account_kubeconfig(
            *service_account("agent"), tmp_path / "agent.kubeconfig", node=node
        )
        api = await connect_kubernetes(sim.kubeconfig)
        agent_api = await connect_kubernetes(agent_kubeconfig)
        try:
            yield Cluster(sim, api, k8s.CoreV1Api(api), node, agent_api)
        finally:
            await agent_api.close()  # type: ignore[no-untyped-call]
            await api.close()  # type: ignore[no-untyped-call]


@dataclass
class RecordingSink:
    events: list[HealthEvent] = field(default_factory=list)

    async def submit(self, event: HealthEvent) -> None:
        self.events.append(event)


class CountingResetter:
    """Wraps a resetter (or does nothing) and counts the resets it is asked for."""

    def __init__(self, inner: GpuResetter | None = None) -> None:
        self.inner = inner
        self.name = inner.name if inner else "nothing"
        self.releases_nvml = inner.releases_nvml if inner else False
        self.calls: list[list[str]] = []

    async def reset(self, gpus: Sequence[GpuInfo]) -> None:
        self.calls.append([gpu.uuid for gpu in gpus])
        if self.inner is not None:
            await self.inner.reset(gpus)


@dataclass
class Node:
    """One node's reset parts: a fake NVML, its kernel log followed by the real monitor, the acknowledgements."""

    cluster: Cluster
    nvml: FakeNvml
    kernel_log: Path
    acknowledgements: ResetAcknowledgements
    sink: RecordingSink
    # The reset handler of the last watcher made.
    handler: GpuResetHandler | None = None

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.nvml.gpus

    def kernel_log_resetter(self) -> CountingResetter:
        return CountingResetter(KernelLogResetter(self.kernel_log, nvml=self.nvml))

    def watcher(
        self,
        resetter: GpuResetter | None,
        *,
        settings: ResetSettings = FAST,
        api: k8s.ApiClient | None = None,
        **parts: Any,
    ) -> NodeOrderWatcher:
        """An order watcher of this node (through the simulator's API unless `api` is given) with a
        reset handler and its proofs (`handler`)."""
        parts.setdefault("acknowledgements", self.acknowledgements)
        parts.setdefault("nvml", self.nvml)
        self.handler = GpuResetHandler(
            self.cluster.node, resetter=resetter, gpus=lambda: self.gpus, settings=settings, **parts
        )
        return NodeOrderWatcher(api or self.cluster.agent_api, self.cluster.node, [self.handler], settings=FOLLOW_FAST)


@pytest.fixture
async def node(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Node]:
    """The cluster's node with a fake NVML and the kernel-log monitor following its kernel log file."""
    nvml = FakeNvml(cluster.node, GPUS)
    nvml.init()
    kernel_log = tmp_path / "kmsg.log"
    kernel_log.write_text("")
    acknowledgements = ResetAcknowledgements(caught_up=False)
    sink = RecordingSink()
    monitor = KernelLogMonitor(
        cluster.node,
        sink,
        gpu_map=GpuMap({gpu.pci: gpu.uuid for gpu in nvml.gpus}),
        boot_id_path=tmp_path / "boot_id",
        on_event=acknowledgements.observe,
        on_caught_up=acknowledgements.caught_up,
    )
    source = KernelLog(kernel_log, KernelLogFormat.FILE, ReadFrom.START, poll_interval=timedelta(seconds=0.02))
    task = asyncio.create_task(monitor.run(source))
    try:
        yield Node(cluster, nvml, kernel_log, acknowledgements, sink)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
