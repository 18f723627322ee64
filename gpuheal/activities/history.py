"""Reading the remediations before this one from Temporal's visibility (gpuheal.domain.history)."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import WorkflowExecution
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.activities.contract import implements
from gpuheal.domain import contracts
from gpuheal.domain.history import MOST, EarlierRemediation, HistoryRequest, RemediationHistory, history_query
from gpuheal.domain.remediation_contract import REMEDIATION
from gpuheal.workflows import search_attributes as attrs


@implements(contracts.FIND_HISTORY)
async def find_earlier_remediations(request: HistoryRequest) -> RemediationHistory:
    """The newest remediations of the node or its GPUs since `request.since`, the asking run left out.

    A query Temporal refuses (its search attributes are not registered in the namespace) is not
    retried: the remediation goes on without its history, saying why.
    """
    query = history_query(request, REMEDIATION.name)
    found: list[EarlierRemediation] = []
    if query is None:
        return RemediationHistory()
    try:
        async for execution in activity.client().list_workflows(query, limit=MOST + 1):
            if execution.run_id != request.run_id:
                found.append(_earlier(execution))
    except RPCError as error:
        if error.status is RPCStatusCode.INVALID_ARGUMENT:
            raise ApplicationError(f"Temporal refused {query!r}: {error.message}", non_retryable=True) from error
        raise
    return RemediationHistory(remediations=tuple(found[:MOST]))


def _earlier(execution: WorkflowExecution) -> EarlierRemediation:
    attributes = execution.typed_search_attributes
    return EarlierRemediation(
        workflow_id=execution.id,
        run_id=execution.run_id,
        node=attributes.get(attrs.NODE) or "",
        phase=attributes.get(attrs.PHASE) or "",
        gpus=tuple(attributes.get(attrs.GPUS) or ()),
        serials=tuple(attributes.get(attrs.SERIALS) or ()),
        repairs=attributes.get(attrs.REPAIRS) or 0,
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )
