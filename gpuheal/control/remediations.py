"""What operators and detectors do with remediations: report a fault, approve, reject, act on an
escalated one (resume, retry, release), inspect.

Reporting lives in `gpuheal.control.report`, which goes by name and loads no workflow code (the node
agent uses it); it is re-exported here so that this one module offers every operation.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.control import updates
from gpuheal.control.connection import is_namespace_not_found
from gpuheal.control.report import report_fault as report_fault
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.operator import OperatorAction, RecordedAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease, RecordedDecision, RemediationStatus
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow


class RemediationNotFound(LookupError):
    """No remediation exists for the node."""


class InvalidQuery(ValueError):
    """Temporal refused a visibility query (INVALID_ARGUMENT); the message is its reason."""


async def send_decision(
    client: Client, node: str, decision: ApprovalSignal, *, approve: bool, wait: timedelta = updates.ACTION_WAIT
) -> RecordedDecision:
    """Approve or reject the repair of the node's running remediation with its `approve` or `reject`
    Update, and return the decision as recorded. Raises ActionRefused with the workflow's reason."""
    update = RemediationWorkflow.approve_now if approve else RemediationWorkflow.reject_now
    async with _running(client, node) as handle:
        return await updates.send(handle, update, decision, target=_target(node), wait=wait)


async def act_on_escalation(
    client: Client, node: str, what: PersonAction, action: OperatorAction, *, wait: timedelta = updates.ACTION_WAIT
) -> RecordedAction:
    """Resume, retry or release the node's escalated remediation (release takes a NodeRelease), and
    return the action as recorded. Raises ActionRefused with the workflow's reason."""
    async with _running(client, node) as handle:
        match what:
            case PersonAction.RESUME:
                return await updates.send(handle, RemediationWorkflow.resume, action, target=_target(node), wait=wait)
            case PersonAction.RETRY:
                return await updates.send(handle, RemediationWorkflow.retry, action, target=_target(node), wait=wait)
            case PersonAction.RELEASE:
                release = action if isinstance(action, NodeRelease) else NodeRelease(**action.model_dump())
                return await updates.send(handle, RemediationWorkflow.release, release, target=_target(node), wait=wait)


def _target(node: str) -> str:
    return f"the remediation of {node}"


@asynccontextmanager
async def _running(client: Client, node: str) -> AsyncIterator[WorkflowHandle[RemediationWorkflow, RemediationStatus]]:
    """The handle of the node's remediation; a node without one raises RemediationNotFound."""
    try:
        yield client.get_workflow_handle_for(RemediationWorkflow.run, workflow_id_for(node))
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
            raise RemediationNotFound(f"no running remediation for node {node}") from error
        raise


class StatusUnanswered(RuntimeError):
    """No worker answers the `status` query (a query, even of an ended run, is answered by a worker)."""


# How long a person's `status` query waits for a worker to answer: one that runs answers in milliseconds.
STATUS_WAIT = timedelta(seconds=10)

# What the server answers when no worker takes the query: none polled the run's queue lately (at
# once), or none answered within the wait.
_UNANSWERED = {RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}


async def status(client: Client, node: str, *, wait: timedelta | None = None) -> RemediationStatus:
    """The latest remediation of the node (running or finished), from its `status` query, waiting `wait`
    at most for a worker to answer (None: the server's own limit). Raises StatusUnanswered."""
    handle = client.get_workflow_handle_for(RemediationWorkflow.run, workflow_id_for(node))
    try:
        return await handle.query(RemediationWorkflow.status, rpc_timeout=wait)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
            raise RemediationNotFound(f"no remediation found for node {node}") from error
        if error.status in _UNANSWERED:
            raise StatusUnanswered(
                f"no gpuheal worker answered for the remediation of {node} ({error.message}); "
                f"`gpuheal list --query 'GpuhealNode = \"{node}\"'` shows what Temporal's visibility knows"
            ) from error
        raise


