"""Waiting for the fleet governor's grants on behalf of a worker's asks, with one query for all."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError

from gpuheal.control import governor
from gpuheal.domain.fleet import Grants, PermitGrant

log = logging.getLogger(__name__)

# How often the waiting asks' grants are looked for: in a storm a grant comes within a second or two.
POLL_EVERY = timedelta(milliseconds=100)


class GrantCollector:
    """The grants a worker's collecting asks wait for, looked for together.

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
