"""Every step of a remediation says what it does in the Temporal UI: each activity scheduled, each
local activity recorded and each timer started carries a summary, walked over the histories of the
main scenarios (on the time-skipping server against the in-memory FakeNode)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import ApprovalSignal, NodeRelease
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_escalation import act, unhealthy_after_its_reboot
from tests.workflows.test_governor import fleets, limits, nodes_of, phases
from tests.workflows.test_remediation_logic import Handle, wait_for_phase
from tests.workflows.test_repair_logic import remediate
from tests.workflows.test_ui_details import start_asking_approval

# A local activity's result is a marker of this name; its summary is the marker event's (a patch's
# marker, "core_patch", is no step and has none).
LOCAL_ACTIVITY_MARKER = "core_local_activity"

Scenario = Callable[[WorkflowEnvironment, str, FakeNode], Awaitable[Phase]]


async def unsummarised(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The history's steps and timers without a summary, each named by its event id and what it is."""
    missing = []
    history = await handle.fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            what = f"activity {event.activity_task_scheduled_event_attributes.activity_type.name}"
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            what = f"timer of {event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()}"
        elif (
            event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
        ):
            what = "local activity"
        else:
            continue
        if not await summary(event):
            missing.append(f"event {event.event_id}: {what}")
    return missing


async def summary(event: HistoryEvent) -> str:
    if not event.user_metadata.HasField("summary"):
        return ""
    [text] = await pydantic_data_converter.decode([event.user_metadata.summary])
    assert isinstance(text, str)
    return text.strip()


async def happy_path(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Phase:
    return (await remediate(env, queue, node)).phase


async def approved(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Phase:
    handle = await start_asking_approval(env, queue, node)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.send_decision(env.client, node.name, ApprovalSignal(approver="alice", reason="ok"), approve=True)
    return (await handle.result()).phase


async def gpu_reset(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Phase:
    return (await remediate(env, queue, node, RecommendedAction.COMPONENT_RESET)).phase


async def failed_gpu_reset_then_forced_reboot(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Phase:
    node.reset_outcome = "fail"
    node.graceful_supported = True
    node.graceful_restarts = False
    repair = {"graceful_timeout": timedelta(minutes=5)}
    return (await remediate(env, queue, node, RecommendedAction.COMPONENT_RESET, **repair)).phase


async def escalated_then_released(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Phase:
    handle = await unhealthy_after_its_reboot(env, queue, node)
    await act(env, node, PersonAction.RELEASE, NodeRelease(by="dave", reason="vendor RMA ticket 4411"))
    return (await handle.result()).phase


@pytest.mark.parametrize(
    ("scenario", "ends"),
    [
        (happy_path, Phase.RESOLVED),
        (approved, Phase.RESOLVED),
        (gpu_reset, Phase.RESOLVED),
        (failed_gpu_reset_then_forced_reboot, Phase.RESOLVED),
        (escalated_then_released, Phase.RELEASED),
    ],
)
async def test_every_step_and_timer_of_a_remediation_has_a_summary(
    scenario: Scenario, ends: Phase, time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    assert await scenario(time_skipping_env, queue, node) is ends

    handle = time_skipping_env.client.get_workflow_handle(workflow_id_for(node.name))
    assert await unsummarised(handle) == []


async def test_every_step_and_timer_of_a_remediation_waiting_for_its_budget_has_a_summary(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    async with fleets(time_skipping_env.client) as governed:
        fleet = await governed(2, limits(max_concurrent=1, max_percent=100))
        for node in nodes_of(fleet):
            node.collect_within = timedelta(0)  # no ask waits for its grant: the second run waits for the budget
        handles: list[Handle] = [await fleet.fault(node) for node in nodes_of(fleet)]
        results = [await handle.result() for handle in handles]

    assert [status.phase for status in results] == [Phase.RESOLVED] * 2
    assert any(Phase.AWAITING_BUDGET in phases(status) for status in results)
    for handle in handles:
        assert await unsummarised(handle) == [], handle.id
