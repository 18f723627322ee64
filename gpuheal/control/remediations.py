"""What operators and detectors do with remediations: report a fault, approve, reject, inspect.

Reporting lives in `gpuheal.control.report`, which goes by name and loads no workflow code (the node
agent uses it); it is re-exported here so that this one module offers every operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.control.connection import is_namespace_not_found
from gpuheal.control.report import report_fault as report_fault
from gpuheal.domain.decisions import DecisionRefused
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.remediation import ApprovalSignal, RecordedDecision, RemediationStatus
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow


class RemediationNotFound(LookupError):
    """No remediation exists for the node."""


class DecisionUnanswered(RuntimeError):
    """No worker answered an approval or rejection in time (it may still be taken later)."""


# How long `gpuheal approve`/`reject` wait for the remediation's worker to answer.
DECISION_WAIT = timedelta(seconds=30)


class InvalidQuery(ValueError):
    """Temporal refused a visibility query (INVALID_ARGUMENT); the message is its reason."""


async def send_decision(
    client: Client, node: str, decision: ApprovalSignal, *, approve: bool, wait: timedelta = DECISION_WAIT
) -> RecordedDecision:
    """Approve or reject the repair of the node's running remediation with its `approve` or `reject`
    Update, and return the decision as recorded. Raises DecisionRefused with the workflow's reason."""
    handle = client.get_workflow_handle_for(RemediationWorkflow.run, workflow_id_for(node))
    update = RemediationWorkflow.approve_now if approve else RemediationWorkflow.reject_now
    try:
        return await handle.execute_update(update, decision, rpc_timeout=wait)
    except WorkflowUpdateFailedError as error:
        raise DecisionRefused(f"the remediation of {node} refused it: {_cause(error)}") from error
    except WorkflowUpdateRPCTimeoutOrCancelledError as error:
        # The workflow runs only on a worker: without one the decision waits, unanswered.
        raise DecisionUnanswered(
            f"no gpuheal worker took the decision on {node} within {wait.total_seconds():g}s; "
            "is a worker running? (it may still take the decision once one runs)"
        ) from error
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
            raise RemediationNotFound(f"no running remediation for node {node}") from error
        raise


def _cause(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    text = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


async def status(client: Client, node: str) -> RemediationStatus:
    """The latest remediation of the node (running or finished), from its `status` query."""
    handle = client.get_workflow_handle_for(RemediationWorkflow.run, workflow_id_for(node))
    try:
        return await handle.query(RemediationWorkflow.status)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
            raise RemediationNotFound(f"no remediation found for node {node}") from error
        raise


@dataclass(frozen=True, slots=True)
class RemediationSummary:
    """One line of `gpuheal list`, read from visibility (search attributes) without a query."""

    node: str
    phase: str
    action: str
    xid: int | None
    running: bool
    started: datetime


async def list_remediations(client: Client, query: str = "") -> list[RemediationSummary]:
    """Remediations matching a visibility query (e.g. `GpuhealPhase = "AwaitingApproval"`), newest first.

    Raises `InvalidQuery` when Temporal refuses the query.
    """
    base = f"WorkflowType = '{REMEDIATION.name}'"
    sent = f"{base} AND ({query})" if query else base
    found: list[RemediationSummary] = []
    try:
        async for execution in client.list_workflows(sent):
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
    )
