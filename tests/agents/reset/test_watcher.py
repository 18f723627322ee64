"""The order watcher and the reset handler against the simulator's Kubernetes API: orders in the annotation, reports in the condition."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.kmsg.follow import KernelLog, KernelLogFormat, ReadFrom
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.monitor import CHECK_RESET, KernelLogMonitor
from gpuheal.agents.nvml.interface import GpuInfo
from gpuheal.agents.orders.watcher import MAX_DETAIL
from gpuheal.agents.reset import DISABLED, ResetAcknowledgements
from gpuheal.domain.gpu_reset import GPU_RESET, GpuResetOrder
from gpuheal_sim.fake_nvml import FakeNvml
from tests.agents.reset.conftest import FAST, GPUS, Cluster, CountingResetter, Node, RecordingSink, eventually, now


async def test_an_order_is_reset_and_confirmed_by_the_kernel_log(node: Node, cluster: Cluster) -> None:
    target = node.gpus[2]
    node.nvml.set_remapped_rows(2, uncorrectable=1, pending=True)  # what a reset is for
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter):
        order = await cluster.order([target.uuid])
        status, reason, report = await cluster.report(order.id)

    assert (status, reason) == ("True", GPU_RESET.reason_ok)
    assert (report.id, report.ok, report.confirmed_by) == (order.id, True, "kernel-log")
    assert target.uuid in report.detail and "kernel log" in report.detail
    assert resetter.calls == [[target.uuid]]
    # The simulated driver wrote the acknowledgement the monitor parsed, and reset the fake GPU.
    assert f"NVRM: GPU {target.pci}: GPU reset complete" in node.kernel_log.read_text()
    assert [(e.check_name, e.is_healthy, e.gpu_uuids) for e in node.sink.events] == [
        (CHECK_RESET, True, (target.uuid,))
    ]
    assert node.nvml.health_signals(2).remapped_rows is not None
    assert not node.nvml.health_signals(2).remapped_rows.pending  # type: ignore[union-attr]


async def test_gpus_are_named_by_uuid_in_any_case_or_by_pci_address(node: Node, cluster: Cluster) -> None:
    first, second = node.gpus[0], node.gpus[1]
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter):
        order = await cluster.order([first.uuid.upper(), second.pci_bus_id])
        status, _, report = await cluster.report(order.id)
    assert status == "True", report.detail
    assert resetter.calls == [[first.uuid, second.uuid]]


async def test_disabled_reset_is_answered_with_a_failure_at_once(node: Node, cluster: Cluster) -> None:
    async with node.watcher(None):
        order = await cluster.order([node.gpus[0].uuid])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason, report.ok) == ("False", GPU_RESET.reason_failed, False)
    assert report.detail == DISABLED
    assert "--gpu-reset" in report.detail
    assert node.kernel_log.read_text() == "", "nothing was reset"


async def test_gpus_the_node_does_not_have_are_refused_by_name(node: Node, cluster: Cluster) -> None:
    stranger = "GPU-00000000-1111-2222-3333-444444444444"
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter):
        order = await cluster.order([node.gpus[0].uuid, stranger])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason) == ("False", GPU_RESET.reason_failed)
    assert stranger in report.detail and node.gpus[0].uuid not in report.detail
    assert resetter.calls == [], "not even the GPU it has is reset"


async def test_a_reset_nothing_proves_fails_after_the_confirm_timeout(node: Node, cluster: Cluster) -> None:
    target = node.gpus[1]
    node.nvml.set_remapped_rows(1, pending=True)  # still pending: NVML cannot vouch for a reset either
    resetter = CountingResetter()  # a "reset" that does nothing
    settings = replace(FAST, confirm_timeout=timedelta(seconds=0.5), nvml_grace=timedelta(seconds=0.1))
    async with node.watcher(resetter, settings=settings):
        order = await cluster.order([target.uuid])
        status, reason, report = await cluster.report(order.id)
    assert (status, reason, report.confirmed_by) == ("False", GPU_RESET.reason_failed, "")
    assert report.detail == f"reset of {target.uuid} not confirmed within 0.5s"
    assert resetter.calls == [[target.uuid]]


async def test_nvml_confirms_a_reset_the_kernel_log_does_not_show(node: Node, cluster: Cluster) -> None:
    target = node.gpus[3]
    node.nvml.set_ecc_dbe(3, volatile=2)

    class NvmlOnly(CountingResetter):
        async def reset(self, gpus: object) -> None:
            node.nvml.reset_gpu(3)  # the GPU comes back clean, but no line reaches the kernel log

    resetter = NvmlOnly()
    async with node.watcher(resetter, settings=replace(FAST, nvml_grace=timedelta(seconds=0.2))):
        order = await cluster.order([target.uuid])
        status, _, report = await cluster.report(order.id)
    assert (status, report.confirmed_by) == ("True", "nvml")
    assert "NVML" in report.detail


@pytest.mark.parametrize(
    "failure",
    ["GPU reset did not complete", "GPU reset was not successful", "GPU reset timed out before it completed"],
)
async def test_a_reset_the_driver_says_failed_is_a_failure(node: Node, cluster: Cluster, failure: str) -> None:
    """The failure line is no acknowledgement; the answer is a failure, before NVML's view could pass it."""
    target = node.gpus[2]

    class FailingDriver(CountingResetter):
        async def reset(self, gpus: Sequence[GpuInfo]) -> None:
            await super().reset(gpus)
            node.nvml.reset_gpu(2)  # NVML shows the GPU present and clean: only the driver knows better
            with node.kernel_log.open("a") as log:
                log.write(f"6,7,1,-;NVRM: GPU {target.pci}: {failure}\n")

    resetter = FailingDriver()
    # NVML may vouch only after the confirm timeout: the failure must be read from the kernel log.
    settings = replace(FAST, confirm_timeout=timedelta(seconds=30), nvml_grace=timedelta(seconds=30))
    async with node.watcher(resetter, settings=settings):
        order = await cluster.order([target.uuid])
        status, reason, report = await cluster.report(order.id, timeout=20.0)
    assert (status, reason, report.ok, report.confirmed_by) == ("False", GPU_RESET.reason_failed, False, "")
    assert report.detail == f"the driver reported the reset of {target.uuid} failed: GPU {target.pci}: {failure}"
    assert resetter.calls == [[target.uuid]]
    assert [(e.check_name, e.is_healthy) for e in node.sink.events] == [(CHECK_RESET, False)]


async def test_the_drivers_words_of_a_failure_are_bounded_in_the_report(node: Node, cluster: Cluster) -> None:
    """A line of a log file may be 1 MiB: the report that carries its words into a node condition is cut."""
    target = node.gpus[2]
    words = "GPU reset failed: " + "x" * 200_000

    class FailingDriver(CountingResetter):
        async def reset(self, gpus: Sequence[GpuInfo]) -> None:
            await super().reset(gpus)
            with node.kernel_log.open("a") as log:
                log.write(f"6,7,1,-;NVRM: GPU {target.pci}: {words}\n")

    async with node.watcher(FailingDriver()):
        order = await cluster.order([target.uuid])
        status, _, report = await cluster.report(order.id, timeout=20.0)
    assert status == "False"
    assert report.detail.startswith(
        f"the driver reported the reset of {target.uuid} failed: GPU {target.pci}: GPU reset failed: xxx"
    )
    assert "[truncated" in report.detail
    assert len(report.detail.encode()) <= MAX_DETAIL


async def test_an_acknowledgement_from_before_the_reset_proves_nothing(node: Node, cluster: Cluster) -> None:
    target = node.gpus[0]
    node.nvml.fail_device(0)  # NVML cannot vouch for it either
    assert await node.acknowledgements.until_caught_up(10)  # read live: a backlog line is not shown at all
    with node.kernel_log.open("a") as log:
        log.write(f"6,1,1,-;NVRM: GPU {target.pci}: GPU reset complete\n")
    await eventually(lambda: node.acknowledgements.mark() == 1, "the old acknowledgement being seen")
    async with node.watcher(CountingResetter(), settings=replace(FAST, confirm_timeout=timedelta(seconds=0.3))):
        order = await cluster.order([target.uuid])
        status, _, report = await cluster.report(order.id)
    assert status == "False" and "not confirmed" in report.detail


async def test_an_answered_order_is_not_carried_out_again(node: Node, cluster: Cluster) -> None:
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter) as watcher:
        order = await cluster.order([node.gpus[0].uuid])
        await cluster.report(order.id)
        # The node changes on (heartbeats, other annotations); the order stays answered.
        await cluster.core.patch_node(
            cluster.node, {"metadata": {"labels": {"touched": "yes"}}}, _content_type="application/merge-patch+json"
        )
        assert await watcher.handle(await cluster.node_json()) == []
    assert resetter.calls == [[node.gpus[0].uuid]]
    assert node.handler is not None and node.handler.resets == 1

    # An agent that restarts finds the report in the condition: done.
    again = node.kernel_log_resetter()
    async with node.watcher(again) as restarted:
        assert await restarted.handle(await cluster.node_json()) == []
    assert again.calls == []

    # A new order is carried out.
    async with node.watcher(again):
        second = await cluster.order([node.gpus[1].uuid])
        status, _, report = await cluster.report(second.id)
    assert status == "True" and report.id == second.id
    assert again.calls == [[node.gpus[1].uuid]]


async def test_the_same_gpu_reset_twice_in_a_row_is_confirmed_twice(node: Node, cluster: Cluster) -> None:
    """The monitor's flood control drops the second acknowledgement; the watcher still sees it."""
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter):
        for _ in range(2):
            order = await cluster.order([node.gpus[0].uuid])
            status, _, report = await cluster.report(order.id)
            assert (status, report.confirmed_by) == ("True", "kernel-log"), report.detail
    assert len(resetter.calls) == 2
    assert len(node.sink.events) == 1, "the second acknowledgement fell inside the dedupe window"


async def test_a_malformed_order_without_an_id_is_left_alone(node: Node, cluster: Cluster) -> None:
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter) as watcher:
        await cluster.annotate("reset everything please")
        assert await watcher.handle(await cluster.node_json()) == []
        await cluster.annotate(json.dumps({"gpus": [node.gpus[0].uuid]}))
        assert await watcher.handle(await cluster.node_json()) == []
    assert await cluster.condition() is None
    assert resetter.calls == []


async def test_a_malformed_order_with_an_id_gets_a_failure(node: Node, cluster: Cluster) -> None:
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter):
        await cluster.annotate(
            json.dumps({"id": "remediate-x-1", "holder": "h", "gpus": [], "at": "2026-01-01T00:00:00Z"})
        )
        status, reason, report = await cluster.report("remediate-x-1")
    assert (status, reason) == ("False", GPU_RESET.reason_failed)
    assert report.detail.startswith("malformed GPU reset order: gpus:")
    assert resetter.calls == []


async def test_an_order_from_before_the_node_last_rebooted_is_left_alone(node: Node, cluster: Cluster) -> None:
    """After a fallback reboot a late order must never reset the GPUs of the node's new boot."""
    resetter = node.kernel_log_resetter()
    async with node.watcher(resetter) as watcher:
        stale = GpuResetOrder(id="remediate-x/run", holder="x", gpus=[node.gpus[0].uuid], at=now(), boot_id="old-boot")
        await cluster.annotate(stale.model_dump_json())
        assert await watcher.handle(await cluster.node_json()) == []
    assert resetter.calls == []
    assert await cluster.condition() is None


async def test_reset_news_from_before_the_agent_started_decides_no_reset(cluster: Cluster, tmp_path: Path) -> None:
    """The log holds earlier resets' outcomes (an acknowledgement, a failure) when the agent starts: a
    reset ordered before the monitor has read that backlog waits for it, and is decided by its own news."""
    nvml = FakeNvml(cluster.node, GPUS)
    nvml.init()
    done, failed = nvml.gpus[0], nvml.gpus[1]
    nvml.fail_device(0)  # NVML cannot vouch for either
    nvml.fail_device(1)
    kernel_log = tmp_path / "kmsg.log"
    kernel_log.write_text(
        f"6,1,1,-;NVRM: GPU {done.pci}: GPU reset complete\n6,2,2,-;NVRM: GPU {failed.pci}: GPU reset did not complete\n"
    )
    node = Node(cluster, nvml, kernel_log, ResetAcknowledgements(caught_up=False), RecordingSink())
    monitor = KernelLogMonitor(
        cluster.node,
        node.sink,
        gpu_map=GpuMap({gpu.pci: gpu.uuid for gpu in nvml.gpus}),
        boot_id_path=tmp_path / "boot_id",
        on_event=node.acknowledgements.observe,
        on_caught_up=node.acknowledgements.caught_up,
    )
    async with node.watcher(CountingResetter(), settings=replace(FAST, confirm_timeout=timedelta(seconds=2))):
        order = await cluster.order([done.uuid, failed.uuid])
        await asyncio.sleep(0.2)
        assert node.handler is not None and node.handler.resets == 0, "the reset waits until the backlog is read"
        source = KernelLog(kernel_log, KernelLogFormat.FILE, ReadFrom.START, poll_interval=timedelta(seconds=0.02))
        task = asyncio.create_task(monitor.run(source))
        try:
            status, _, report = await cluster.report(order.id)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert node.handler.resets == 1
    assert len(node.sink.events) == 2, "the backlog was read and reported"
    assert status == "False" and "not confirmed" in report.detail, report.detail
