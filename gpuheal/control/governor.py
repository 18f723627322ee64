"""The fleet governor as workers, remediations and operators reach it.

`ask` and `configure` use signal-with-start, so the governor runs from the first time anyone needs
it and is started again if it ever ended. The operator's actions (`pause`, `resume`,
`reset_breaker`) are Updates: the governor's validator refuses one it cannot take, with the reason,
before anything is recorded.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.control import updates
from gpuheal.control.connection import DEFAULT_TASK_QUEUE, is_namespace_not_found
from gpuheal.domain.fleet import (
    COLLECT_ALL_SIGNAL,
    COLLECT_WITHIN,
    CONFIGURE_SIGNAL,
    GOVERNOR,
    GOVERNOR_ID,
    REQUEST_SIGNAL,
    FleetPolicy,
    GovernorInput,
    GovernorStatus,
    GrantQuery,
    Grants,
    PermitRequest,
    PermitRequests,
)
from gpuheal.domain.operator import OperatorAction
from gpuheal.workflows.governor import GovernorWorkflow


def governor_id_for(task_queue: str) -> str:
    """The governor of the workers on `task_queue`: `gpuheal-governor` on the default queue, one of its
    own on every other (clusters that share a namespace run their workers on queues of their own)."""
    return GOVERNOR_ID if task_queue == DEFAULT_TASK_QUEUE else f"{GOVERNOR_ID}-{task_queue}"


class GovernorNotFound(LookupError):
    """No governor runs (no worker has started one, and no remediation has asked for a permit)."""


class GovernorUnanswered(RuntimeError):
    """No worker answered a query of the governor."""


async def _signal_with_start(
    client: Client,
    signal: str,
    payload: object,
    policy: FleetPolicy,
    governor_id: str,
    task_queue: str,
    rpc_timeout: timedelta | None = None,
) -> None:
    await client.start_workflow(
        GOVERNOR.name,
        GovernorInput(policy=policy),
        id=governor_id,
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[payload],
        rpc_timeout=rpc_timeout,
    )


async def ask(
    client: Client,
    request: PermitRequest,
    policy: FleetPolicy,
    governor_id: str = GOVERNOR_ID,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> None:
    """Ask for a permit; the governor answers with the remediation's `permit` signal. Asking again
    (a retried activity) is harmless: the governor keeps requests by permit id."""
    await _signal_with_start(client, REQUEST_SIGNAL.name, request, policy, governor_id, task_queue)


async def ask_all_to_collect(
    client: Client, requests: PermitRequests, policy: FleetPolicy, governor_id: str, task_queue: str
) -> None:
    """Ask for several permits that their askers collect with `grants` (the governor does not signal
    them); an ask with `ask` afterwards has an uncollected grant signalled. A call that hangs gives up
    after COLLECT_WITHIN: the asks behind it in their worker must not wait longer."""
    await _signal_with_start(
        client, COLLECT_ALL_SIGNAL.name, requests, policy, governor_id, task_queue, rpc_timeout=COLLECT_WITHIN
    )


async def grants(client: Client, permit_ids: tuple[str, ...], governor_id: str) -> Grants:
    """The grants among these permits that the governor holds, and those it left waiting."""
    handle = client.get_workflow_handle_for(GovernorWorkflow.run, governor_id)
    return await handle.query(GovernorWorkflow.grants, GrantQuery(permit_ids=permit_ids), rpc_timeout=COLLECT_WITHIN)


async def configure(
    client: Client, policy: FleetPolicy, governor_id: str = GOVERNOR_ID, task_queue: str = DEFAULT_TASK_QUEUE
) -> None:
    """Start the governor with these limits, or hand them to the running one."""
    await _signal_with_start(client, CONFIGURE_SIGNAL.name, policy, policy, governor_id, task_queue)


async def status(client: Client, governor_id: str = GOVERNOR_ID) -> GovernorStatus:
    """The governor's limits, permits, waiting requests, breaker and pause."""
    handle = client.get_workflow_handle_for(GovernorWorkflow.run, governor_id)
    try:
        return await handle.query(GovernorWorkflow.status)
    except RPCError as error:
        raise _not_found(error, governor_id) from error


async def act(
    client: Client,
    what: str,
    action: OperatorAction,
    governor_id: str = GOVERNOR_ID,
    wait: timedelta = updates.ACTION_WAIT,
) -> GovernorStatus:
    """Carry out an operator's action ("pause", "resume", "reset_breaker") and return the governor's
    status after it. Raises ActionRefused with the governor's reason."""
    update = {
        "pause": GovernorWorkflow.pause,
        "resume": GovernorWorkflow.resume,
        "reset_breaker": GovernorWorkflow.reset_breaker,
    }[what]
    handle = client.get_workflow_handle_for(GovernorWorkflow.run, governor_id)
    try:
        return await updates.send(handle, update, action, target=governor_id, wait=wait)
    except RPCError as error:
        raise _not_found(error, governor_id) from error


def _not_found(error: RPCError, governor_id: str) -> Exception:
    if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
        return GovernorNotFound(f"no fleet governor {governor_id} runs (a gpuheal worker starts it)")
    if error.status is RPCStatusCode.DEADLINE_EXCEEDED:
        return GovernorUnanswered(f"no gpuheal worker answered for {governor_id}; is a worker running?")
    return error
