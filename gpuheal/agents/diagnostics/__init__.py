"""Diagnostics bundles on the node: the agent's answer to the collection orders a remediation writes
before a reboot wipes the node's state. `collectors` gather the bundle, `stores` keep it (a directory
or an S3-compatible bucket), `handler` answers orders (the order watcher, gpuheal.agents.orders, finds
them and writes the answers)."""

from gpuheal.agents.diagnostics.collectors import (
    COLLECTOR_MODES,
    BugReportCollector,
    Bundle,
    CollectError,
    Collector,
    CollectorMode,
    NvmlProbe,
    choose,
)
from gpuheal.agents.diagnostics.handler import DISABLED, DiagnosticsHandler
from gpuheal.agents.diagnostics.stores import DirectoryStore, S3Store, Store, StoreError, destination

__all__ = [
    "COLLECTOR_MODES",
    "DISABLED",
    "BugReportCollector",
    "Bundle",
    "CollectError",
    "Collector",
    "CollectorMode",
    "DiagnosticsHandler",
    "DirectoryStore",
    "NvmlProbe",
    "S3Store",
    "Store",
    "StoreError",
    "choose",
    "destination",
]
