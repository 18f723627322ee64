"""Reading a remediation through the control API, against the real Temporal dev server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal_sim.demo.devserver import DevServer


async def test_a_status_no_worker_answers_ends_after_the_wait_naming_the_node(dev_server: DevServer) -> None:
    node = f"unpolled-{uuid.uuid4().hex[:8]}"
    fault = Fault(node=node, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    handle = await remediations.report_fault(dev_server.client, fault, task_queue=f"nobody-{node}")

    with pytest.raises(
        remediations.StatusUnanswered, match=f"no gpuheal worker answered for the remediation of {node}"
    ):
        await remediations.status(dev_server.client, node, wait=timedelta(seconds=1))
    await handle.terminate("test over")
