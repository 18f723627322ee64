"""Proof that a reset happened: the driver's acknowledgement in the kernel log, or NVML's view of the GPU.

`ResetAcknowledgements` is fed by the kernel-log monitor (its `on_event` hook) with every GPU reset
acknowledgement and every reset failure it parses, and numbers them, so a wait can ask for news that
arrived after a mark taken before the reset began. The monitor shows it only lines read after it
caught up with the log (older lines are old news), and a mark is taken once it has (`until_caught_up`),
so the acknowledgement of a reset ordered while the backlog is still read is not taken for backlog. `confirm` waits (bounded) for each GPU's proof: the
acknowledgement, or, once the acknowledgement had `nvml_grace` to arrive, NVML showing the GPU
present with nothing pending (no lost GPU, no page retirement or row remapping waiting for a reset, no
uncorrectable ECC error counted since the driver loaded or the GPU was last reset). The driver saying
a GPU's reset failed ends the wait for that GPU at once: it is failed, and nothing proves it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpuheal.agents.gpu_identity import normalise_uuid
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent
from gpuheal.agents.nvml.interface import GpuInfo, Nvml, NvmlError
from gpuheal.agents.reset.settings import ResetSettings
from gpuheal.domain.truncate import truncate

log = logging.getLogger(__name__)

KERNEL_LOG = "kernel-log"
# The driver's words of a failure kept per GPU, in bytes (a line of a log file can be 1 MiB).
MAX_FAILURE_WORDS = 512
NVML = "nvml"


class ResetAcknowledgements:
    """The GPU reset acknowledgements and failures the kernel-log monitor has seen, by PCI address and UUID."""

    def __init__(self, *, caught_up: bool = True) -> None:
        # Set once the kernel-log monitor has handled its backlog (`caught_up`); a mark waits for it.
        self._caught_up = asyncio.Event()
        if caught_up:
            self._caught_up.set()
        self._sequence = 0
        self._last: dict[str, int] = {}  # PCI key or UUID -> sequence number of its latest acknowledgement
        # PCI key or UUID -> sequence number and the driver's words of its latest reset failure.
        self._failed: dict[str, tuple[int, str]] = {}
        self._changed = asyncio.Event()

    def observe(self, event: KernelEvent, gpu_uuid: str | None) -> None:
        """The kernel-log monitor's observer: remember reset acknowledgements and failures, ignore the rest."""
        if event.kind not in (EventKind.GPU_RESET, EventKind.GPU_RESET_FAILED):
            return
        self._sequence += 1
        for key in (event.pci_key, normalise_uuid(gpu_uuid or "")):
            if not key:
                continue
            if event.kind is EventKind.GPU_RESET:
                self._last[key] = self._sequence
            else:
                self._failed[key] = (self._sequence, truncate(event.message, MAX_FAILURE_WORDS))
        self._changed.set()
        self._changed = asyncio.Event()

    def caught_up(self) -> None:
        """The kernel-log monitor's `on_caught_up`: what it reads from now on is news."""
        self._caught_up.set()

    async def until_caught_up(self, timeout: float) -> bool:
        """Wait (up to `timeout` seconds) until the monitor has handled its backlog; whether it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), max(0.0, timeout))
        return self._caught_up.is_set()

    def mark(self) -> int:
        """A point in the stream of news; `seen_since` and `failed_since` count only what came after it."""
        return self._sequence

    def seen_since(self, gpu: GpuInfo, mark: int) -> bool:
        """Whether the GPU's reset was acknowledged after `mark` (under its address or its UUID)."""
        return any(self._last.get(key, 0) > mark for key in _keys(gpu))

    def failed_since(self, gpu: GpuInfo, mark: int) -> str | None:
        """The driver's words when it said after `mark` that the GPU's reset failed; None when it did not."""
        for key in _keys(gpu):
            sequence, message = self._failed.get(key, (0, ""))
            if sequence > mark:
                return message
        return None

    async def wait(self, timeout: float) -> None:
        """Return when the next acknowledgement or failure arrives, or after `timeout` seconds."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), max(0.0, timeout))


def _keys(gpu: GpuInfo) -> tuple[str, str]:
    return gpu.pci, normalise_uuid(gpu.uuid) or gpu.uuid


@dataclass(frozen=True, slots=True)
class Confirmation:
    """How each GPU's reset was proven (UUID -> "kernel-log" or "nvml"), the GPUs still unproven, and
    those the driver said failed (UUID -> its words)."""

    proven: dict[str, str]
    unproven: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The report's `confirmed_by`: "kernel-log" when the driver acknowledged every GPU, else "nvml"."""
        if self.unproven or self.failed or not self.proven:
            return ""
        return KERNEL_LOG if all(how == KERNEL_LOG for how in self.proven.values()) else NVML


async def confirm(
    gpus: Sequence[GpuInfo],
    *,
    acknowledgements: ResetAcknowledgements | None,
    mark: int,
    nvml: Nvml | None,
    settings: ResetSettings,
) -> Confirmation:
    """Wait up to `confirm_timeout` for every GPU's proof; see the module docstring.

    A failure the driver reports ends the wait at once: one failed GPU fails the reset, and the
    GPUs not proven by then are left unproven.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + settings.confirm_timeout.total_seconds()
    # Without a kernel-log monitor there is no acknowledgement to wait for: NVML may answer at once.
    nvml_from = started + (settings.nvml_grace.total_seconds() if acknowledgements is not None else 0.0)
    proven: dict[str, str] = {}
    failed: dict[str, str] = {}
    pending = list(gpus)
    while True:
        if acknowledgements is not None:
            for gpu in pending:
                failure = acknowledgements.failed_since(gpu, mark)
                if failure is not None:
                    failed[gpu.uuid] = failure
                elif acknowledgements.seen_since(gpu, mark):
                    proven[gpu.uuid] = KERNEL_LOG
            pending = [gpu for gpu in pending if gpu.uuid not in proven and gpu.uuid not in failed]
            if failed:
                return Confirmation(proven, tuple(gpu.uuid for gpu in pending), failed)
        if pending and nvml is not None and loop.time() >= nvml_from:
            for uuid in await asyncio.to_thread(_nvml_clear, nvml, pending):
                proven[uuid] = NVML
            pending = [gpu for gpu in pending if gpu.uuid not in proven]
        now = loop.time()
        if not pending or now >= deadline or (acknowledgements is None and nvml is None):
            return Confirmation(proven, tuple(gpu.uuid for gpu in pending))
        wake = min(deadline, now + settings.confirm_poll.total_seconds())
        if nvml is not None and now < nvml_from:
            wake = min(wake, nvml_from)
        if acknowledgements is not None:
            await acknowledgements.wait(wake - now)
        else:
            await asyncio.sleep(wake - now)


def _nvml_clear(nvml: Nvml, gpus: Sequence[GpuInfo]) -> list[str]:
    """The UUIDs of the GPUs NVML shows present and with nothing pending (blocking: run in a thread)."""
    clear: list[str] = []
    for gpu in gpus:
        try:
            same = normalise_uuid(nvml.device_info(gpu.index).uuid) == normalise_uuid(gpu.uuid)
            signals = nvml.health_signals(gpu.index)
        except NvmlError as error:  # lost, or NVML not (yet) back: not proven, try again later
            log.debug("NVML cannot vouch for GPU %s yet: %s", gpu.uuid, error)
            continue
        rows = signals.remapped_rows
        if (
            same
            and signals.retired_pages_pending is not True
            and (rows is None or not rows.pending)
            and not signals.ecc_dbe_volatile
        ):
            clear.append(gpu.uuid)
    return clear
