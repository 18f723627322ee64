"""Resetters: what actually resets a GPU. `nvidia-smi --gpu-reset` on a node, a simulated driver elsewhere.

A resetter only runs the reset; whether it worked is proven separately (`confirm`), from the
driver's acknowledgement in the kernel log or from NVML. A reset that could not even be run (the
command missing, failing or hanging) raises `ResetCommandError` with a line for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from gpuheal.agents.nvml.interface import GpuInfo, Nvml
from gpuheal.agents.reset.settings import GpuResetMode, ResetSettings

# How much of a failed command's output goes into the report.
_TAIL_CHARS = 400


class ResetCommandError(Exception):
    """The reset could not be carried out; the message says what ran and what it answered."""


class GpuResetter(Protocol):
    """Resets GPUs. `name` appears in reports; `releases_nvml` asks the agent to let go of NVML meanwhile."""

    name: str
    # nvidia-smi refuses to reset a GPU that any process (this agent's NVML provider too) holds open.
    releases_nvml: bool

    async def reset(self, gpus: Sequence[GpuInfo]) -> None:
        """Reset these GPUs, in order; raises `ResetCommandError` at the first that cannot be reset."""
        ...


_DEFAULTS = ResetSettings()


@runtime_checkable
class SimulatedGpus(Protocol):
    """An NVML that plays the GPUs itself (the test bed's fake): a simulated reset resets them too."""

    def reset_gpu(self, index: int) -> None: ...


class NvidiaSmiResetter:
    """`nvidia-smi --gpu-reset -i <uuid>`, one GPU at a time, as a plain argv (no shell).

    Privileged: it needs root and the GPU's device files, and no other process may hold the GPU.
    Each run is bounded by `timeout`; a run that overstays is killed and counts as failed.
    """

    name = "nvidia-smi"
    releases_nvml = True

    def __init__(self, binary: str = _DEFAULTS.nvidia_smi, *, timeout: timedelta = _DEFAULTS.command_timeout) -> None:
        self.binary = binary
        self.timeout = timeout

    def argv(self, gpu: GpuInfo) -> list[str]:
        """The command line that resets one GPU."""
        return [self.binary, "--gpu-reset", "-i", gpu.uuid]

    async def reset(self, gpus: Sequence[GpuInfo]) -> None:
        done: list[str] = []
        for gpu in gpus:
            try:
                await self._run(self.argv(gpu))
            except ResetCommandError as error:
                if done:
                    raise ResetCommandError(f"{error} (already reset: {', '.join(done)})") from error
                raise
            done.append(gpu.uuid)

    async def _run(self, argv: list[str]) -> None:
        shown = " ".join(argv)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:  # not installed, not executable, not on PATH
            raise ResetCommandError(f"cannot run {self.binary}: {error.strerror or error}") from error
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout.total_seconds())
        except BaseException as error:  # timed out, or the agent is stopping: no reset left running unseen
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            if isinstance(error, TimeoutError):
                raise ResetCommandError(
                    f"{shown} did not finish within {self.timeout.total_seconds():g}s; killed"
                ) from error
            raise
        if process.returncode != 0:
            # nvidia-smi writes most of its refusals ("In use by another client") to stdout.
            said = _tail(stderr) or _tail(stdout) or "no output"
            raise ResetCommandError(f"{shown} failed (exit {process.returncode}): {said}")


class KernelLogResetter:
    """The driver of a simulated node: a reset appends the driver's acknowledgement to the node's kernel log.

    The lines are /dev/kmsg records as the fault injector writes them (`6,SEQ,USEC,-;NVRM: NVRM: GPU
    <pci>: GPU reset complete`), into the file the simulated agent's kernel-log monitor follows, so
    the acknowledgement reaches the reset watcher the way a real one would. With the node's
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


def make_resetter(
    mode: GpuResetMode, settings: ResetSettings, *, kernel_log: Path | None = None, nvml: Nvml | None = None
) -> GpuResetter | None:
    """The resetter for a mode; None for "off". "kernel-log" needs the kernel log file to write to."""
    if mode == "off":
        return None
    if mode == "nvidia-smi":
        return NvidiaSmiResetter(settings.nvidia_smi, timeout=settings.command_timeout)
    if kernel_log is None:
        raise ValueError("the kernel-log GPU resetter needs a kernel log file (a simulated node's)")
    return KernelLogResetter(kernel_log, nvml=nvml if isinstance(nvml, SimulatedGpus) else None)


def _append(path: Path, text: str) -> None:
    # One write of whole lines: the follower never sees half a record.
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def _tail(output: bytes) -> str:
    text = " ".join(output.decode("utf-8", errors="replace").split())
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]