@dataclass(frozen=True, slots=True)
class RemediationSummary:
    """One remediation as visibility knows it (its search attributes), read without a query."""

    node: str
    phase: str
    action: str
    xid: int | None
    running: bool
    started: datetime
    # The version of the policy it decides by ("": begun before policies had versions).
    policy: str = ""
    # When it entered its phase (None: begun before runs recorded it).
    since: datetime | None = None
    gpus: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        """The summary as one JSON object with the same keys whatever is known (times in ISO 8601)."""
        return {
            "node": self.node,
            "phase": self.phase,
            "since": None if self.since is None else self.since.isoformat(),
            "action": self.action,
            "xid": self.xid,
            "gpus": list(self.gpus),
            "running": self.running,
            "started": self.started.isoformat(),
            "policy": self.policy,
        }


_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def check_query(query: str) -> None:
    """Refuse (InvalidQuery) an operator's visibility filter that could not stay one clause ANDed with
    gpuheal's own: a parenthesis outside quotes that closes one it did not open, or leaves one open,
    would let an `OR` escape the `(…)` around it; an unclosed quote swallows what follows; and ORDER BY
    belongs at the end of the whole query, which gpuheal orders itself (newest first).

    Quotes are Temporal's: '…' and "…" strings, where a backslash escapes the next character, and
    `…` names."""
    outside: list[str] = []
    depth = 0
    quote = ""
    escaped = False
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = ""
            outside.append(" ")
            continue
        if char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidQuery(f"{query!r} closes a parenthesis it did not open")
        outside.append(char)
    if quote:
        raise InvalidQuery(f"{query!r} leaves a {quote} quote open")
    if depth > 0:
        raise InvalidQuery(f"{query!r} opens a parenthesis it does not close")
    if _ORDER_BY.search("".join(outside)):
        raise InvalidQuery(f"{query!r} has ORDER BY: gpuheal lists remediations newest first, in no other order")


def remediation_query(
    query: str = "", *, phase: Phase | None = None, running: bool = False, in_phase_before: datetime | None = None
) -> str:
    """The visibility query for remediations matching all that is given: an operator's own `query`, a
    phase, running ones only, and running ones that entered their phase before `in_phase_before` (runs
    begun before gpuheal recorded when they entered their phase never match that).

    Raises InvalidQuery when `query` could not stay one clause (see `check_query`)."""
    clauses = [f"WorkflowType = '{REMEDIATION.name}'"]
    if phase is not None:
        clauses.append(f"{attrs.PHASE.name} = '{phase.value}'")
    if running or in_phase_before is not None:
        clauses.append("ExecutionStatus = 'Running'")
    if in_phase_before is not None:
        clauses.append(f"{attrs.PHASE_SINCE.name} < '{in_phase_before.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}'")
    if query:
        check_query(query)
        clauses.append(f"({query})")
    return " AND ".join(clauses)


async def list_remediations(
    client: Client,
    query: str = "",
    *,
    phase: Phase | None = None,
    running: bool = False,
    stuck: timedelta | None = None,
    limit: int | None = None,
) -> list[RemediationSummary]:
    """Remediations matching a visibility query (e.g. `GpuhealPhase = "AwaitingApproval"`) and the other
    filters (`stuck`: running and in their phase for longer than that), newest first, `limit` at most.

    Raises `InvalidQuery` when gpuheal or Temporal refuses the query.
    """
    before = None if stuck is None else datetime.now(UTC) - stuck
    sent = remediation_query(query, phase=phase, running=running, in_phase_before=before)
    found: list[RemediationSummary] = []
    try:
        async for execution in client.list_workflows(sent, limit=limit):
            found.append(_summary(execution))
    except RPCError as error:
        if error.status is RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidQuery(f"Temporal refused the query {sent!r}: {error.message}") from error
        raise
    return found


def _summary(execution: WorkflowExecution) -> RemediationSummary:
    attributes = execution.typed_search_attributes
    return RemediationSummary(
        node=attributes.get(attrs.NODE) or execution.id,
        phase=attributes.get(attrs.PHASE) or "?",
        action=attributes.get(attrs.ACTION) or "?",
        xid=attributes.get(attrs.XID),
        running=execution.status is WorkflowExecutionStatus.RUNNING,
        started=execution.start_time,
        policy=attributes.get(attrs.POLICY_VERSION) or "",
        since=attributes.get(attrs.PHASE_SINCE),
        gpus=tuple(attributes.get(attrs.GPUS) or ()),
    )
