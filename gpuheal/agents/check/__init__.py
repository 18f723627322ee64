"""GPU checks on the node: the agent's answer to the check orders a remediation writes before the
node goes back to service. `checkers` run DCGM's diagnostic or read NVML; `handler` answers orders
(the order watcher, gpuheal.agents.orders, finds them and writes the answers)."""

from gpuheal.agents.check.checkers import (
    GPU_CHECK_MODES,
    CheckResult,
    DcgmiChecker,
    GpuChecker,
    GpuCheckMode,
    NvmlChecker,
    choose,
    read_diagnostic,
)
from gpuheal.agents.check.handler import DISABLED, GpuCheckHandler

__all__ = [
    "DISABLED",
    "GPU_CHECK_MODES",
    "CheckResult",
    "DcgmiChecker",
    "GpuCheckHandler",
    "GpuCheckMode",
    "GpuChecker",
    "NvmlChecker",
    "choose",
    "read_diagnostic",
]
