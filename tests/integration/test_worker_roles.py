"""`gpuheal worker --role`: a process polls the remediations' queue, the governor's, or both."""

from __future__ import annotations

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from gpuheal.control.governor import governor_id_for
from gpuheal.domain.fleet import governor_task_queue
from tests.integration.conftest import Stack, StackFactory, WorkerFactory, eventually


async def pollers(stack: Stack, queue: str) -> set[str]:
    """The identities (`<pid>@<host>`) of the processes polling `queue` for workflow tasks."""
    described = await stack.server.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=stack.server.client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return {poller.identity for poller in described.pollers}


def pid_of(identities: set[str]) -> set[int]:
    return {int(identity.split("@", 1)[0]) for identity in identities}


async def test_a_governor_process_and_a_remediations_process_each_poll_their_own_queue(
    make_stack: StackFactory, spawn_worker: WorkerFactory
) -> None:
    stack = await make_stack(in_process_worker=False, nodes=2)
    main_queue, governor_queue = stack.task_queue, governor_task_queue(governor_id_for(stack.task_queue))

    governor_process = await spawn_worker(stack, "--role", "governor")
    remediations_process = await spawn_worker(stack, "--role", "remediations")

    async def both_polling() -> bool:
        return bool(await pollers(stack, main_queue)) and bool(await pollers(stack, governor_queue))

    await eventually(both_polling, "both processes polling", timeout=30)
    assert pid_of(await pollers(stack, governor_queue)) == {governor_process.pid}
    # The remediations' queue also runs a governor started there by an older version (see the README).
    assert pid_of(await pollers(stack, main_queue)) == {remediations_process.pid}
