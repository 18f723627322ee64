"""The NVML provider: GPUs as NVML sees them, registered in the Device API, with XID and health-signal monitoring.

`Nvml` (interface) is the seam; `RealNvml` drives the driver through nvidia-ml-py and `FakeNvml` is
an in-memory stand-in for tests, the simulator and the demo. `NvmlProvider` ties one to the Device
API and an event sink. `python -m gpuheal.agents.nvml.probe` checks a real GPU machine.
"""

from gpuheal.agents.nvml.fake import FakeNvml, fake_gpu_info
from gpuheal.agents.nvml.interface import (
    GpuInfo,
    GpuLostError,
    HealthSignals,
    Nvml,
    NvmlCallError,
    NvmlError,
    NvmlUnavailableError,
    RemappedRows,
    Signal,
    XidEvent,
)
from gpuheal.agents.nvml.provider import NvmlProvider
from gpuheal.agents.nvml.real import RealNvml
from gpuheal.agents.nvml.verdict import AGENT, CONDITION_HEALTHY, Check

__all__ = [
    "AGENT",
    "CONDITION_HEALTHY",
    "Check",
    "FakeNvml",
    "GpuInfo",
    "GpuLostError",
    "HealthSignals",
    "Nvml",
    "NvmlCallError",
    "NvmlError",
    "NvmlProvider",
    "NvmlUnavailableError",
    "RealNvml",
    "RemappedRows",
    "Signal",
    "XidEvent",
    "fake_gpu_info",
]
