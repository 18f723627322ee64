"""Reading a remediation through the control API, against the real Temporal dev server."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    "query",
    [
        "GpuhealNode = 'a' OR (GpuhealPhase = 'Escalated' AND (GpuhealXid = 79))",
        "GpuhealNode = 'odd)(name'",
        """GpuhealNode = "it's (here" """,
        r"GpuhealNode = 'a\') OR (b'",
        "GpuhealReason = 'order by hand'",
        "GpuhealNode = 'border' AND GpuhealAction = 'by'",
        "`GpuhealNode` = 'a' OR `Gpuheal)Odd` = 'b'",
    ],
)
def test_a_query_whose_parentheses_and_order_are_in_quotes_or_balanced_is_taken(query: str) -> None:
    assert remediations.remediation_query(query).endswith(f" AND ({query})")


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("GpuhealNode = 'a') OR (WorkflowType = 'Nope'", "closes a parenthesis it did not open"),
        ("a = 1) OR (b = 2", "closes a parenthesis it did not open"),
        ("(a = 1", "opens a parenthesis it does not close"),
        # An escaped backslash escapes nothing more: the quote after it ends the string.
        (r"a = 'x\\') OR (b = 'y", "closes a parenthesis it did not open"),
        ('a = "x', 'leaves a " quote open'),
        # A quote in a `name` opens no string.
        ("`a'` = 1) OR (b = `'`", "closes a parenthesis it did not open"),
        ("a = 1 ORDER BY StartTime", "has ORDER BY"),
        ("a = 1 order\n  by StartTime desc", "has ORDER BY"),
    ],
)
def test_a_query_that_could_escape_its_parentheses_or_orders_is_refused(query: str, problem: str) -> None:
    with pytest.raises(remediations.InvalidQuery, match=re.escape(problem)):
        remediations.remediation_query(query)
