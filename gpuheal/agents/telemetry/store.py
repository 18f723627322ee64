"""The latest DCGM readings per GPU, bounded, and served as Prometheus metrics.

One value is kept per (GPU UUID, metric name): the newest by the time the streamer published it,
so a reading that arrives late (workers deliver side by side) does not overwrite a newer one. The
store holds at most `max_gpus` GPUs and `max_metrics` metrics per GPU; a reading that would add one
more is refused (`StoreFull`) while the values already kept go on being updated, so a streamer fed
another machine's CSV, or garbage metric names, cannot grow the agent's memory. With the label values
a reading may carry (64 characters at most, `gpuheal.domain.telemetry`), the fullest store's
`/metrics` page is a couple of MB, rendered in a fraction of a second.

`TelemetryCollector` exports each metric under its DCGM name, with dcgm-exporter's labels (`gpu`,
`UUID`, `device`, `modelName`, `Hostname`), so dashboards made for the exporter read the agent as
they read the exporter; beside them, how many readings the intake took and refused, by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuheal.domain.telemetry import TelemetryPoint

# A node has at most 16 GPUs today (or 56 MIG instances of 8 GPUs): slack beyond that only serves a wrong CSV.
MAX_GPUS = 64
# dcgm-exporter's default field list has about 40 fields; its profiling fields add a few dozen.
MAX_METRICS = 128
LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")


class StoreFull(Exception):
    """The reading would add a GPU or a metric beyond the store's bounds; nothing was kept."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest value of one metric of one GPU, with what identifies the GPU in the exporter's labels."""

    value: float
    published_at: datetime
    gpu_id: int
    device: str
    model_name: str
    hostname: str


class LatestMetrics:
    """The newest reading per GPU and metric, within `max_gpus` × `max_metrics`."""

    def __init__(self, max_gpus: int = MAX_GPUS, max_metrics: int = MAX_METRICS) -> None:
        self.max_gpus = max_gpus
        self.max_metrics = max_metrics
        self._gpus: dict[str, dict[str, Reading]] = {}

    def update(self, point: TelemetryPoint) -> None:
        """Keep `point` unless a newer reading of its metric is kept; `StoreFull` past the bounds."""
        metrics = self._gpus.get(point.gpu_uuid)
        if metrics is None:
            if len(self._gpus) >= self.max_gpus:
                raise StoreFull(
                    f"the agent keeps the metrics of at most {self.max_gpus} GPUs; {point.gpu_uuid} is one more"
                )
            metrics = self._gpus[point.gpu_uuid] = {}
        kept = metrics.get(point.metric_name)
        if kept is None and len(metrics) >= self.max_metrics:
            raise StoreFull(
                f"the agent keeps at most {self.max_metrics} metrics per GPU; {point.metric_name} of "
                f"{point.gpu_uuid} is one more"
            )
        if kept is not None and kept.published_at > point.timestamp:
            return
        metrics[point.metric_name] = Reading(
            point.number, point.timestamp, point.gpu_id, point.device, point.model_name, point.hostname
        )

    def latest(self, gpu_uuid: str, metric_name: str) -> Reading | None:
        return self._gpus.get(gpu_uuid, {}).get(metric_name)

    def readings(self) -> Iterator[tuple[str, str, Reading]]:
        """(GPU UUID, metric name, reading) for everything kept."""
        for gpu_uuid, metrics in self._gpus.items():
            for metric_name, reading in metrics.items():
                yield gpu_uuid, metric_name, reading


class TelemetryCollector(Collector):
    """The store's readings as gauges named by their DCGM field, and the intake's outcomes as counters."""

    def __init__(self, store: LatestMetrics, outcomes: Counter[str]) -> None:
        self._store = store
        self._outcomes = outcomes

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for gpu_uuid, metric_name, reading in self._store.readings():
            family = families.get(metric_name)
            if family is None:
                family = families[metric_name] = GaugeMetricFamily(
                    metric_name, f"{metric_name}, as a DCGM telemetry streamer last reported it.", labels=LABELS
                )
            family.add_metric(
                [str(reading.gpu_id), gpu_uuid, reading.device, reading.model_name, reading.hostname], reading.value
            )
        yield from families.values()
        outcomes = CounterMetricFamily(
            "gpuheal_agent_telemetry_readings",
            "Readings the telemetry intake received, by outcome (accepted, or the reason it refused them).",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
