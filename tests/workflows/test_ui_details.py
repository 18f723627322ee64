"""What the Temporal UI shows of a remediation: its current details (the phases as a checklist and what
it waits on), the summaries of its steps and timers, and GpuhealPhaseSince for 'stuck in a phase'."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.operator import OperatorAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy, RepairPolicy
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.domain.steps import Step
from gpuheal.workflows import search_attributes as attrs
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_escalation import act, unhealthy_after_its_reboot
from tests.workflows.test_remediation_logic import Handle, escalated, wait_for_phase
from tests.workflows.test_repair_logic import remediate


async def start_asking_approval(env: WorkflowEnvironment, queue: str, node: FakeNode) -> Handle:
    """A remediation under the default provider ("auto") whose policy has a person approve the reboot."""
    fault = Fault(node=node.name, action=RecommendedAction.RESTART_BM, xid=79, event_id=str(uuid.uuid4()))
    policy = RemediationPolicy(repair=RepairPolicy(require_approval=True, approval_timeout=timedelta(hours=4)))
    return await remediations.report_fault(env.client, fault, policy, task_queue=queue)


async def current_details(handle: Handle) -> str:
    metadata: WorkflowMetadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def summaries(handle: Handle, kind: EventType.ValueType) -> list[str]:
    """The summaries of the history's events of `kind` (an activity scheduled, a timer started)."""

    async def text(event: HistoryEvent) -> str:
        [value] = await pydantic_data_converter.decode([event.user_metadata.summary])
        assert isinstance(value, str)
        return value

    history = await handle.fetch_history()
    return [await text(event) for event in history.events if event.event_type == kind]


async def test_the_details_list_the_phases_passed_and_say_the_run_waits_for_an_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start_asking_approval(time_skipping_env, queue, node)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    details = await current_details(handle)
    lines = details.splitlines()
    for passed in (Phase.DETECTED, Phase.QUARANTINED, Phase.DRAINING, Phase.DRAINED):
        assert any(line.startswith(f"- ✓ {passed.value} — ") for line in lines), details
    assert any(line.startswith("- ▶ **AwaitingApproval** — now, since ") for line in lines), details
    assert "now: a person's approval or rejection, for up to 4h 00m" in details
    assert f"waiting for approval: `gpuheal approve {node.name} --by NAME --reason WHY`" in details
    # The approval's timer says what it waits for.
    assert await summaries(handle, EventType.EVENT_TYPE_TIMER_STARTED) == [
        "a person's approval or rejection, for up to 4h 00m"
    ]

    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="rack `4` *drained*"), approve=True
    )
    assert (await handle.result()).phase is Phase.RESOLVED
    details = await current_details(handle)
    assert "- ✓ AwaitingApproval — " in details and "- ■ **Resolved** at " in details, details
    assert "approved by alice" in details and "now:" not in details
    # A person's words show as they wrote them: no code span, no emphasis.
    assert r": rack \`4\` \*drained\*" in details, details


async def test_the_reboot_step_names_the_provider_auto_picks_read_without_the_pods(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """Before the reboot, one light read names the provider "auto" picks (the node only, not its pods
    as a dry run's survey reads): the step's summary names it, and the details its machine and who
    took the request."""
    handle = await start_asking_approval(time_skipping_env, queue, node)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="rack drained"), approve=True
    )
    assert (await handle.result()).phase is Phase.RESOLVED

    assert Step.SURVEY.value not in node.steps, node.steps
    assert node.steps.count(Step.NAME_PROVIDER.value) == 1, node.steps
    steps = await summaries(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert "reboot via fake (RESTART_BM)" in steps, steps
    details = await current_details(handle)
    assert "provider fake took the reboot request" in details and "machine `fake://" in details, details


async def test_a_provider_that_cannot_be_named_holds_up_no_reboot(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    """The read is only for a label: when it fails its few attempts, the step says the policy's "auto"
    and the reboot goes on."""
    node.naming_fails = True
    status = await remediate(time_skipping_env, queue, node)
    assert status.phase is Phase.RESOLVED, status.reason

    handle = time_skipping_env.client.get_workflow_handle(workflow_id_for(node.name))
    steps = await summaries(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [step for step in steps if "reboot via" in step] == ["reboot via auto (RESTART_VM)"], steps
    assert node.steps.count(Step.NAME_PROVIDER.value) == 3, "a few attempts, then on without it"


async def test_a_forced_reboot_after_a_graceful_one_names_the_provider_that_took_the_first(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.graceful_supported = True
    node.graceful_restarts = False
    status = await remediate(time_skipping_env, queue, node, graceful_timeout=timedelta(minutes=5))
    assert status.phase is Phase.RESOLVED, status.reason

    handle = time_skipping_env.client.get_workflow_handle(workflow_id_for(node.name))
    steps = await summaries(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    reboots = [step for step in steps if "reboot via" in step]
    assert reboots == ["graceful reboot via fake (RESTART_VM)", "reboot via fake (RESTART_VM)"], steps


async def test_the_phase_since_attribute_holds_when_the_current_phase_began(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await start_asking_approval(time_skipping_env, queue, node)
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    since = (await handle.describe()).typed_search_attributes.get(attrs.PHASE_SINCE)
    assert since is not None and since == status.history[-1].entered_at
    await remediations.send_decision(
        time_skipping_env.client, node.name, ApprovalSignal(approver="alice", reason="rack drained"), approve=True
    )
    status = await handle.result()
    assert (await handle.describe()).typed_search_attributes.get(attrs.PHASE_SINCE) == status.history[-1].entered_at


async def test_a_retried_round_does_not_name_the_provider_of_the_round_before(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
    assert "provider fake took the reboot request" in await current_details(handle)

    node.provider_errors = [ApplicationError("BMC refused the power action", non_retryable=True)]
    await act(time_skipping_env, node, PersonAction.RETRY, OperatorAction(by="bob", reason="BMC firmware updated"))
    for _ in range(300):
        status = await escalated(handle)
        if status.reason.startswith("the reboot could not be requested"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the retry's reboot was not refused: {status.reason}")

    details = await current_details(handle)
    assert "provider fake took the reboot request" not in details, details
    steps = await summaries(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [step for step in steps if "reboot via" in step] == ["reboot via simulator (RESTART_BM)"] * 2, steps
