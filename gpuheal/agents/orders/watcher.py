"""`NodeOrderWatcher`: the agent's side of the orders written on its node (gpuheal.domain.node_orders).

It follows its own Node (list, then watch with `fieldSelector=metadata.name=<node>`; where the
agent's role may only `get` nodes, a GET every `poll_interval`) and has each order answered exactly
once by the handler of its kind (a GPU reset, a GPU check):

- an order whose id already has a report in the kind's condition is done, also for an agent that
  restarted since: the condition is the record;
- an order written on an earlier boot is ignored: the remediation has moved on to a reboot;
- otherwise the handler carries it out, and its report goes into the kind's condition through the
  status subresource (status "True" when it went well; the message is the report's JSON); then the
  handler hears that it was answered. A handler that raises answers its order with a failure naming
  the error, once, and the other kinds' orders are served as usual.

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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Protocol

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from pydantic import ValidationError

from gpuheal.agents.orders.node import JsonNode, NodeApi
from gpuheal.agents.orders.settings import FollowSettings
from gpuheal.domain.node_orders import NodeReport, OrderKind, OrderT, ReportT
from gpuheal.domain.truncate import truncate

log = logging.getLogger(__name__)

# The most bytes of a report's detail (a condition message may hold 32 KiB; the report's JSON wraps it).
MAX_DETAIL = 8192
# 408, 429 and 5xx ask to come back later; 401/403 usually mean credentials or RBAC not there yet.
_RETRYABLE = frozenset({401, 403, 408, 429})
# Order ids this process answered, per kind, kept so a node state older than its own report is not acted on.
_REMEMBERED = 64
# While polling, list/watch is tried again this often: the 403 may have been RBAC not there yet.
_WATCH_RETRY_S = 600.0

# Shown every state of the node, in order; must not block.
OnNode = Callable[[JsonNode], None]


class OrderHandler(Protocol, Generic[OrderT, ReportT]):
    """Carries out the orders of one kind."""

    @property
    def kind(self) -> OrderKind[OrderT, ReportT]: ...

    async def carry_out(self, order: OrderT) -> ReportT:
        """Do what the order asks and say how it went (with `report`); never raises for the order's failure."""
        ...

    async def answered(self, order: OrderT, report: ReportT) -> None:
        """The report is written (or could not be): what follows an answer (the agent reports GPU health anew)."""
        ...


def report(kind: OrderKind[Any, ReportT], order_id: str, *, ok: bool, detail: str, **extra: Any) -> ReportT:
    """A report of `kind` made now, its detail bounded: it goes into a node condition's message,
    whatever a driver or a command wrote."""
    return kind.report(id=order_id, ok=ok, detail=truncate(detail, MAX_DETAIL), at=datetime.now(UTC), **extra)


