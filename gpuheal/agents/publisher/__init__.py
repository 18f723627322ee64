"""The publisher: every health event's way to the Device API, the node's conditions and Temporal."""

from gpuheal.agents.publisher.device_api import HEALTH_CONDITION, GpuHealthApi, InProcessDeviceApi
from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.agents.publisher.kubernetes import KubernetesReporter, NodeReporter
from gpuheal.agents.publisher.lane import RetrySettings
from gpuheal.agents.publisher.ledger import OpenFaults, Verdict
from gpuheal.agents.publisher.publisher import DEFAULT_SPOOL_DIR, Publisher, PublisherSettings
from gpuheal.agents.publisher.spool import Spool, SpoolFull, SpoolLimits, SpoolStats
from gpuheal.agents.publisher.temporal import Remediations, TemporalRemediations

__all__ = [
    "DEFAULT_SPOOL_DIR",
    "HEALTH_CONDITION",
    "DependencyUnavailable",
    "GpuHealthApi",
    "InProcessDeviceApi",
    "KubernetesReporter",
    "NodeReporter",
    "OpenFaults",
    "Publisher",
    "PublisherSettings",
    "Remediations",
    "RetrySettings",
    "Spool",
    "SpoolFull",
    "SpoolLimits",
    "SpoolStats",
    "TemporalRemediations",
    "Verdict",
]
