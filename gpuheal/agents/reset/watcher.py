"""`GpuResetWatcher`: the agent's side of the GPU reset handshake (see `gpuheal.domain.gpu_reset`).

It follows its own Node (list, then watch with `fieldSelector=metadata.name=<node>`; where the
agent's role may only `get` nodes, a GET every `poll_interval`) and answers each reset order in
the `gpuheal.io/gpu-reset-request` annotation exactly once:

- an order whose id already has a report in the node's `GpuReset` condition is done, also for an
  agent that restarted since: the condition is the record;
- reset disabled (no resetter), or GPUs the node does not have: a failed report at once;
- otherwise the resetter runs (with NVML released when it asks for that) and the reset is
  confirmed (`confirm`): a command failure, a reset the driver says failed (as soon as its line is
  read) or a reset left unproven is a failed report, and the worker falls back to a reboot;
- the report goes into the `GpuReset` condition through the status subresource ("True" with
  reason ResetConfirmed, or "False" with ResetFailed; the message is the `GpuResetReport` JSON);
- after a confirmed report, `on_answered` (the agent reporting GPU health anew) runs: the worker
  accepts GPU health after a reset only when it was reported after the answer.

`on_node`, when given, is shown every state of the node as it arrives (the agent learns from it when
its node's remediation ends, see `gpuheal.agents.kmsg.holds`).

A malformed annotation is not the agent's to interpret: it is logged and left alone, unless it
carries an id, which is then answered with a failure so the worker does not wait in vain.
Orders are carried out one at a time, on the newest state of the node; the following goes on
meanwhile. Nothing here stops the rest of the agent: every failure is logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from pydantic import ValidationError

from gpuheal.agents.gpu_identity import normalise_uuid, pci_key
from gpuheal.agents.nvml.interface import GpuInfo, Nvml
from gpuheal.agents.reset.confirm import KERNEL_LOG, Confirmation, ResetAcknowledgements, confirm
from gpuheal.agents.reset.node import JsonNode, NodeApi
from gpuheal.agents.reset.resetters import GpuResetter, ResetCommandError
from gpuheal.agents.reset.settings import ResetSettings
from gpuheal.domain.gpu_reset import (
    GPU_RESET_CONDITION,
    GPU_RESET_REQUEST_ANNOTATION,
    REASON_CONFIRMED,
    REASON_FAILED,
    GpuResetOrder,
    GpuResetReport,
)
from gpuheal.domain.truncate import truncate

log = logging.getLogger(__name__)

# The most bytes of a report's detail (a condition message may hold 32 KiB; the report's JSON wraps it).
MAX_DETAIL = 8192
DISABLED = "GPU reset is disabled on this node's agent (start it with --gpu-reset)"
# 408, 429 and 5xx ask to come back later; 401/403 usually mean credentials or RBAC not there yet.
_RETRYABLE = frozenset({401, 403, 408, 429})
# Order ids this process answered, kept so a node state older than its own report is not acted on.
_REMEMBERED = 64
# While polling, list/watch is tried again this often: the 403 may have been RBAC not there yet.
_WATCH_RETRY_S = 600.0

# The GPUs the node has, asked for anew with every order (NVML's enumeration).
GpuInventory = Callable[[], Sequence[GpuInfo]]
# Lets go of NVML for the duration of the block (`NvmlProvider.released`).
ReleaseNvml = Callable[[], AbstractAsyncContextManager[None]]
# Told of every order answered with a confirmed reset, once its report is written.
OnAnswered = Callable[[GpuResetOrder, GpuResetReport], Awaitable[None]]
# Shown every state of the node, in order; must not block.
OnNode = Callable[[JsonNode], None]


class GpuResetWatcher:
    """Carries out the GPU reset orders written on one node; see the module docstring.

    `resetter` None means reset is disabled. `acknowledgements` (fed by the kernel-log monitor) and
    `nvml` are the two ways a reset is proven; either may be None where the agent lacks it.
    """

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        *,
        resetter: GpuResetter | None,
        gpus: GpuInventory,
        acknowledgements: ResetAcknowledgements | None = None,
        nvml: Nvml | None = None,
        release_nvml: ReleaseNvml | None = None,
        settings: ResetSettings | None = None,
        on_answered: OnAnswered | None = None,
        on_node: OnNode | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or ResetSettings()
        self._nodes = NodeApi(api, node, request_timeout=self.settings.request_timeout)
        self._resetter = resetter
        self._gpus = gpus
        self._acknowledgements = acknowledgements
        self._nvml = nvml
        self._release_nvml = release_nvml
        self._on_answered = on_answered
        self._on_node = on_node
        self._latest: JsonNode | None = None
        self._wake = asyncio.Event()
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._ignored = ""
        self._tasks: list[asyncio.Task[None]] = []
        # Set once the API refused list/watch: the node is then read with GET on a timer.
        self.polling = False
        # How many times the resetter ran (orders carried out, successful or not).
        self.resets = 0

    async def start(self) -> None:
        """Start following the node and answering orders; returns at once."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._follow(), name="gpuheal-reset-follow"),
            asyncio.create_task(self._serve(), name="gpuheal-reset-orders"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_end)
        log.info("GPU reset watcher for %s: reset %s", self.node, self._resetter.name if self._resetter else "disabled")

    async def stop(self) -> None:
        """Stop both tasks; a reset in progress is abandoned (its command killed), unanswered."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> GpuResetWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def offer(self, node: JsonNode) -> None:
        """A new state of the node: the order task looks at the newest one when it is free."""
        self._latest = node
        self._wake.set()
        if self._on_node is not None:
            try:
                self._on_node(node)
            except Exception:  # an observer's bug must not cost the node its reset orders
                log.exception("a node observer failed on %s", self.node)

    async def handle(self, node: Mapping[str, Any]) -> GpuResetReport | None:
        """Answer the order on this state of the node, unless there is none or it is answered; the report."""
        raw = _annotations(node).get(GPU_RESET_REQUEST_ANNOTATION)
        if not raw:
            return None
        order, order_id, problem = _parse_order(raw)
        if order_id is None:
            if raw != self._ignored:  # once per annotation value, not at every heartbeat
                self._ignored = raw
                log.warning("ignoring the GPU reset order on %s: %s", self.node, problem)
            return None
        if order_id in self._answered or _report_id(node) == order_id:
            return None
        if order is not None and order.boot_id and order.boot_id != _boot_id(node):
            # Written before the node last rebooted: the remediation has moved on to a reboot.
            return None
        if order is None:
            report = self._report(order_id, ok=False, detail=f"malformed GPU reset order: {problem}")
        else:
            report = await self._carry_out(order)
        await self._answer(report)
        if order is not None and report.ok and self._on_answered is not None:
            try:
                await self._on_answered(order, report)
            except Exception:  # the answer stands; the worker falls back to a reboot if health is not reported
                log.exception("reporting GPU health after reset order %s on %s failed", order.id, self.node)
        return report

    # --- carrying an order out ------------------------------------------------------------------------

    async def _carry_out(self, order: GpuResetOrder) -> GpuResetReport:
        if self._resetter is None:
            log.warning("GPU reset order %s on %s refused: reset is disabled", order.id, self.node)
            return self._report(order.id, ok=False, detail=DISABLED)
        inventory = list(self._gpus())
        chosen, missing = _select(order.gpus, inventory)
        if missing:
            detail = f"GPUs not on this node: {', '.join(missing)} (it has {len(inventory)} GPUs)"
            log.warning("GPU reset order %s on %s refused: %s", order.id, self.node, detail)
            return self._report(order.id, ok=False, detail=detail)
        names = ", ".join(gpu.uuid for gpu in chosen)
        log.info("GPU reset order %s on %s: resetting %s with %s", order.id, self.node, names, self._resetter.name)
        mark = 0
        if self._acknowledgements is not None:
            if not await self._acknowledgements.until_caught_up(self.settings.confirm_timeout.total_seconds()):
                log.warning(
                    "GPU reset order %s on %s: the kernel-log monitor is still reading the log's backlog; "
                    "the driver's acknowledgement may be taken for backlog (NVML can still confirm the reset)",
                    order.id,
                    self.node,
                )
            mark = self._acknowledgements.mark()
        self.resets += 1
        try:
            async with self._released():
                await self._resetter.reset(chosen)
        except ResetCommandError as error:
            log.error("GPU reset order %s on %s failed: %s", order.id, self.node, error)
            return self._report(order.id, ok=False, detail=str(error))
        proof = await confirm(
            chosen, acknowledgements=self._acknowledgements, mark=mark, nvml=self._nvml, settings=self.settings
        )
        if proof.failed:
            detail = "; ".join(
                f"the driver reported the reset of {uuid} failed: {words}" for uuid, words in proof.failed.items()
            )
            log.error("GPU reset order %s on %s: %s", order.id, self.node, detail)
            return self._report(order.id, ok=False, detail=detail)
        if proof.unproven:
            detail = (
                f"reset of {', '.join(proof.unproven)} not confirmed within {self.settings.confirm_timeout.total_seconds():g}s"
                + ("" if self._acknowledgements or self._nvml else " (no kernel-log monitor and no NVML to confirm it)")
            )
            log.error("GPU reset order %s on %s: %s", order.id, self.node, detail)
            return self._report(order.id, ok=False, detail=detail)
        detail = f"reset {names} with {self._resetter.name}; {_proven(proof)}"
        log.info("GPU reset order %s on %s: %s", order.id, self.node, detail)
        return self._report(order.id, ok=True, detail=detail, confirmed_by=proof.source)

    def _released(self) -> AbstractAsyncContextManager[None]:
        if self._resetter is not None and self._resetter.releases_nvml and self._release_nvml is not None:
            return self._release_nvml()
        return contextlib.nullcontext()

    @staticmethod
    def _report(order_id: str, *, ok: bool, detail: str, confirmed_by: str = "") -> GpuResetReport:
        # The detail goes into a node condition's message: bounded, whatever the driver or a command wrote.
        detail = truncate(detail, MAX_DETAIL)
        return GpuResetReport(id=order_id, ok=ok, detail=detail, confirmed_by=confirmed_by, at=datetime.now(UTC))

    async def _answer(self, report: GpuResetReport) -> None:
        """Write the report into the `GpuReset` condition, retrying while the API asks to come back later."""
        self._remember(report.id)  # answered, even if the answer cannot be written: never reset twice
        now = _timestamp(report.at)
        condition = {
            "type": GPU_RESET_CONDITION,
            "status": "True" if report.ok else "False",
            "reason": REASON_CONFIRMED if report.ok else REASON_FAILED,
            "message": report.model_dump_json(),
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        delay = 0.5
        while True:
            try:
                await self._nodes.set_condition(condition)
                return
            except ApiException as error:
                if error.status not in _RETRYABLE and (error.status or 0) < 500:
                    log.error(
                        "cannot report GPU reset %s on %s: HTTP %s %s", report.id, self.node, error.status, error.reason
                    )
                    return
                problem = f"HTTP {error.status} {error.reason}"
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                problem = repr(error)
            log.warning("reporting GPU reset %s on %s failed (%s); again in %gs", report.id, self.node, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff.total_seconds())

    def _remember(self, order_id: str) -> None:
        self._answered[order_id] = None
        while len(self._answered) > _REMEMBERED:
            self._answered.popitem(last=False)

    # --- the two tasks ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            node = self._latest
            if node is None:
                continue
            try:
                await self.handle(node)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling the GPU reset order on %s failed", self.node)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.5
        polling_since = 0.0
        while True:
            began = loop.time()
            try:
                if self.polling and began - polling_since >= _WATCH_RETRY_S:
                    self.polling = False
                if self.polling:
                    await self._poll_once()
                    await asyncio.sleep(self.settings.poll_interval.total_seconds())
                    continue
                node, version = await self._nodes.list()
                if node is not None:
                    self.offer(node)
                async for node in self._nodes.watch(version, int(self.settings.watch_timeout.total_seconds())):
                    self.offer(node)
            except asyncio.CancelledError:
                raise
            except ApiException as error:
                if error.status == 403 and not self.polling:
                    log.warning(
                        "the agent may not list/watch nodes (HTTP 403): reading %s with GET every %gs instead; "
                        "grant list and watch on nodes to the agent's ClusterRole",
                        self.node,
                        self.settings.poll_interval.total_seconds(),
                    )
                    self.polling = True
                    polling_since = began
                    continue
                log.warning("reading node %s failed: HTTP %s %s", self.node, error.status, error.reason)
            except Exception as error:
                log.warning("reading node %s failed: %r", self.node, error)
            else:
                if loop.time() - began >= 1.0:  # a watch that lasted: a fresh start, no pause
                    delay = 0.5
                    continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff.total_seconds())

    async def _poll_once(self) -> None:
        node = await self._nodes.get()
        if node is not None:
            self.offer(node)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the GPU reset watcher's %s stopped; reset orders go unanswered", task.get_name(), exc_info=task.exception()
        )


def _annotations(node: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = (node.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def _boot_id(node: Mapping[str, Any]) -> str:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return str(info.get("bootID") or "")


def _report_id(node: Mapping[str, Any]) -> str | None:
    """The order id the node's `GpuReset` condition reports on, if it holds a report."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == GPU_RESET_CONDITION:
            try:
                return GpuResetReport.model_validate_json(str(condition.get("message") or "")).id
            except ValidationError:
                return None
    return None


def _parse_order(raw: str) -> tuple[GpuResetOrder | None, str | None, str]:
    """The order, its id (also from an order that is otherwise malformed) and what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        return None, None, f"not JSON ({error})"
    found = data.get("id") if isinstance(data, dict) else None
    order_id = found if isinstance(found, str) and found else None
    try:
        return GpuResetOrder.model_validate(data), order_id, ""
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "order"
        return None, order_id, f"{where}: {first['msg']} ({error.error_count()} problem(s))"


def _select(names: Sequence[str], inventory: Sequence[GpuInfo]) -> tuple[list[GpuInfo], list[str]]:
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


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
