"""The publisher's spools as Prometheus metrics, read from each lane's counters at scrape time.

Every metric has a `lane` label (`device-api`, `kubernetes`, `temporal`). The collector keeps no
state of its own, so it can be registered with any registry: the agent gives each agent its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuheal.agents.publisher.spool import SpoolStats

_GAUGES: tuple[tuple[str, str, Callable[[SpoolStats], int]], ...] = (
    ("gpuheal_agent_spool_entries", "Events waiting in the lane's spool on disk.", lambda s: s.entries),
    ("gpuheal_agent_spool_bytes", "Bytes of the lane's spool entries on disk.", lambda s: s.bytes),
    ("gpuheal_agent_spool_limit_bytes", "The lane's spool budget on disk, in bytes.", lambda s: s.limit_bytes),
    (
        "gpuheal_agent_spool_held_events",
        "Actionable events held in memory because the disk or the spool's budget refused them; "
        "lost if the agent stops before they are written or delivered.",
        lambda s: s.held,
    ),
    ("gpuheal_agent_spool_held_bytes", "Bytes of the actionable events held in memory.", lambda s: s.held_bytes),
    (
        "gpuheal_agent_spool_faults_moved_aside",
        "Actionable spool entries that could not be read and lie moved aside (*.a.json.bad), from this run "
        "and earlier ones: faults that reach no remediation until a person acts.",
        lambda s: s.faults_aside,
    ),
)
_COUNTERS: tuple[tuple[str, str, Callable[[SpoolStats], int]], ...] = (
    ("gpuheal_agent_spool_shed", "Non-actionable events deleted from the spool to make room.", lambda s: s.shed),
    (
        "gpuheal_agent_spool_moved_aside",
        "Spool entries that could not be read, renamed to *.bad and kept for a person.",
        lambda s: s.moved_aside,
    ),
)


class SpoolCollector(Collector):
    """Collects `stats()` (lane name to `SpoolStats`, e.g. `Publisher.spool_stats`) on every scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, SpoolStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        lanes = self._stats()
        for name, text, value in _GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["lane"])
            for lane, stats in lanes.items():
                gauge.add_metric([lane], value(stats))
            yield gauge
        for name, text, value in _COUNTERS:
            counter = CounterMetricFamily(name, text, labels=["lane"])
            for lane, stats in lanes.items():
                counter.add_metric([lane], value(stats))
            yield counter
        refused = CounterMetricFamily(
            "gpuheal_agent_spool_refused",
            "Events the spool did not take: non-actionable ones are gone; actionable ones were refused "
            "to their sender, which retries (the intake answers UNAVAILABLE).",
            labels=["lane", "actionable"],
        )
        for lane, stats in lanes.items():
            refused.add_metric([lane, "false"], stats.refused)
            refused.add_metric([lane, "true"], stats.refused_actionable)
        yield refused
