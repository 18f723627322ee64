"""The agent's own metrics, in its registry (one per agent: several agents may run in one process).

Counters are counted where the thing happens (the intake, the kernel-log monitor, the Device API's
calls); the gauges of state (Device API watchers, each GPU's health, the last report) are read at
scrape time from the parts that hold it. The spools' gauges are `gpuheal.agents.publisher.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gpuheal.agents.device_api.limits import HEALTH_CONDITION
from gpuheal.agents.device_api.server import DeviceApiServer


def event_kind(*, is_fatal: bool, is_healthy: bool) -> str:
    """The `kind` label of a health event: fatal, warning (unhealthy, not fatal) or healthy."""
    if is_healthy:
        return "healthy"
    return "fatal" if is_fatal else "warning"


class AgentMetrics:
    """The counters the agent's parts count into; `AgentState` reads the rest."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.intake_events = Counter(
            "gpuheal_agent_intake_events",
            "Health events sent to the PlatformConnector intake, by kind and result: accepted (the "
            "publisher took it), rejected (its request was invalid), refused (the publisher could not "
            "take it: the sender resends).",
            ["kind", "result"],
            registry=registry,
        )
        self.kernel_log_lines = Counter(
            "gpuheal_agent_kernel_log_lines", "Kernel log lines the monitor read.", registry=registry
        )
        self.kernel_log_faults = Counter(
            "gpuheal_agent_kernel_log_faults",
            "GPU events (XID, SXID, a GPU fallen off the bus, …) found in the kernel log, before flood control.",
            registry=registry,
        )
        self.device_api_requests = Counter(
            "gpuheal_agent_device_api_requests",
            "Device API (GpuService) calls, by method and status code.",
            ["method", "code"],
            registry=registry,
        )

    def intake(self, kind: str, result: str) -> None:
        self.intake_events.labels(kind, result).inc()

    def kernel_log_line(self, found: bool) -> None:
        self.kernel_log_lines.inc()
        if found:
            self.kernel_log_faults.inc()

    def device_api_answered(self, method: str, code: str) -> None:
        self.device_api_requests.labels(method, code).inc()


class AgentState(Collector):
    """Read at every scrape: the Device API's watchers and GPU health, and when the agent last reported.

    `last_report` gives the unix time of the last health event a dependency took or of the last
    complete NVML reading, whichever is later; None before either.
    """

    def __init__(self, device_api: DeviceApiServer, last_report: Callable[[], float | None]) -> None:
        self._device_api = device_api
        self._last_report = last_report

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gpuheal_agent_device_api_watchers",
            "Device API watches receiving events.",
            value=self._device_api.hub.watchers,
        )
        healthy = GaugeMetricFamily(
            "gpuheal_agent_gpu_healthy",
            "1 while the GPU's Healthy condition in the Device API is True, 0 while it is False.",
            labels=["gpu"],
        )
        _, gpus = self._device_api.cache.snapshot()
        for gpu in gpus:
            for condition in gpu.status.conditions:
                if condition.type == HEALTH_CONDITION and condition.status in ("True", "False"):
                    healthy.add_metric([gpu.spec.uuid or gpu.metadata.name], float(condition.status == "True"))
        yield healthy
        last = self._last_report()
        if last is not None:
            yield GaugeMetricFamily(
                "gpuheal_agent_last_report_timestamp_seconds",
                "Unix time the agent last reported: a health event taken by the Device API, Kubernetes or "
                "Temporal, or a complete NVML reading of its GPUs.",
                value=last,
            )
