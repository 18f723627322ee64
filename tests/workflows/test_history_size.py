"""What one remediation writes into Temporal's history: few events and workflow tasks, one patch
marker, one upsert of what changed per workflow task (counts, not timings).

A run begun under this release has every earlier patch through the release's one (a patch marker and
sdk-core's TemporalChangeVersion upsert each, where there were nine), publishes its search attributes
once per workflow task, only those whose values changed (0.2.0 did it once per activation, and a local
activity's result starts another activation within the task), and gives its permit back by a local
step in the task that ends it (0.2.0 signalled the governor from the workflow, and waited for the
server's answer in a task of its own). Runs begun under earlier releases keep their old path to their
end: test_replay.py replays their histories.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.domain.steps import Step
from gpuheal.workflows import patches
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows import record_history
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import Handle, fault, start, wait_for_phase
from tests.workflows.test_replay import load, patch_markers, steps

# The limit for one remediation, happy path or a long reboot wait (the wait is one activity).
MOST_EVENTS = 60
# The happy path of 0.3.0: 0.2.0's 48 events without the second upsert of two tasks, nor the
# governor's signal (its two events and the three of the task that took its answer in), with the
# marker of the step that gives the permit back.
HAPPY_PATH_EVENTS = 48 - 2 - 2 - 3 + 1
PREVIOUS_HAPPY_PATH = record_history.HISTORIES / "0.2.0" / "happy_path.json"


def gpuheal_upserts(history: WorkflowHistory) -> list[tuple[int, dict[str, bytes]]]:
    """Each upsert of gpuheal's own attributes (not sdk-core's TemporalChangeVersion): its event's
    index and the encoded values it carries, by name."""
    upserts = []
    for index, event in enumerate(history.events):
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if any(name.startswith("Gpuheal") for name in fields):
                upserts.append((index, {name: payload.data for name, payload in fields.items()}))
    return upserts


def workflow_tasks(history: WorkflowHistory) -> int:
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events)


def upserted_more_than_once_by_a_task(history: WorkflowHistory) -> dict[int, int]:
    """The workflow tasks (by the event that completed them) whose commands upsert gpuheal's
    attributes more than once, and how often."""
    by_task = Counter(
        history.events[index].upsert_workflow_search_attributes_event_attributes.workflow_task_completed_event_id
        for index, _ in gpuheal_upserts(history)
    )
    return {task: count for task, count in by_task.items() if count > 1}


@pytest.fixture(scope="module")
async def happy_path() -> WorkflowHistory:
    """The happy path on the dev server, with the real worker and the governor's permit (an XID 79,
    rebooted, back in service), as record_history records it."""
    [history] = (await record_history.happy_path()).values()
    return history


def test_a_new_remediation_writes_at_most_60_events_with_the_release_patch_its_only_marker(
    happy_path: WorkflowHistory,
) -> None:
    assert len(happy_path.events) <= MOST_EVENTS, f"{len(happy_path.events)} events"
    assert patch_markers(happy_path) == [patches.RELEASES[0]]
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in happy_path.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert set(markers) == {"core_patch", "core_local_activity"}, "local activities' besides the release's"

    upserts = gpuheal_upserts(happy_path)
    # What the start set counts as published: the run does not upsert it again unchanged.
    started = happy_path.events[0].workflow_execution_started_event_attributes.search_attributes.indexed_fields
    seen = {name: payload.data for name, payload in started.items()}
    assert attrs.NODE.name in seen, "the start sets the node"
    for index, carried in upserts:
        repeated = {name for name, value in carried.items() if seen.get(name) == value}
        assert not repeated, f"event {index + 1} upserts {repeated} again, unchanged"
        seen.update(carried)
    assert seen[attrs.PHASE.name] == json.dumps(Phase.RESOLVED.value).encode()


def test_the_happy_path_takes_one_workflow_task_fewer_than_0_2_0s_and_no_signal_of_its_own(
    happy_path: WorkflowHistory,
) -> None:
    kinds = [e.event_type for e in happy_path.events]

    assert len(kinds) == HAPPY_PATH_EVENTS, f"{len(kinds)} events"
    assert workflow_tasks(happy_path) == workflow_tasks(load(PREVIOUS_HAPPY_PATH)) - 1
    assert EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED not in kinds
    assert steps(happy_path)[-1] == Step.RETURN_PERMIT, "the permit went back by the run's last step"


def test_the_happy_path_upserts_once_per_workflow_task_at_most(happy_path: WorkflowHistory) -> None:
    """The first task quarantines with local steps and leaves on the drain: Detected and Draining
    would be two upserts there, of which nobody can see the first."""
    assert upserted_more_than_once_by_a_task(happy_path) == {}
    # Besides gpuheal's, sdk-core's TemporalChangeVersion, with the release's marker.
    upserts = sum(e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in happy_path.events)
    assert upserts == len(gpuheal_upserts(happy_path)) + 1


async def published(handle: Handle, phase: Phase) -> None:
    """Wait until the run's GpuhealPhase shows `phase` (visibility, not the query)."""
    for _ in range(200):
        if (await handle.describe()).typed_search_attributes.get(attrs.PHASE) == phase.value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{phase} was never published")


async def test_a_held_run_shows_on_hold_while_it_waits_on_an_activity_upserted_once_by_its_task(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The first task reads the node in a local step, finds it on hold and waits for the label to
    go in a regular activity: OnHold is visible meanwhile, in the task's one upsert."""
    node.held = True
    handle = await start(time_skipping_env, queue, node)

    await published(handle, Phase.ON_HOLD)

    assert upserted_more_than_once_by_a_task(await handle.fetch_history()) == {}
    node.held = False
    assert (await handle.result()).phase is Phase.RESOLVED
    assert upserted_more_than_once_by_a_task(await handle.fetch_history()) == {}


async def test_a_run_shows_awaiting_approval_while_it_waits_for_a_person_upserted_once_by_its_task(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The task after the drain looks for repeat offences in a local step, then waits for a person
    (a timer, the signal or Update): AwaitingApproval is visible meanwhile, in the task's one upsert."""
    handle = await start(time_skipping_env, queue, node, approval=True)

    await published(handle, Phase.AWAITING_APPROVAL)

    assert Step.FIND_HISTORY in steps(await handle.fetch_history())
    assert upserted_more_than_once_by_a_task(await handle.fetch_history()) == {}
    await handle.execute_update(RemediationWorkflow.approve_now, ApprovalSignal(approver="alice", reason="ok"))
    assert (await handle.result()).phase is Phase.RESOLVED
    assert upserted_more_than_once_by_a_task(await handle.fetch_history()) == {}


async def test_a_fault_joining_while_the_run_waits_is_published_with_that_task_alone(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """A signal's handler changes an attribute while the run waits for a person (the run's code does
    not run): the change is upserted in that task, alone."""
    handle = await start(time_skipping_env, queue, node, approval=True)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    await handle.signal(RemediationWorkflow.fault, fault(node, xid=48))
    for _ in range(200):
        if (await handle.describe()).typed_search_attributes.get(attrs.XID) == 48:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the joining fault's XID was not published")

    history = await handle.fetch_history()
    [*_, (_, last)] = gpuheal_upserts(history)
    assert set(last) == {attrs.XID.name}
    assert (await handle.query(RemediationWorkflow.status)).phase is Phase.AWAITING_APPROVAL
    assert Step.REBOOT.value not in node.steps
