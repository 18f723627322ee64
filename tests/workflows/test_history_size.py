"""What one remediation writes into Temporal's history: few events, one patch marker, one upsert of
what changed per activation (counts, not timings).

A run begun under this release has every earlier patch through the release's one (a patch marker and
sdk-core's TemporalChangeVersion upsert each, where there were nine), and publishes its search
attributes once per activation, only those whose values changed. Runs begun under 0.1.0 keep their
old path to their end: test_replay.py replays their histories.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from gpuheal.domain.phases import Phase
from gpuheal.domain.steps import Step
from gpuheal.workflows import patches
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows import record_history
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import fault, start, wait_for_phase
from tests.workflows.test_replay import patch_markers

# The limit for one remediation, happy path or a long reboot wait (the wait is one activity).
MOST_EVENTS = 60


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


async def test_a_new_remediation_writes_at_most_60_events_with_the_release_patch_its_only_marker() -> None:
    """The happy path on the dev server, with the real worker and the governor's permit (an XID 79,
    rebooted, back in service), as record_history records it."""
    [history] = (await record_history.happy_path()).values()

    assert len(history.events) <= MOST_EVENTS, f"{len(history.events)} events"
    assert patch_markers(history) == [patches.RELEASES[0]]

    upserts = gpuheal_upserts(history)
    # What the start set counts as published: the run does not upsert it again unchanged.
    started = history.events[0].workflow_execution_started_event_attributes.search_attributes.indexed_fields
    seen = {name: payload.data for name, payload in started.items()}
    assert attrs.NODE.name in seen, "the start sets the node"
    for index, carried in upserts:
        repeated = {name for name, value in carried.items() if seen.get(name) == value}
        assert not repeated, f"event {index + 1} upserts {repeated} again, unchanged"
        seen.update(carried)
    # Two upserts made in one activation would follow each other.
    adjacent = [(a, b) for (a, _), (b, _) in itertools.pairwise(upserts) if b == a + 1]
    assert not adjacent, f"upserts one after the other: events {adjacent}"
    assert seen[attrs.PHASE.name] == json.dumps(Phase.RESOLVED.value).encode()


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
