"""A worker's collecting asks: sent to the fleet governor together, their grants looked for with one query."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError

from gpuheal.control import governor
from gpuheal.domain.fleet import FleetPolicy, Grants, PermitGrant, PermitRequest, PermitRequests

log = logging.getLogger(__name__)

# How often the waiting asks' grants are looked for: in a storm a grant comes within a second or two.
POLL_EVERY = timedelta(milliseconds=100)
# Asks sent in one signal at most: each carries its node's labels, and Temporal bounds a payload.
SENT_TOGETHER = 50


class GrantCollector:
    """The asks of a worker's collecting remediations, sent together, and the grants they wait for,
    looked for together.

    An ask goes out at once where no send is under way; those that come while one is go together in
    the next (up to SENT_TOGETHER a signal): in a storm the governor takes a worker's asks with a few
    signals, not hundreds, each of which would wait its turn to be written to its history.

    Every ask waiting in this worker is answered by one `grants` query of the governor every
    `every`, whatever the number waiting: a storm's hundreds of asks cost the governor a few queries
    a second, not hundreds. A query that fails (the governor is being restarted, no worker answers) is
    tried again at the next poll; an ask the governor left waiting, or that its grant did not reach
    within its moment, returns without it, and its remediation asks to be signalled instead.
    """

    def __init__(self, governor_id: str, every: timedelta = POLL_EVERY) -> None:
        self._governor_id = governor_id
        self._every = every.total_seconds()
        self._waiting: dict[str, asyncio.Future[PermitGrant | None]] = {}
        self._polling: asyncio.Task[None] | None = None
        # Asks not sent yet: each with the fleet's limits it was made under, and its answer.
        self._unsent: list[tuple[PermitRequest, FleetPolicy, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def ask(
        self, client: Client, request: PermitRequest, policy: FleetPolicy, governor_id: str, task_queue: str
    ) -> None:
        """Ask the governor (started with `policy` on `task_queue` if it is not running) for a permit
        to collect, together with the asks that come meanwhile; raises what their signal raised."""
        sent = asyncio.get_running_loop().create_future()
        self._unsent.append((request, policy, sent))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send(client, governor_id, task_queue))
        await sent

    async def _send(self, client: Client, governor_id: str, task_queue: str) -> None:
        while self._unsent:
            # An ask whose step was cancelled before it went out is not sent at all.
            pending = [entry for entry in self._unsent if not entry[2].done()]
            batch, self._unsent = pending[:SENT_TOGETHER], pending[SENT_TOGETHER:]
            if not batch:
                continue
            asks = PermitRequests(requests=tuple(request for request, _, _ in batch))
            newest_limits = batch[-1][1]  # a governor this starts begins with them
            error: BaseException | None = None
            try:
                await governor.ask_all_to_collect(client, asks, newest_limits, governor_id, task_queue)
            except Exception as failed:  # each ask of the batch raises it (its step is retried)
                error = failed
            for _, _, sent in batch:
                if sent.done():  # an ask whose step was cancelled meanwhile waits for nothing
                    continue
                if error is None:
                    sent.set_result(None)
                else:
                    sent.set_exception(error)

    async def wait(self, client: Client, permit_id: str, within: timedelta) -> PermitGrant | None:
        """The grant of `permit_id` once the governor holds it; None once the governor says it waits
        (the budget, the breaker or a pause holds it), or after `within`."""
        future = self._waiting.get(permit_id)
        if future is None:
            future = self._waiting[permit_id] = asyncio.get_running_loop().create_future()
        if self._polling is None or self._polling.done():
            self._polling = asyncio.create_task(self._poll(client))
        try:
            return await asyncio.wait_for(asyncio.shield(future), within.total_seconds())
        except TimeoutError:
            return None
        finally:
            if self._waiting.get(permit_id) is future:
                del self._waiting[permit_id]

    async def _poll(self, client: Client) -> None:
        while self._waiting:
            asked = tuple(self._waiting)
            try:
                found = await governor.grants(client, asked, self._governor_id)
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as error:
                log.debug("grants of %d ask(s) not read from %s: %s", len(asked), self._governor_id, error)
                found = Grants()
            for grant in found.grants:
                self._answer(grant.permit_id, grant)
            for permit_id in found.waiting:
                self._answer(permit_id, None)
            await asyncio.sleep(self._every)

    def _answer(self, permit_id: str, grant: PermitGrant | None) -> None:
        future = self._waiting.pop(permit_id, None)
        if future is not None and not future.done():
            future.set_result(grant)
