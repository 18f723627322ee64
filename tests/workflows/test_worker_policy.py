"""A remediation started without a policy runs under the worker's policy file as it stood when the run
began, records that policy's version, and keeps it through a later edit of the file and through replay."""

from __future__ import annotations

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from gpuheal.control import remediations
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RepairPolicy
from gpuheal.domain.policy_document import PolicyDocument, policy_version
from gpuheal.domain.remediation import ApprovalSignal
from gpuheal.workflows import search_attributes as attrs
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_remediation_logic import fault, policy, settled, wait_for_phase

# The worker's file asks a person before every repair: a run under the defaults would not wait.
ASKS_A_PERSON = PolicyDocument(repair=RepairPolicy(provider="simulator", require_approval=True))


async def test_a_run_without_a_policy_decides_by_the_worker_s_file_and_keeps_it_through_an_edit(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.policy = ASKS_A_PERSON
    handle = await remediations.report_fault(time_skipping_env.client, fault(node), task_queue=queue)

    waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert waiting.policy_version == ASKS_A_PERSON.version
    described = await handle.describe()
    assert described.typed_search_attributes.get(attrs.POLICY_VERSION) == ASKS_A_PERSON.version

    # The file changes under the run: it no longer asks anyone.
    node.policy = PolicyDocument(repair=RepairPolicy(provider="simulator", gpu_reset=False))
    await handle.signal(RemediationWorkflow.approve, ApprovalSignal(approver="alice", reason="checked the node"))
    done = await settled(handle)

    assert done.phase is Phase.RESOLVED
    assert done.policy_version == ASKS_A_PERSON.version
    assert node.policy_reads == 1
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[RemediationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)  # raises on any nondeterminism


async def test_a_run_started_with_a_policy_decides_by_it_and_shows_its_version(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.policy = ASKS_A_PERSON  # the worker's file, which this run does not read
    given = policy()
    handle = await remediations.report_fault(time_skipping_env.client, fault(node), given, task_queue=queue)

    done = await settled(handle)

    assert done.phase is Phase.RESOLVED
    assert done.decision is None  # nobody was asked
    assert done.policy_version == policy_version(given)
    assert node.policy_reads == 0
    described = await handle.describe()
    assert described.typed_search_attributes.get(attrs.POLICY_VERSION) == policy_version(given)


async def test_the_ui_shows_which_policy_decided(
    time_skipping_env: WorkflowEnvironment, queue: str, node: FakeNode
) -> None:
    node.policy = ASKS_A_PERSON
    handle = await remediations.report_fault(time_skipping_env.client, fault(node), task_queue=queue)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    # What the UI shows as the run's current details: the SDK's built-in metadata query.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)

    assert f"policy {ASKS_A_PERSON.version}" in metadata.current_details
    await handle.signal(RemediationWorkflow.reject, ApprovalSignal(approver="alice", reason="not now"))
    await settled(handle)
