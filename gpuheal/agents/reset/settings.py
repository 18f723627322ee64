"""How the agent's GPU reset is configured: which resetter, and the bounds on every wait."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

# Who resets GPUs on order: "off" (built in: orders are answered with a failure, the worker then
# reboots), or a resetter registered by that name in the `gpuheal.resetters` entry point group:
# gpuheal's "nvidia-smi" (the real reset, privileged), gpuheal-sim's "kernel-log" (the simulated
# driver of a simulated node). `resetters.reset_modes()` lists what is installed.
GpuResetMode: TypeAlias = str
OFF: GpuResetMode = "off"


@dataclass(frozen=True, slots=True)
class ResetSettings:
    """Bounds and paths of the GPU reset; the defaults suit a real node, tests shorten them."""

    # The nvidia-smi binary: a bare name is looked up on PATH.
    nvidia_smi: str = "nvidia-smi"
    # How long one `nvidia-smi --gpu-reset` may run before it is killed and the reset failed.
    command_timeout: timedelta = timedelta(seconds=120)
    # After the reset command: how long to wait for proof before reporting it unconfirmed.
    confirm_timeout: timedelta = timedelta(seconds=60)
    # The driver's acknowledgement is the better proof; NVML's view is accepted only after this long.
    nvml_grace: timedelta = timedelta(seconds=5)
    # How often NVML is read again while waiting for proof.
    confirm_poll: timedelta = timedelta(seconds=0.25)

    def __post_init__(self) -> None:
        for name in ("command_timeout", "confirm_timeout", "confirm_poll"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"ResetSettings.{name} must be positive")
        if self.nvml_grace < timedelta(0):
            raise ValueError("ResetSettings.nvml_grace must not be negative")
