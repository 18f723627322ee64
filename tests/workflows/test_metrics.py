"""Workflow metrics: recorded as a remediation runs, never again when its history is replayed."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import BufferedMetricUpdate, MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.decisions import PersonAction
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import NodeRelease
from gpuheal.workflows.remediation import RemediationWorkflow
from tests.workflows.fake_activities import FakeNode
from tests.workflows.test_escalation import act, unhealthy_after_its_reboot
from tests.workflows.test_remediation_logic import fault, policy


def counted(
    updates: Sequence[BufferedMetricUpdate],
) -> Counter[tuple[str, frozenset[tuple[str, str | int | float | bool]]]]:
    """Each gpuheal metric's recordings (counter increments, histogram observations) per set of labels,
    without the SDK's own labels."""
    sdk = {"namespace", "task_queue", "workflow_type", "service_name"}
    found: Counter[tuple[str, frozenset[tuple[str, str | int | float | bool]]]] = Counter()
    for update in updates:
        if update.metric.name.startswith("gpuheal_"):
            labels = frozenset((k, v) for k, v in update.attributes.items() if k not in sdk)
            found[update.metric.name, labels] += 1
    return found


async def metered_client(env: WorkflowEnvironment, buffer: MetricBuffer) -> Client:
    """A client of `env`'s server whose workers record their metrics into `buffer`."""
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )


async def test_an_escalated_remediation_is_counted_as_it_runs_and_not_when_replayed(
    time_skipping_env: WorkflowEnvironment, node: FakeNode
) -> None:
    live = MetricBuffer(10_000)
    client = await metered_client(time_skipping_env, live)
    queue = f"metrics-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[RemediationWorkflow], activities=node.activities()):
        handle = await unhealthy_after_its_reboot(time_skipping_env, queue, node)
        await act(time_skipping_env, node, PersonAction.RELEASE, NodeRelease(by="dave", reason="RMA 4411"))
        status = await handle.result()
    assert status.phase is Phase.RELEASED

    recorded = counted(live.retrieve_updates())
    action = frozenset({("action", "RESTART_BM")})
    assert recorded["gpuheal_remediations_started", action] == 1
    assert recorded["gpuheal_remediations_escalated", action] == 1
    assert recorded["gpuheal_remediations_finished", action | {("outcome", "Released")}] == 1
    assert recorded["gpuheal_fault_to_cordon_seconds", frozenset()] == 1
    assert recorded["gpuheal_fault_to_service_seconds", frozenset()] == 0, "released unrepaired: not back in service"
    assert recorded["gpuheal_remediation_phase_duration_seconds", frozenset({("phase", "Escalated")})] == 1
    assert recorded["gpuheal_remediation_phase_duration_seconds", frozenset({("phase", "Released")})] == 0

    # A worker that takes a remediation over replays its history first: what another worker counted
    # is not counted again.
    replayed = MetricBuffer(10_000)
    replayer = Replayer(
        workflows=[RemediationWorkflow],
        data_converter=pydantic_data_converter,
        runtime=Runtime(telemetry=TelemetryConfig(metrics=replayed)),
    )
    result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=True)
    assert result.replay_failure is None
    assert not counted(replayed.retrieve_updates())


async def test_a_gpu_reset_is_counted_by_how_it_ended(time_skipping_env: WorkflowEnvironment, node: FakeNode) -> None:
    buffer = MetricBuffer(10_000)
    client = await metered_client(time_skipping_env, buffer)
    queue = f"metrics-{uuid.uuid4()}"
    node.reset_outcome = "fail"  # the agent answers that the reset failed: the node is rebooted instead
    async with Worker(client, task_queue=queue, workflows=[RemediationWorkflow], activities=node.activities()):
        reset_fault = fault(node, RecommendedAction.COMPONENT_RESET, xid=48)
        handle = await remediations.report_fault(time_skipping_env.client, reset_fault, policy(), task_queue=queue)
        status = await handle.result()
    assert status.phase is Phase.RESOLVED and node.reboots == 1

    recorded = counted(buffer.retrieve_updates())
    assert recorded["gpuheal_gpu_resets", frozenset({("result", "failed")})] == 1
    assert recorded["gpuheal_fault_to_service_seconds", frozenset()] == 1
    assert (
        recorded["gpuheal_remediations_finished", frozenset({("action", "RESTART_VM"), ("outcome", "Resolved")})] == 1
    )
