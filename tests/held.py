"""Ending remediations a test left escalated: held for a person, they would otherwise outlive it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from temporalio.client import Client
from temporalio.service import RPCError

from gpuheal.domain.marks import workflow_id_for


async def end_held_remediations(client: Client, nodes: Iterable[str]) -> None:
    """Terminate the nodes' remediations still running. An escalated one keeps its workflow id, so a
    later test's fault on a node of the same name would join it, on a task queue no worker serves
    any more; on the time-skipping server its rechecks would also stop the clock."""
    for node in nodes:
        with contextlib.suppress(RPCError):  # none, or already ended
            await client.get_workflow_handle(workflow_id_for(node)).terminate("the test is over")
