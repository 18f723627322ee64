"""`gpuheal.io/hold=true` on a node: its remediation waits in OnHold, the node untouched and no permit
asked for, until the label goes."""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from gpuheal.domain.phases import Phase
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import start, wait_for_phase


async def test_a_held_node_waits_untouched_until_the_label_goes(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.held = True
    handle = await start(time_skipping_env, queue, node)

    await wait_for_phase(handle, Phase.ON_HOLD)
    await asyncio.sleep(0.5)  # a while on hold: still nothing done

    assert node.writes == [], "not cordoned, drained or rebooted"
    assert (await handle.query(RemediationWorkflow.status)).permit is None
    node.held = False
    status = await handle.result()

    assert status.phase is Phase.RESOLVED
    assert [e.phase for e in status.history][:3] == [Phase.DETECTED, Phase.ON_HOLD, Phase.QUARANTINED]
    assert node.reboots == 1


async def test_a_node_deleted_while_held_ends_the_run(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.held = True
    handle = await start(time_skipping_env, queue, node)
    await wait_for_phase(handle, Phase.ON_HOLD)

    node.exists = False
    status = await handle.result()

    assert status.phase is Phase.FAILED
    assert node.writes == []


async def test_an_unheld_node_is_only_read_once_more(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    status = await (await start(time_skipping_env, queue, node)).result()

    assert Phase.ON_HOLD not in [e.phase for e in status.history]
    assert status.phase is Phase.RESOLVED
    # The read that finds no hold is the ask's (in an ungoverned fleet it asks nothing).
    assert node.steps[:2] == ["collect_permit_unless_held", "quarantine_node"]
    assert node.permit_requests == []
