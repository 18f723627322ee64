"""The diagnostics order (see gpuheal.domain.node_orders): before a repair that wipes the node's state
(a reboot), the worker writes it into the node annotation `gpuheal.io/diagnostics-request`; the agent
collects a bundle (`nvidia-bug-report.sh` where it is installed, else a probe of what NVML reports),
stores it where it is configured to (a directory, or an S3-compatible bucket) and answers in the
node condition `GpuDiagnostics` with where the bundle is."""

from __future__ import annotations

from gpuheal.domain.marks import DIAGNOSTICS_REQUEST_ANNOTATION
from gpuheal.domain.node_orders import NodeOrder, NodeReport, OrderKind

__all__ = ["DIAGNOSTICS", "DIAGNOSTICS_CONDITION", "DiagnosticsOrder", "DiagnosticsReport"]

DIAGNOSTICS_CONDITION = "GpuDiagnostics"


class DiagnosticsOrder(NodeOrder):
    """Collect a diagnostics bundle on this node and store it."""

    # Why, for the bundle's name and its reader ("XID 79 on GPU-…").
    reason: str = ""


class DiagnosticsReport(NodeReport):
    """Where the bundle of order `id` is (empty when it could not be stored), and what collected it."""

    location: str = ""
    size: int = 0
    # "nvidia-bug-report.sh", "nvml".
    tool: str = ""


DIAGNOSTICS = OrderKind(
    name="diagnostics",
    annotation=DIAGNOSTICS_REQUEST_ANNOTATION,
    condition=DIAGNOSTICS_CONDITION,
    order=DiagnosticsOrder,
    report=DiagnosticsReport,
    reason_ok="BundleStored",
    reason_failed="BundleFailed",
)