class NodeOrderWatcher:
    """Has the orders written on one node carried out by `handlers`, one per kind; see the module docstring."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        handlers: Sequence[OrderHandler[Any, Any]],
        *,
        settings: FollowSettings | None = None,
        on_node: OnNode | None = None,
    ) -> None:
        self.node = node
        self.settings = settings or FollowSettings()
        self._nodes = NodeApi(api, node, request_timeout=self.settings.request_timeout)
        self._handlers = list(handlers)
        self._on_node = on_node
        self._latest: JsonNode | None = None
        self._wake = asyncio.Event()
        self._answered: dict[str, OrderedDict[str, None]] = {h.kind.condition: OrderedDict() for h in handlers}
        self._ignored: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Set once the API refused list/watch: the node is then read with GET on a timer.
        self.polling = False

    async def start(self) -> None:
        """Start following the node and answering orders; returns at once."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._follow(), name="gpuheal-orders-follow"),
            asyncio.create_task(self._serve(), name="gpuheal-orders"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_end)
        log.info("order watcher for %s: %s", self.node, ", ".join(h.kind.name for h in self._handlers))

    async def stop(self) -> None:
        """Stop both tasks; an order in progress is abandoned (its command killed), unanswered."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> NodeOrderWatcher:
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
            except Exception:  # an observer's bug must not cost the node its orders
                log.exception("a node observer failed on %s", self.node)

    async def handle(self, node: Mapping[str, Any]) -> list[NodeReport]:
        """Answer the orders on this state of the node that are not answered yet; the reports."""
        reports = []
        for handler in self._handlers:
            answer = await self._handle(handler, node)
            if answer is not None:
                reports.append(answer)
        return reports

    async def _handle(self, handler: OrderHandler[Any, Any], node: Mapping[str, Any]) -> NodeReport | None:
        kind = handler.kind
        raw = _annotations(node).get(kind.annotation)
        if not raw:
            return None
        order, order_id, problem = _parse_order(kind, str(raw))
        if order_id is None:
            if raw != self._ignored.get(kind.condition):  # once per annotation value, not at every heartbeat
                self._ignored[kind.condition] = str(raw)
                log.warning("ignoring the %s order on %s: %s", kind.name, self.node, problem)
            return None
        if order_id in self._answered[kind.condition] or _report_id(kind, node) == order_id:
            return None
        if order is not None and order.boot_id and order.boot_id != _boot_id(node):
            # Written before the node last rebooted: the remediation has moved on to a reboot.
            return None
        answer: NodeReport
        if order is None:
            answer = report(kind, order_id, ok=False, detail=f"malformed {kind.name} order: {problem}")
        else:
            try:
                answer = await handler.carry_out(order)
            except Exception as error:  # a handler's bug answers its order, once; the others go on
                log.exception(
                    "carrying out %s order %s on %s failed",
                    kind.name,
                    order.id,
                    self.node,
                    # A reset order names its GPUs; the other orders are about the whole node.
                    extra={"node": self.node, "gpu": getattr(order, "gpus", None)},
                )
                answer = report(kind, order.id, ok=False, detail=f"the agent failed to carry the order out: {error!r}")
        await self._answer(kind, answer)
        if order is not None:
            try:
                await handler.answered(order, answer)
            except Exception:  # the answer stands; the worker goes by it and by the health reported
                log.exception("after answering %s order %s on %s", kind.name, order.id, self.node)
        return answer

    async def _answer(self, kind: OrderKind[Any, Any], answer: NodeReport) -> None:
        """Write the report into the kind's condition, retrying while the API asks to come back later."""
        self._remember(kind, answer.id)  # answered, even if the answer cannot be written: never act twice
        now = _timestamp(answer.at)
        condition = {
            "type": kind.condition,
            "status": "True" if answer.ok else "False",
            "reason": kind.reason_ok if answer.ok else kind.reason_failed,
            "message": answer.model_dump_json(),
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
                        "cannot report %s %s on %s: HTTP %s %s",
                        kind.name,
                        answer.id,
                        self.node,
                        error.status,
                        error.reason,
                    )
                    return
                problem = f"HTTP {error.status} {error.reason}"
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                problem = repr(error)
            log.warning(
                "reporting %s %s on %s failed (%s); again in %gs", kind.name, answer.id, self.node, problem, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff.total_seconds())

    def _remember(self, kind: OrderKind[Any, Any], order_id: str) -> None:
        answered = self._answered[kind.condition]
        answered[order_id] = None
        while len(answered) > _REMEMBERED:
            answered.popitem(last=False)

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
                log.exception("handling the orders on %s failed", self.node)

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
        log.error("the order watcher's %s stopped; orders go unanswered", task.get_name(), exc_info=task.exception())


def _annotations(node: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = (node.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def _boot_id(node: Mapping[str, Any]) -> str:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return str(info.get("bootID") or "")


def _report_id(kind: OrderKind[Any, Any], node: Mapping[str, Any]) -> str | None:
    """The order id the kind's condition reports on, if it holds a report."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == kind.condition:
            try:
                return str(kind.report.model_validate_json(str(condition.get("message") or "")).id)
            except ValidationError:
                return None
    return None


def _parse_order(kind: OrderKind[OrderT, Any], raw: str) -> tuple[OrderT | None, str | None, str]:
    """The order, its id (also from an order that is otherwise malformed) and what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        return None, None, f"not JSON ({error})"
    found = data.get("id") if isinstance(data, dict) else None
    order_id = found if isinstance(found, str) and found else None
    try:
        return kind.order.model_validate(data), order_id, ""
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "order"
        return None, order_id, f"{where}: {first['msg']} ({error.error_count()} problem(s))"


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
