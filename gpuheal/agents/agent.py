"""The per-node agent: every agent part wired together, as `gpuheal agent` runs it on a GPU node.

Start-up order matters. The Device API comes first, so providers have somewhere to register; the
publisher (the one pipeline every event goes through) next, so no detector ever has nowhere to
deliver; then the PlatformConnector intake and the detectors: the NVML provider (which opens the
Device API's readiness gate once it has registered the node's GPUs), the kernel-log monitor and
the telemetry intake (DCGM readings from `gpuheal-telemetry` streamers: kept as metrics in the
agent's registry, their fault signals reported as health events).
The agent serves even when Temporal or the Kubernetes API cannot be reached: what it cannot deliver
waits in the publisher's on-disk spool. Where a health address is configured, the agent serves its
metrics and readiness (`health`) right after the publisher, whose spools they report. Last, where the
Kubernetes API is configured, the order watcher answers the orders written on the node: GPU resets
(refused while `gpu_reset` is "off"), GPU checks (`gpu_check`) and diagnostics bundles
(`diagnostics_to`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes.aio import client as k8s
from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.check import GpuChecker, GpuCheckHandler, GpuCheckMode
from gpuheal.agents.check import choose as choose_checker
from gpuheal.agents.device_api.server import DeviceApiServer
from gpuheal.agents.diagnostics import Collector, CollectorMode, DiagnosticsHandler, Store, destination
from gpuheal.agents.diagnostics import choose as choose_collector
from gpuheal.agents.health import HealthServer
from gpuheal.agents.intake.server import IntakeServer, IntakeSettings
from gpuheal.agents.intake.validate import IntakeLimits
from gpuheal.agents.kmsg.decide import XidPolicy, load_xid_policy
from gpuheal.agents.kmsg.follow import KernelLog, KernelLogFormat, ReadFrom
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.holds import RemediationHolds
from gpuheal.agents.kmsg.monitor import KernelLogMonitor, read_boot_id
from gpuheal.agents.metrics import AgentMetrics, AgentState
from gpuheal.agents.nvml.backends import open_nvml
from gpuheal.agents.nvml.interface import Nvml, NvmlUnavailableError
from gpuheal.agents.nvml.provider import NvmlProvider
from gpuheal.agents.orders import FollowSettings, NodeOrderWatcher
from gpuheal.agents.publisher.device_api import InProcessDeviceApi
from gpuheal.agents.publisher.kubernetes import KubernetesReporter
from gpuheal.agents.publisher.metrics import SpoolCollector
from gpuheal.agents.publisher.publisher import Publisher, PublisherSettings
from gpuheal.agents.publisher.temporal import TemporalRemediations
from gpuheal.agents.reset import (
    GpuResetHandler,
    GpuResetMode,
    ResetAcknowledgements,
    ResetSettings,
    check_reset_mode,
    make_resetter,
)
from gpuheal.agents.telemetry import LatestMetrics, TelemetryCollector, TelemetryIntakeService, TelemetryServer
from gpuheal.control.connection import DEFAULT_TASK_QUEUE
from gpuheal.domain.gpu_reset import GpuResetOrder, GpuResetReport
from gpuheal.domain.health import GPU_UUID, Entity, HealthEvent
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.policy_document import AgentPolicy
from gpuheal.kubeclient import connect as connect_kubernetes
from gpuheal.policyfile import LoadedPolicy, PolicyWatch
from gpuheal.protos.sockets import DEVICE_API_SOCKET, HEALTH_EVENTS_SOCKET, SOCKET_DIR, TELEMETRY_SOCKET
from gpuheal.shutdown import shutdown_requested

log = logging.getLogger("gpuheal.agent")

# The check of the event by which the agent reports GPU health again after answering a reset order.
# No fault carries it, so it closes nothing: the node's condition is written anew as it stands.
CHECK_RESET_ANSWERED = "GpuResetAnswered"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything `gpuheal agent` is configured with (flags and environment)."""

    node: str
    socket_dir: Path = SOCKET_DIR
    spool_dir: Path = Path("/var/lib/gpuheal/spool")
    # None: no kernel-log monitor. "/dev/kmsg" on a real node.
    kernel_log: Path | None = Path("/dev/kmsg")
    kernel_log_format: KernelLogFormat = KernelLogFormat.KMSG
    # Where reading the kernel log begins: where the last run left off (`gpuheal.agents.kmsg.monitor`),
    # or by hand at its start or end.
    kernel_log_read_from: ReadFrom = ReadFrom.RESUME
    boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")
    # How often the kernel-log monitor reads the boot ID when no line makes it look.
    boot_check: timedelta = timedelta(seconds=5)
    xid_policy: Path | None = None
    # The policy file, as read at start: its `xids` section decides, in place of `xid_policy`, and
    # the file is read again every `policy_reload`.
    policy: LoadedPolicy[AgentPolicy] | None = None
    policy_reload: timedelta = timedelta(seconds=10)
    # None: the real NVML; N: a fake NVML with N GPUs (tests, the simulator, the demo).
    fake_gpus: int | None = None
    # How often NVML is read for what it reports by polling only (ECC, retired pages, …).
    nvml_poll: timedelta = timedelta(seconds=10)
    device_api_tcp_port: int | None = None
    intake_tcp_port: int | None = None
    temporal_address: str | None = None
    temporal_namespace: str | None = None
    task_queue: str = DEFAULT_TASK_QUEUE
    kubeconfig: Path | None = None
    # The policy remediations started by this agent carry (None: the defaults).
    remediation_policy: RemediationPolicy | None = None
    # Who resets GPUs on order: nobody ("off"), nvidia-smi (privileged), or another resetter installed
    # in the `gpuheal.resetters` entry point group (gpuheal-sim's "kernel-log": a simulated node's driver).
    # A mode that is not installed is refused here, naming the installed ones.
    gpu_reset: GpuResetMode = "off"
    gpu_reset_settings: ResetSettings = field(default_factory=ResetSettings)
    # Who checks the GPUs on order (gpuheal.agents.check): dcgmi where installed, else NVML ("auto"),
    # one of them, or nobody ("off"); fake GPUs are checked through their fake NVML.
    gpu_check: GpuCheckMode = "auto"
    dcgmi: str = "dcgmi"
    # How long one `dcgmi diag` may run (level 4 takes hours) before it is killed and the check failed.
    gpu_check_timeout: timedelta = timedelta(hours=2)
    # Where diagnostics bundles go before a reboot: a directory or "s3://bucket[/prefix]"; None: off
    # (orders are answered with a failure). Who collects them: nvidia-bug-report.sh where installed,
    # else NVML ("auto"), or one of them; fake GPUs are probed through their fake NVML.
    diagnostics_to: str | None = None
    diagnostics: CollectorMode = "auto"
    bug_report: str = "nvidia-bug-report.sh"
    # How the agent follows its node for orders.
    follow: FollowSettings = field(default_factory=FollowSettings)
    # Spool budgets and delivery timing.
    publisher: PublisherSettings = field(default_factory=PublisherSettings)
    # (host, port) of the HTTP /metrics and /readyz endpoint; None: not served.
    health_address: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        check_reset_mode(self.gpu_reset)
        if self.diagnostics_to is not None:
            destination(self.diagnostics_to)  # a malformed place is refused at start, not at the first order


