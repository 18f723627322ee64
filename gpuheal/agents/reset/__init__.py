"""GPU reset on the node: the agent's answer to the reset orders a remediation writes on its node.

`handler.GpuResetHandler` carries each order out (the order watcher, gpuheal.agents.orders, finds
them and writes the answers); `resetters` run the
reset (`nvidia-smi --gpu-reset`, or another resetter registered in the `gpuheal.resetters` entry
point group: gpuheal-sim's simulated driver writes its acknowledgement to a simulated node's kernel
log); `confirm` proves it from the kernel-log monitor's acknowledgements or NVML; `settings` the
mode and bounds (`AgentSettings.gpu_reset`).
"""

from gpuheal.agents.reset.confirm import Confirmation, ResetAcknowledgements, confirm
from gpuheal.agents.reset.handler import DISABLED, GpuResetHandler
from gpuheal.agents.reset.resetters import (
    RESETTER_GROUP,
    GpuResetter,
    NvidiaSmiResetter,
    ResetCommandError,
    ResetterFactory,
    UnknownResetMode,
    check_reset_mode,
    make_resetter,
    reset_modes,
)
from gpuheal.agents.reset.settings import OFF, GpuResetMode, ResetSettings

__all__ = [
    "DISABLED",
    "OFF",
    "RESETTER_GROUP",
    "Confirmation",
    "GpuResetHandler",
    "GpuResetMode",
    "GpuResetter",
    "NvidiaSmiResetter",
    "ResetAcknowledgements",
    "ResetCommandError",
    "ResetSettings",
    "ResetterFactory",
    "UnknownResetMode",
    "check_reset_mode",
    "confirm",
    "make_resetter",
    "reset_modes",
]
