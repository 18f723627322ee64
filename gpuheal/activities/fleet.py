"""The fleet governor's activities: asking it for a permit and giving it back, counting GPU nodes,
finding vanished holders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kubernetes.aio import client
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.activities.contract import implements, node_gone
from gpuheal.activities.grant_collector import GrantCollector
from gpuheal.activities.kube import read_node
from gpuheal.activities.recent_nodes import RecentNodes
from gpuheal.control import governor
from gpuheal.control.connection import is_namespace_not_found
from gpuheal.domain import contracts, marks
from gpuheal.domain.fleet import (
    COLLECT_WITHIN,
    GOVERNOR_ID,
    PERMIT_SIGNAL,
    RELEASE_SIGNAL,
    EndedHolders,
    FleetPolicy,
    HeldPermit,
    HolderCheck,
    NodeCount,
    NodeCountRequest,
    PermitAsked,
    PermitDelivery,
    PermitGiveBack,
    PermitGivenBack,
    PermitRequest,
    governor_task_queue,
)
from gpuheal.policyfile import WorkerPolicy

# Nodes listed per page while counting: a 10,000-node fleet is counted in 20 requests.
_PAGE = 500
# How an ask reaches the governor: to be signalled the grant, or to collect it.
Ask = Callable[[Client, PermitRequest, FleetPolicy, str, str], Awaitable[None]]
# Requests to Temporal in flight at once while a storm's grants are delivered or its holders checked.
_REQUESTS_AT_ONCE = 50
# Answers to a signal that no retry changes: not allowed, malformed, refused by the server as it stands,
# not served (a namespace that is gone or misnamed answers NOT_FOUND, told apart by its detail).
_REFUSED_FOR_GOOD = frozenset(
    {
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.UNIMPLEMENTED,
    }
)


class FleetActivities:
    """Activities of the fleet governor and of the remediations that ask it, for one worker's limits."""

    def __init__(
        self,
        api: client.ApiClient,
        policy: WorkerPolicy,
        governor_id: str = GOVERNOR_ID,
        recent: RecentNodes | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        # Read at each ask: the policy file may have changed the fleet's limits since the worker began.
        self._policy = policy
        self._governor_id = governor_id
        self._collector = GrantCollector(governor_id)
        self._recent = recent or RecentNodes()

    @implements(contracts.ASK_PERMIT)
    async def ask_for_permit(self, request: PermitRequest) -> PermitAsked:
        """Ask the governor (started with this worker's limits if it is not running) for a permit,
        with the node's label that names its group; the governor signals the grant."""
        return await self._ask(request, governor.ask)

    @implements(contracts.COLLECT_PERMIT)
    async def collect_permit(self, request: PermitRequest) -> PermitAsked:
        """Ask as `ask_for_permit` does, and wait a moment (COLLECT_WITHIN) for the grant; one that
        comes is brought back, and the governor does not signal it."""
        asked = await self._ask(request, self._collector.ask)
        if not asked.governed:
            return asked
        grant = await self._collector.wait(activity.client(), request.permit_id, COLLECT_WITHIN)
        return asked.model_copy(update={"grant": grant})

    @implements(contracts.COLLECT_UNLESS_HELD)
    async def collect_permit_unless_held(self, request: PermitRequest) -> PermitAsked:
        """Read the node now and, unless it is on hold (then nothing is asked: `held`), ask and wait
        as `collect_permit` does; a node that is gone fails the step for good.

        One step where a remediation took two (read the node for its hold, then ask): in a storm
        every step before quarantine waits its turn in a busy worker.
        """
        seen = self._recent.remember(request.node, await read_node(self._core, request.node))
        if seen is None:
            raise node_gone(request.node)
        if marks.on_hold(seen.labels):
            return PermitAsked(governed=self._policy.fleet.governed, held=True)
        return await self.collect_permit(request)

    async def _ask(self, request: PermitRequest, send: Ask) -> PermitAsked:
        fleet = self._policy.fleet
        if not fleet.governed:
            return PermitAsked(governed=False)
        # The remediation read its node a moment ago (is it on hold?): that read serves, else one now.
        seen = self._recent.recall(request.node)
        if seen is None:
            seen = self._recent.remember(request.node, await read_node(self._core, request.node))
        if seen is None:
            raise node_gone(request.node)
        await send(
            activity.client(),
            request.model_copy(update={"labels": fleet.budget.naming_group(seen.labels)}),
            fleet,
            self._governor_id,
            governor_task_queue(self._governor_id),
        )
        return PermitAsked(governed=True, governor_id=self._governor_id, boot_id=seen.boot_id)

    @implements(contracts.COUNT_GPU_NODES)
    async def count_gpu_nodes(self, request: NodeCountRequest) -> NodeCount:
        """How many nodes the selector selects, page by page."""
        count = 0
        token: str | None = None
        while True:
            page = await self._core.list_node(label_selector=request.selector, limit=_PAGE, _continue=token)
            count += len(page.items)
            token = page.metadata._continue if page.metadata else None
            if not token:
                return NodeCount(count=count)


@implements(contracts.DELIVER_PERMITS)
async def deliver_permits(delivery: PermitDelivery) -> EndedHolders:
    """Signal each remediation its permit, several at once; a run that has ended is named in the
    answer (the governor takes its permit back). A retried delivery signals again, which a
    remediation that already holds its permit ignores."""
    temporal = activity.client()
    gate = asyncio.Semaphore(_REQUESTS_AT_ONCE)

    async def deliver(permit: HeldPermit) -> str | None:
        handle = temporal.get_workflow_handle(permit.workflow_id, run_id=permit.run_id)
        async with gate:
            try:
                await handle.signal(PERMIT_SIGNAL.name, delivery.grant_of(permit))
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND and not is_namespace_not_found(error):
                    return permit.permit_id  # the run has ended
                raise
        return None

    async with asyncio.TaskGroup() as signals:
        sent = [signals.create_task(deliver(permit)) for permit in delivery.permits]
    return EndedHolders(permit_ids=tuple(ended for task in sent if (ended := task.result()) is not None))


@implements(contracts.RETURN_PERMIT)
async def return_permit(give_back: PermitGiveBack) -> PermitGivenBack:
    """Signal the governor that a remediation gives its permit back (or withdraws its request). A
    governor that is gone (never started, or ended) has nothing to take back: no error (the run logs
    it), as a signal from the workflow itself that found no governor was none. A refusal no retry
    changes (not allowed, malformed, no such namespace) fails the step for good; anything else is
    retried, a few times (contracts.RETURN_PERMIT)."""
    governor = activity.client().get_workflow_handle(give_back.governor_id)
    try:
        await governor.signal(RELEASE_SIGNAL.name, give_back.returned)
    except RPCError as error:
        if is_namespace_not_found(error) or error.status in _REFUSED_FOR_GOOD:
            raise ApplicationError(
                f"{give_back.governor_id} refused the signal ({error.status.name}): {error.message}", non_retryable=True
            ) from error
        if error.status is RPCStatusCode.NOT_FOUND:
            return PermitGivenBack(governor_found=False)
        raise
    return PermitGivenBack(governor_found=True)


@implements(contracts.FIND_ENDED)
async def find_ended_holders(request: HolderCheck) -> EndedHolders:
    """The permits whose remediation run is no longer running (terminated, timed out, or gone),
    asked about several at once: a governor's first pass in a storm checks hundreds, and its
    grants wait for the answer."""
    temporal = activity.client()
    gate = asyncio.Semaphore(_REQUESTS_AT_ONCE)

    async def ended(permit: HeldPermit) -> bool:
        handle = temporal.get_workflow_handle(permit.workflow_id, run_id=permit.run_id)
        async with gate:
            try:
                described = await handle.describe()
            except RPCError as error:
                if error.status is not RPCStatusCode.NOT_FOUND:
                    raise
                return True
        return described.status is not WorkflowExecutionStatus.RUNNING

    async with asyncio.TaskGroup() as checks:
        asked = [(permit, checks.create_task(ended(permit))) for permit in request.permits]
    return EndedHolders(permit_ids=tuple(permit.permit_id for permit, task in asked if task.result()))
