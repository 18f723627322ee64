"""Resetters: what actually resets a GPU, found by name in the `gpuheal.resetters` entry point group.

gpuheal registers "nvidia-smi" (`nvidia-smi --gpu-reset` on a real node); the test bed (gpuheal-sim)
registers "kernel-log", the driver of a simulated node. "off" is built in: no resetter at all. The
agent never imports a resetter it does not run.

A resetter only runs the reset; whether it worked is proven separately (`confirm`), from the
driver's acknowledgement in the kernel log or from NVML. A reset that could not even be run (the
command missing, failing or hanging) raises `ResetCommandError` with a line for people.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol

from gpuheal.agents.command import CommandError, run_bounded
from gpuheal.agents.nvml.interface import GpuInfo, Nvml
from gpuheal.agents.reset.settings import OFF, GpuResetMode, ResetSettings

RESETTER_GROUP = "gpuheal.resetters"


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


class ResetterFactory(Protocol):
    """Makes the resetter of one node: from the reset settings, its kernel log file (None: no kernel-log
    monitor) and the agent's NVML. Raises ValueError when the node lacks what the resetter needs."""

    def __call__(self, settings: ResetSettings, kernel_log: Path | None, nvml: Nvml | None) -> GpuResetter: ...


class UnknownResetMode(ValueError):
    """No installed distribution registers a GPU resetter of that name."""


_DEFAULTS = ResetSettings()


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
        try:
            finished = await run_bounded(argv, self.timeout)
        except CommandError as error:
            raise ResetCommandError(str(error)) from error
        if finished.returncode != 0:
            # nvidia-smi writes most of its refusals ("In use by another client") to stdout.
            raise ResetCommandError(f"{' '.join(argv)} failed (exit {finished.returncode}): {finished.said()}")


def nvidia_smi(settings: ResetSettings, kernel_log: Path | None, nvml: Nvml | None) -> GpuResetter:
    """The "nvidia-smi" entry point: the real reset, bounded by the settings' command timeout."""
    return NvidiaSmiResetter(settings.nvidia_smi, timeout=settings.command_timeout)


def reset_modes() -> tuple[str, ...]:
    """Every GPU reset mode this installation offers: "off", then the installed resetters' names."""
    return (OFF, *sorted(_registered()))


def check_reset_mode(mode: GpuResetMode) -> None:
    """Raises UnknownResetMode, naming the installed choices, unless `mode` is one of them."""
    if mode != OFF and mode not in _registered():
        raise _unknown(mode)


def make_resetter(
    mode: GpuResetMode, settings: ResetSettings, *, kernel_log: Path | None = None, nvml: Nvml | None = None
) -> GpuResetter | None:
    """The resetter registered as `mode`, made for this node; None for "off".

    Raises UnknownResetMode (naming the choices) for a mode no installed distribution registers, and
    whatever the resetter's factory refuses (the kernel-log resetter needs the kernel log file to write to).
    """
    if mode == OFF:
        return None
    registered = _registered()
    if mode not in registered:
        raise _unknown(mode)
    factory: ResetterFactory = registered[mode].load()
    return factory(settings, kernel_log, nvml)


def _registered() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=RESETTER_GROUP)}


def _unknown(mode: GpuResetMode) -> UnknownResetMode:
    return UnknownResetMode(
        f"no GPU reset mode {mode!r} is installed (installed: {', '.join(reset_modes())}); "
        "the simulated driver (kernel-log) comes with gpuheal-sim"
    )