class Agent:
    """The running agent; `async with Agent(settings)` starts every part and stops them in reverse."""

    def __init__(self, settings: AgentSettings, *, nvml: Nvml | None = None) -> None:
        self.settings = settings
        self.nvml: Nvml = nvml or open_nvml(
            "real" if settings.fake_gpus is None else "fake", settings.node, settings.fake_gpus
        )
        # The agent's metrics: served by the health endpoint where one is configured.
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.device_api = DeviceApiServer(
            self.device_api_socket, tcp_port=settings.device_api_tcp_port, answered=self.metrics.device_api_answered
        )
        self.publisher: Publisher | None = None
        self.health: HealthServer | None = None
        self.intake: IntakeServer | None = None
        self.provider: NvmlProvider | None = None
        self.monitor: KernelLogMonitor | None = None
        self.telemetry: TelemetryServer | None = None
        self._kubernetes: k8s.ApiClient | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self.reset_acknowledgements = ResetAcknowledgements(
            caught_up=False
        )  # set by the monitor once its backlog is read
        self.order_watcher: NodeOrderWatcher | None = None
        self._stack = contextlib.AsyncExitStack()

    # Absolute, because gRPC's `unix://` targets are: a relative --socket-dir must still work.
    @property
    def device_api_socket(self) -> Path:
        return (self.settings.socket_dir / DEVICE_API_SOCKET).absolute()

    @property
    def health_events_socket(self) -> Path:
        return (self.settings.socket_dir / HEALTH_EVENTS_SOCKET).absolute()

    @property
    def telemetry_socket(self) -> Path:
        return (self.settings.socket_dir / TELEMETRY_SOCKET).absolute()

    async def start(self) -> None:
        """Start every part; a part that fails to start stops the ones already running."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        await self.device_api.start()
        self._stack.push_async_callback(self.device_api.stop)

        self.publisher = Publisher(
            settings.spool_dir,
            # The Device API runs in this process: its operations are called directly, without gRPC.
            device_api=InProcessDeviceApi(self.device_api),
            nodes=await self._node_reporter(),
            remediations=TemporalRemediations(
                address=settings.temporal_address,
                namespace=settings.temporal_namespace,
                policy=settings.remediation_policy,
                task_queue=settings.task_queue,
            ),
            settings=settings.publisher,
        )
        await self.publisher.start()
        self._stack.push_async_callback(self.publisher.close)
        if settings.health_address is not None:
            await self._start_health(*settings.health_address)

        self.intake = IntakeServer(
            self.publisher,
            IntakeSettings(
                socket_path=self.health_events_socket,
                tcp_port=settings.intake_tcp_port,
                limits=IntakeLimits(node=settings.node),
            ),
            counted=self.metrics.intake,
        )
        await self.intake.start()
        self._stack.push_async_callback(self.intake.stop)

        self.provider = NvmlProvider(
            self.nvml,
            self.device_api_socket,
            self.publisher,
            settings.node,
            poll_interval=settings.nvml_poll,
            on_registered=lambda _count: self.device_api.mark_ready(),
        )
        try:
            await self.provider.start()
        except NvmlUnavailableError as error:
            # A node whose driver is broken is the node that most needs its kernel-log monitor and intake.
            log.error("%s: no GPU enumeration or NVML events; the kernel-log monitor and intake still run", error)
            self.provider = None
            self.device_api.mark_ready()
        else:
            self._stack.push_async_callback(self.provider.stop)

        if settings.kernel_log is not None:
            gpus = {info.pci: info.uuid for info in self.provider.gpus} if self.provider else None
            self.monitor = KernelLogMonitor(
                settings.node,
                self.publisher,
                policy=_xid_policy(settings),
                gpu_map=GpuMap(gpus),
                boot_id_path=settings.boot_id_path,
                boot_check_interval=settings.boot_check.total_seconds(),
                state_path=settings.spool_dir / "kmsg-state.json",
                on_event=self.reset_acknowledgements.observe,
                on_caught_up=self.reset_acknowledgements.caught_up,
                on_line=self.metrics.kernel_log_line,
            )
            source = KernelLog(settings.kernel_log, settings.kernel_log_format, settings.kernel_log_read_from)
            self._monitor_task = asyncio.create_task(self.monitor.run(source), name="gpuheal-kmsg")
            self._monitor_task.add_done_callback(_report_monitor_end)
            self._stack.push_async_callback(_cancel, self._monitor_task)
        await self._start_telemetry()
        if settings.policy is not None:
            following = PolicyWatch(settings.policy).follow(settings.policy_reload, self._take_policy)
            self._stack.push_async_callback(_cancel, asyncio.create_task(following, name="gpuheal-policy"))
        await self._start_order_watcher()
        log.info(
            "agent for %s serving: device API %s, health events %s, telemetry %s, %d GPU(s), kernel log %s",
            settings.node,
            self.device_api_socket,
            self.health_events_socket,
            self.telemetry_socket,
            len(self.provider.gpus) if self.provider else 0,
            settings.kernel_log or "off",
        )

    async def stop(self) -> None:
        """Stop every part that started, newest first."""
        await self._stack.aclose()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start_health(self, host: str, port: int) -> None:
        """Serve the agent's metrics (its own registry) and its readiness: the publisher's spools."""
        assert self.publisher is not None
        self.registry.register(SpoolCollector(self.publisher.spool_stats))
        self.registry.register(AgentState(self.device_api, self._last_report))
        ProcessCollector(registry=self.registry)
        self.health = HealthServer(host, port, self.registry, self.publisher.problems)
        await self.health.start()
        self._stack.push_async_callback(self.health.stop)

    def _last_report(self) -> float | None:
        """When the agent last reported: a dependency took an event, or NVML was read (unix time)."""
        delivered = self.publisher.last_delivered if self.publisher else None
        read = self.provider.last_read.timestamp() if self.provider and self.provider.last_read else None
        return max((at for at in (delivered, read) if at is not None), default=None)

    async def _start_telemetry(self) -> None:
        """Serve telemetry.sock: readings kept as metrics in the agent's registry, faults to the publisher."""
        assert self.publisher is not None
        service = TelemetryIntakeService(
            self.settings.node,
            self.publisher,
            LatestMetrics(),
            known_gpus=lambda: {gpu.uuid for gpu in self.provider.gpus} if self.provider is not None else None,
            policy=_xid_policy(self.settings),
            state_path=self.settings.spool_dir / "telemetry-state.json",
        )
        self.telemetry = TelemetryServer(self.telemetry_socket, service)
        await self.telemetry.start()
        self._stack.push_async_callback(self.telemetry.stop)
        self.registry.register(TelemetryCollector(service.store, service.outcomes))

    async def _node_reporter(self) -> KubernetesReporter | None:
        """The Kubernetes side of the publisher; None (with a warning) where no cluster is configured."""
        try:
            self._kubernetes = await connect_kubernetes(self.settings.kubeconfig)
        except Exception as error:  # no kubeconfig and no service account: run without Kubernetes
            log.warning("no Kubernetes configuration (%s): node conditions and events are off", error)
            return None
        self._stack.push_async_callback(self._kubernetes.close)
        boot_id_path = self.settings.boot_id_path
        return KubernetesReporter(self._kubernetes, boot_id=lambda: read_boot_id(boot_id_path))

    async def _start_order_watcher(self) -> None:
        """The order watcher, where the Kubernetes API is configured; a failure here is logged, not raised."""
        settings = self.settings
        if self._kubernetes is None:
            return
        try:
            resets = GpuResetHandler(
                settings.node,
                resetter=make_resetter(
                    settings.gpu_reset, settings.gpu_reset_settings, kernel_log=settings.kernel_log, nvml=self.nvml
                ),
                gpus=lambda: self.provider.gpus if self.provider is not None else (),
                acknowledgements=self.reset_acknowledgements if self.monitor is not None else None,
                nvml=self.nvml if self.provider is not None else None,
                release_nvml=self._nvml_released,
                settings=settings.gpu_reset_settings,
                on_answered=self._report_after_reset,
            )
            checks = GpuCheckHandler(settings.node, self._gpu_checker())
            bundles = DiagnosticsHandler(settings.node, *self._diagnostics())
            watcher = NodeOrderWatcher(
                self._kubernetes,
                settings.node,
                [resets, checks, bundles],
                settings=settings.follow,
                on_node=self._remediation_holds().observe if self.monitor is not None else None,
            )
            await watcher.start()
        except Exception:
            log.exception("the order watcher did not start; orders on %s go unanswered", settings.node)
            return
        self.order_watcher = watcher
        self._stack.push_async_callback(watcher.stop)

    def _gpu_checker(self) -> GpuChecker | None:
        """The checker of `gpu_check`; fake GPUs are checked through their fake NVML, never by dcgmi."""
        settings = self.settings
        mode = "nvml" if settings.fake_gpus is not None and settings.gpu_check == "auto" else settings.gpu_check
        nvml = self.nvml if self.provider is not None else None
        return choose_checker(mode, nvml=nvml, dcgmi=settings.dcgmi, timeout=settings.gpu_check_timeout)

    def _diagnostics(self) -> tuple[Collector | None, Store | None]:
        """The collector of `diagnostics` and the store of `diagnostics_to`; nothing where it is unset."""
        settings = self.settings
        if settings.diagnostics_to is None:
            return None, None
        mode = "nvml" if settings.fake_gpus is not None and settings.diagnostics == "auto" else settings.diagnostics
        nvml = self.nvml if self.provider is not None else None
        return choose_collector(mode, nvml=nvml, script=settings.bug_report), destination(settings.diagnostics_to)

    def _remediation_holds(self) -> RemediationHolds:
        """Tells the kernel-log monitor when the node's remediation ends, so its next fault is news."""
        monitor = self.monitor
        assert monitor is not None
        holds = RemediationHolds(monitor.remediation_ended)
        self._stack.push_async_callback(holds.close)
        return holds

    async def _report_after_reset(self, order: GpuResetOrder, report: GpuResetReport) -> None:
        """Report the node's GPU health anew once a reset is answered, so the report follows the answer."""
        if self.publisher is None:
            return
        await self.publisher.submit(
            HealthEvent(
                id=str(uuid.uuid4()),
                node=self.settings.node,
                agent="gpuheal-reset",
                component_class="GPU",
                check_name=CHECK_RESET_ANSWERED,
                is_fatal=False,
                is_healthy=True,
                message=f"GPU health after reset order {order.id}: {report.detail}",
                entities=tuple(Entity(type=GPU_UUID, value=gpu) for gpu in order.gpus),
                generated_at=datetime.now(UTC),
            )
        )

    def _nvml_released(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.provider.released() if self.provider is not None else contextlib.nullcontext()

    async def _take_policy(self, loaded: LoadedPolicy[AgentPolicy]) -> None:
        """An edited policy file: its XID overrides decide the kernel events and DCGM's XIDs from now on."""
        if self.monitor is not None:
            self.monitor.use_policy(loaded.document.xids)
        if self.telemetry is not None:
            self.telemetry.service.policy = loaded.document.xids


def _xid_policy(settings: AgentSettings) -> XidPolicy | None:
    """The XID overrides at start: the policy file's, else the --xid-policy file's, else none."""
    if settings.policy is not None:
        return settings.policy.document.xids
    return load_xid_policy(settings.xid_policy) if settings.xid_policy else None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    # Its failure, if it failed, was logged when it happened.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _report_monitor_end(task: asyncio.Task[None]) -> None:
    """A kernel-log monitor that stops on its own leaves the node blind to XIDs: say so loudly."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("the kernel-log monitor stopped; XIDs in the kernel log are no longer seen", exc_info=error)
    else:
        log.error("the kernel-log source ended; XIDs in the kernel log are no longer seen")


async def serve_agent(settings: AgentSettings) -> None:
    """Run the agent until SIGTERM or SIGINT."""
    stop = shutdown_requested()
    async with Agent(settings):
        await stop.wait()
        log.info("agent stopping")
