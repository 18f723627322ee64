"""GPU reset on the node: the agent's answer to the reset orders a remediation writes on its node.

`watcher.GpuResetWatcher` follows the node and carries each order out once; `resetters` run the
reset (`nvidia-smi --gpu-reset`, or the simulated driver writing its acknowledgement to a
simulated node's kernel log); `confirm` proves it from the kernel-log monitor's acknowledgements
or NVML; `node` is the Kubernetes side; `settings` the mode and bounds (`AgentSettings.gpu_reset`).
"""

from gpuheal.agents.reset.confirm import Confirmation, ResetAcknowledgements, confirm
from gpuheal.agents.reset.resetters import (
    GpuResetter,
    KernelLogResetter,
    NvidiaSmiResetter,
    ResetCommandError,
    make_resetter,
)
from gpuheal.agents.reset.settings import GPU_RESET_MODES, GpuResetMode, ResetSettings
from gpuheal.agents.reset.watcher import DISABLED, GpuResetWatcher

__all__ = [
    "DISABLED",
    "GPU_RESET_MODES",
    "Confirmation",
    "GpuResetMode",
    "GpuResetWatcher",
    "GpuResetter",
    "KernelLogResetter",
    "NvidiaSmiResetter",
    "ResetAcknowledgements",
    "ResetCommandError",
    "ResetSettings",
    "confirm",
    "make_resetter",
]
