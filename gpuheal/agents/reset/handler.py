"""`GpuResetHandler`: carries out the GPU reset orders written on the node (gpuheal.domain.gpu_reset).

- reset disabled (no resetter), or GPUs the node does not have: a failed report at once;
- otherwise the resetter runs (with NVML released when it asks for that) and the reset is
  confirmed (`confirm`): a command failure, a reset the driver says failed (as soon as its line is
  read) or a reset left unproven is a failed report, and the worker falls back to a reboot;
- after a confirmed report, `on_answered` (the agent reporting GPU health anew) runs: the worker
  accepts GPU health after a reset only when it was reported after the answer.

The order watcher (gpuheal.agents.orders) finds the orders and writes the reports.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from gpuheal.agents.gpu_identity import normalise_uuid, pci_key
from gpuheal.agents.nvml.interface import GpuInfo, Nvml
from gpuheal.agents.orders.watcher import report
from gpuheal.agents.reset.confirm import KERNEL_LOG, Confirmation, ResetAcknowledgements, confirm
from gpuheal.agents.reset.resetters import GpuResetter, ResetCommandError
from gpuheal.agents.reset.settings import ResetSettings
from gpuheal.domain.gpu_reset import GPU_RESET, GpuResetOrder, GpuResetReport
from gpuheal.domain.node_orders import OrderKind

log = logging.getLogger(__name__)

DISABLED = "GPU reset is disabled on this node's agent (start it with --gpu-reset)"

# The GPUs the node has, asked for anew with every order (NVML's enumeration).
GpuInventory = Callable[[], Sequence[GpuInfo]]
# Lets go of NVML for the duration of the block (`NvmlProvider.released`).
ReleaseNvml = Callable[[], AbstractAsyncContextManager[None]]
# Told of every order answered with a confirmed reset, once its report is written.
OnAnswered = Callable[[GpuResetOrder, GpuResetReport], Awaitable[None]]


class GpuResetHandler:
    """Resets the GPUs an order names; see the module docstring.

    `resetter` None means reset is disabled. `acknowledgements` (fed by the kernel-log monitor) and
    `nvml` are the two ways a reset is proven; either may be None where the agent lacks it.
    """

    def __init__(
        self,
        node: str,
        *,
        resetter: GpuResetter | None,
        gpus: GpuInventory,
        acknowledgements: ResetAcknowledgements | None = None,
        nvml: Nvml | None = None,
        release_nvml: ReleaseNvml | None = None,
        settings: ResetSettings | None = None,
        on_answered: OnAnswered | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or ResetSettings()
        self._resetter = resetter
        self._gpus = gpus
        self._acknowledgements = acknowledgements
        self._nvml = nvml
        self._release_nvml = release_nvml
        self._on_answered = on_answered
        # How many times the resetter ran (orders carried out, successful or not).
        self.resets = 0

    @property
    def kind(self) -> OrderKind[GpuResetOrder, GpuResetReport]:
        return GPU_RESET

    async def answered(self, order: GpuResetOrder, answer: GpuResetReport) -> None:
        if answer.ok and self._on_answered is not None:
            await self._on_answered(order, answer)

    async def carry_out(self, order: GpuResetOrder) -> GpuResetReport:
        if self._resetter is None:
            log.warning(
                "GPU reset order %s on %s refused: reset is disabled",
                order.id,
                self.node,
                extra={"node": self.node, "gpu": order.gpus},
            )
            return report(GPU_RESET, order.id, ok=False, detail=DISABLED)
        inventory = list(self._gpus())
        chosen, missing = select(order.gpus, inventory)
        if missing:
            detail = f"GPUs not on this node: {', '.join(missing)} (it has {len(inventory)} GPUs)"
            log.warning(
                "GPU reset order %s on %s refused: %s",
                order.id,
                self.node,
                detail,
                extra={"node": self.node, "gpu": order.gpus},
            )
            return report(GPU_RESET, order.id, ok=False, detail=detail)
        names = ", ".join(gpu.uuid for gpu in chosen)
        about = {"node": self.node, "gpu": [gpu.uuid for gpu in chosen]}
        log.info(
            "GPU reset order %s on %s: resetting %s with %s",
            order.id,
            self.node,
            names,
            self._resetter.name,
            extra=about,
        )
        mark = 0
        if self._acknowledgements is not None:
            if not await self._acknowledgements.until_caught_up(self.settings.confirm_timeout.total_seconds()):
                log.warning(
                    "GPU reset order %s on %s: the kernel-log monitor is still reading the log's backlog; "
                    "the driver's acknowledgement may be taken for backlog (NVML can still confirm the reset)",
                    order.id,
                    self.node,
                    extra=about,
                )
            mark = self._acknowledgements.mark()
        self.resets += 1
        try:
            async with self._released():
                await self._resetter.reset(chosen)
        except ResetCommandError as error:
            log.error("GPU reset order %s on %s failed: %s", order.id, self.node, error, extra=about)
            return report(GPU_RESET, order.id, ok=False, detail=str(error))
        proof = await confirm(
            chosen, acknowledgements=self._acknowledgements, mark=mark, nvml=self._nvml, settings=self.settings
        )
        if proof.failed:
            detail = "; ".join(
                f"the driver reported the reset of {uuid} failed: {words}" for uuid, words in proof.failed.items()
            )
            log.error("GPU reset order %s on %s: %s", order.id, self.node, detail, extra=about)
            return report(GPU_RESET, order.id, ok=False, detail=detail)
        if proof.unproven:
            detail = (
                f"reset of {', '.join(proof.unproven)} not confirmed within {self.settings.confirm_timeout.total_seconds():g}s"
                + ("" if self._acknowledgements or self._nvml else " (no kernel-log monitor and no NVML to confirm it)")
            )
            log.error("GPU reset order %s on %s: %s", order.id, self.node, detail, extra=about)
            return report(GPU_RESET, order.id, ok=False, detail=detail)
        detail = f"reset {names} with {self._resetter.name}; {_proven(proof)}"
        log.info("GPU reset order %s on %s: %s", order.id, self.node, detail, extra=about)
        return report(GPU_RESET, order.id, ok=True, detail=detail, confirmed_by=proof.source)

    def _released(self) -> AbstractAsyncContextManager[None]:
        if self._resetter is not None and self._resetter.releases_nvml and self._release_nvml is not None:
            return self._release_nvml()
        return contextlib.nullcontext()


def select(names: Sequence[str], inventory: Sequence[GpuInfo]) -> tuple[list[GpuInfo], list[str]]:
    """The node's GPUs an order names (by UUID in any case, or by PCI address), and the names it lacks."""
    by_name: dict[str, GpuInfo] = {}
    for gpu in inventory:
        by_name[normalise_uuid(gpu.uuid) or gpu.uuid] = gpu
        by_name[gpu.pci] = gpu
    chosen: list[GpuInfo] = []
    missing: list[str] = []
    for name in names:
        found = by_name.get(normalise_uuid(name) or pci_key(name) or name)
        if found is None:
            missing.append(name)
        elif found not in chosen:
            chosen.append(found)
    return chosen, missing


def _proven(proof: Confirmation) -> str:
    sources = set(proof.proven.values())
    if sources == {KERNEL_LOG}:
        return "confirmed by the driver's reset acknowledgement in the kernel log"
    if KERNEL_LOG not in sources:
        return "confirmed by NVML (GPU present, nothing pending)"
    return "confirmed: " + ", ".join(f"{uuid} by {how}" for uuid, how in proof.proven.items())
