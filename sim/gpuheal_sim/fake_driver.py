"""`KernelLogResetter`: the GPU driver of a simulated node, gpuheal's "kernel-log" GPU reset mode.

gpuheal-sim registers it in the `gpuheal.resetters` entry point group (`resetter`), so a simulated
agent (`gpuheal_sim.agent_settings.simulated_agent_settings`) resets its GPUs the way a real node's
driver would answer `nvidia-smi --gpu-reset`: with an acknowledgement in the kernel log.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from gpuheal.agents.nvml.interface import GpuInfo, Nvml
from gpuheal.agents.reset import ResetCommandError, ResetSettings


@runtime_checkable
class SimulatedGpus(Protocol):
    """An NVML that plays the GPUs itself (`FakeNvml`): a simulated reset resets them too."""

    def reset_gpu(self, index: int) -> None: ...


class KernelLogResetter:
    """The driver of a simulated node: a reset appends the driver's acknowledgement to the node's kernel log.

    The lines are /dev/kmsg records as the fault injector writes them (`6,SEQ,USEC,-;NVRM: NVRM: GPU
    <pci>: GPU reset complete`), into the file the simulated agent's kernel-log monitor follows, so
    the acknowledgement reaches the reset handler the way a real one would. With the node's
    fake NVML (`SimulatedGpus`), the fake GPU is reset too (it answers again, pending remappings take effect).
    """

    name = "kernel-log"
    releases_nvml = False

    def __init__(self, kernel_log: Path, *, nvml: SimulatedGpus | None = None) -> None:
        self.kernel_log = kernel_log
        self._nvml = nvml
        self._sequence = itertools.count(1)

    def record(self, gpu: GpuInfo) -> str:
        """The acknowledgement of one GPU's reset, as a kmsg record line."""
        usec = int(time.monotonic() * 1e6)
        return f"6,{next(self._sequence)},{usec},-;NVRM: NVRM: GPU {gpu.pci}: GPU reset complete\n"

    async def reset(self, gpus: Sequence[GpuInfo]) -> None:
        if self._nvml is not None:
            for gpu in gpus:
                self._nvml.reset_gpu(gpu.index)
        text = "".join(self.record(gpu) for gpu in gpus)
        try:
            await asyncio.to_thread(_append, self.kernel_log, text)
        except OSError as error:
            raise ResetCommandError(f"cannot write the simulated driver's acknowledgement: {error}") from error


def resetter(settings: ResetSettings, kernel_log: Path | None, nvml: Nvml | None) -> KernelLogResetter:
    """The "kernel-log" entry point of `gpuheal.resetters`: it needs the kernel log file to write to."""
    if kernel_log is None:
        raise ValueError("the kernel-log GPU resetter needs a kernel log file (a simulated node's)")
    return KernelLogResetter(kernel_log, nvml=nvml if isinstance(nvml, SimulatedGpus) else None)


def _append(path: Path, text: str) -> None:
    # One write of whole lines: the follower never sees half a record.
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
