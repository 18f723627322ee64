"""The NVML provider: GPUs as NVML sees them, registered in the Device API, with XID and health-signal monitoring.

`Nvml` (interface) is the seam; `RealNvml` drives the driver through nvidia-ml-py, and other
backends (the test bed's in-memory `gpuheal_sim.fake_nvml`) are found by name (`backends`).
`NvmlProvider` ties one to the Device API and an event sink. `python -m gpuheal.agents.nvml.probe` checks a real GPU machine.
"""

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
]
