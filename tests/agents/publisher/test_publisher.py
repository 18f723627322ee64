"""The publisher's routing against the simulator's Kubernetes API and the real Temporal dev server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kubernetes.aio import client as k8s
from temporalio.client import WorkflowExecutionStatus

from gpuheal.agents.publisher import KubernetesReporter, Publisher, PublisherSettings, SpoolLimits
from gpuheal.domain.gpu_health import read_stamp
from gpuheal.domain.marks import workflow_id_for
from tests.agents.publisher.conftest import FAST, Stack, closed_port
from tests.agents.publisher.events import GPU_A, GPU_B, fatal_xid, healthy, non_fatal, store_only


async def test_a_fatal_xid_starts_the_remediation_and_marks_the_node(stack: Stack) -> None:
    node = stack.nodes[0]
    fault = fatal_xid(node, GPU_A)
    async with stack.publisher() as publisher:
        await publisher.submit(fault)

        described = await stack.temporal.get_workflow_handle(workflow_id_for(node)).describe()
        assert described.status is WorkflowExecutionStatus.RUNNING
        assert described.task_queue == stack.task_queue
        [received] = await stack.faults_signalled(node)
        assert (received.event_id, received.xid, received.gpu_uuids) == (fault.id, 79, (GPU_A,))

        condition = await stack.gpu_condition(node)
        assert (condition.status, condition.reason) == ("False", "SysLogsXIDError")
        assert GPU_A in condition.message and "XID 79" in condition.message
        assert not await stack.remediation_exists(stack.nodes[1])

        # After the reboot a monitor reports the GPUs healthy: the condition turns True.
        await publisher.submit(healthy(node))
        condition = await stack.gpu_condition(node)
        assert (condition.status, condition.reason) == ("True", "GpusHealthy")
        # A healthy event is not a fault: the workflow got nothing more.
        assert len(await stack.faults_signalled(node)) == 1
        assert publisher.pending() == {"kubernetes": 0, "temporal": 0}


async def test_a_healthy_gpu_does_not_hide_a_faulty_one(stack: Stack) -> None:
    node = stack.nodes[0]
    async with stack.publisher() as publisher:
        await publisher.submit(fatal_xid(node, GPU_A))
        await publisher.submit(healthy(node, GPU_B))
        assert (await stack.gpu_condition(node)).status == "False"
        await publisher.submit(healthy(node, GPU_A))
        assert (await stack.gpu_condition(node)).status == "True"


async def test_a_non_fatal_event_becomes_a_kubernetes_event_and_no_workflow(stack: Stack) -> None:
    node = stack.nodes[1]
    before = await stack.gpu_condition(node)
    event = non_fatal(node, GPU_B)
    async with stack.publisher(node) as publisher:
        await publisher.submit(event)
        await publisher.submit(event)  # a redelivery records nothing new

    [recorded] = await stack.node_events(node)
    assert (recorded.type, recorded.reason) == ("Warning", "SysLogsXIDError")
    assert (recorded.involved_object.kind, recorded.involved_object.name) == ("Node", node)
    assert "XID 13" in recorded.message and GPU_B in recorded.message
    assert not await stack.remediation_exists(node)
    after = await stack.gpu_condition(node)
    assert (after.status, after.message) == (before.status, before.message)


async def test_store_only_changes_nothing(stack: Stack) -> None:
    node = stack.nodes[0]
    before = await stack.gpu_condition(node)
    async with stack.publisher() as publisher:
        for event in (fatal_xid(node), non_fatal(node), healthy(node)):
            await publisher.submit(store_only(event))

    assert not await stack.remediation_exists(node)
    assert await stack.node_events(node) == []
    after = await stack.gpu_condition(node)
    assert (after.status, after.reason, after.message) == (before.status, before.reason, before.message)
    assert not any(stack.spool_dir.rglob("*.json"))


async def test_with_temporal_down_faults_wait_on_disk_and_a_new_publisher_delivers_them_in_order(
    stack: Stack,
) -> None:
    node = stack.nodes[0]
    faults = [fatal_xid(node, GPU_A, xid=79), fatal_xid(node, GPU_B, xid=48)]
    down = stack.publisher(remediations=stack.remediations(address=f"127.0.0.1:{closed_port()}"))
    async with down:
        for fault in faults:
            await down.submit(fault)
        # Kubernetes was reachable and got its part; Temporal's part is on disk.
        assert down.pending() == {"kubernetes": 0, "temporal": 2}
        assert (await stack.gpu_condition(node)).status == "False"
    assert len(list((stack.spool_dir / "temporal").glob("*.json"))) == 2
    assert not await stack.remediation_exists(node)

    # The agent restarts and Temporal is back.
    async with stack.publisher() as restarted:
        await asyncio.wait_for(restarted.wait_delivered(), 10)
        assert restarted.pending()["temporal"] == 0
    received = await stack.faults_signalled(node)
    assert [f.event_id for f in received] == [f.id for f in faults]
    assert not any((stack.spool_dir / "temporal").glob("*.json"))


async def test_with_the_api_server_down_the_bound_keeps_the_faults(stack: Stack) -> None:
    node = stack.nodes[1]
    unreachable = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{closed_port()}"))
    fault1, chatter1, chatter2, fault2, chatter3 = (
        fatal_xid(node, GPU_A),
        non_fatal(node),
        non_fatal(node),
        fatal_xid(node, GPU_B, xid=48),
        non_fatal(node),
    )
    small = PublisherSettings(spool=SpoolLimits(max_entries=2), retry=FAST.retry)
    try:
        async with Publisher(stack.spool_dir, nodes=KubernetesReporter(unreachable), settings=small) as down:
            for event in (fault1, chatter1, chatter2, fault2, chatter3):
                await down.submit(event)
            # chatter1 and chatter2 made room; chatter3 found only faults and was refused.
            assert down.pending() == {"kubernetes": 2}
    finally:
        await unreachable.close()  # type: ignore[no-untyped-call]

    reporter = KubernetesReporter(stack.agent_apis[node])
    async with Publisher(stack.spool_dir, nodes=reporter, settings=small) as restarted:
        await asyncio.wait_for(restarted.wait_delivered(), 10)
    condition = await stack.gpu_condition(node)
    assert condition.status == "False"
    assert GPU_A in condition.message and GPU_B in condition.message
    assert await stack.node_events(node) == []


async def test_the_condition_names_the_boot_and_moment_it_was_written(stack: Stack) -> None:
    """A remediation accepts GPU health only when it was reported after the repair: the condition
    says on which boot (the node's /proc/sys/kernel/random/boot_id) and when, to the microsecond."""
    node = stack.nodes[0]
    boot = {"id": "0b5e7c1e-boot-one"}
    reporter = KubernetesReporter(stack.api, boot_id=lambda: boot["id"])
    async with stack.publisher(nodes=reporter) as publisher:
        before = datetime.now(UTC)
        await publisher.submit(fatal_xid(node, GPU_A))
        faulty = await stack.gpu_condition(node)
        text, boot_id, at = read_stamp(faulty.message)
        assert faulty.status == "False" and "XID 79" in text and GPU_A in text
        assert boot_id == "0b5e7c1e-boot-one"
        assert at is not None and before <= at <= datetime.now(UTC)

        boot["id"] = "9f00d2aa-boot-two"  # the node rebooted
        await publisher.submit(healthy(node))
        fresh = await stack.gpu_condition(node)
        assert fresh.status == "True" and read_stamp(fresh.message)[1] == "9f00d2aa-boot-two"

    unknown = KubernetesReporter(stack.api, boot_id=lambda: None)
    async with stack.publisher(nodes=unknown) as publisher:
        await publisher.submit(fatal_xid(node, GPU_B))
        assert read_stamp((await stack.gpu_condition(node)).message)[1] == "", "no boot ID, no stamp"


async def test_a_directory_planted_in_the_spool_is_moved_aside_and_later_faults_reach_temporal(stack: Stack) -> None:
    node = stack.nodes[0]
    planted = stack.spool_dir / "temporal" / "000000000001.a.json"
    planted.mkdir(parents=True)
    faults = [fatal_xid(node, GPU_A), fatal_xid(node, GPU_B, xid=48)]
    async with stack.publisher() as publisher:
        for fault in faults:
            await publisher.submit(fault)
        await asyncio.wait_for(publisher.wait_delivered(), 20)
    assert [fault.event_id for fault in await stack.faults_signalled(node)] == [fault.id for fault in faults]
    assert planted.with_name(f"{planted.name}.bad").is_dir(), "kept for a person to inspect"
