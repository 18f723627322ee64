"""NvmlProvider against a real Device API server over its unix socket, with FakeNvml underneath.

The tests read and write the Device API only through gRPC, as consumers and other writers would.
"""

from __future__ import annotations

import time

import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.nvml import FakeNvml, NvmlProvider, NvmlUnavailableError, Signal, XidEvent
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import GPU_UUID, PCI, Entity, HealthEvent
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc

from .conftest import FIXED_NOW, NODE, RecordingSink, RigFactory, eventually, healthy


async def test_every_gpu_is_registered_and_readiness_is_reported(
    server: DeviceApiServer, stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    counts: list[int] = []

    def opened(count: int) -> None:
        counts.append(count)
        server.mark_ready()

    assert not server.ready
    rig = await make_rig(on_registered=opened)
    assert counts == [4] and server.ready
    assert rig.provider.gpus == rig.nvml.gpus
    listed = (await stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list.items
    assert sorted((g.metadata.name, g.spec.uuid) for g in listed) == sorted(
        (g.uuid.lower(), g.uuid) for g in rig.nvml.gpus
    )
    for gpu in listed:
        assert (healthy(gpu).status, healthy(gpu).reason) == ("True", "NvmlRegistered")
    assert rig.sink.events == []  # a clean node reports nothing


async def test_a_fatal_xid_marks_that_gpu_unhealthy_and_reaches_the_sink(make_rig: RigFactory) -> None:
    rig = await make_rig()
    injected = rig.nvml.inject_xid(2, 79)
    await eventually(lambda: len(rig.sink.events) == 1)
    event = rig.sink.events[0]
    info = rig.nvml.gpus[2]
    assert (event.node, event.agent, event.check_name) == (NODE, "gpuheal-nvml", "NvmlXidEvent")
    assert (event.is_fatal, event.is_healthy, event.action) == (True, False, RecommendedAction.RESTART_BM)
    assert event.xid == 79 and event.needs_remediation
    assert event.entities == (Entity(type=GPU_UUID, value=info.uuid), Entity(type=PCI, value="0000:02:00.0"))
    assert event.generated_at == injected.timestamp
    gpu = await rig.gpu(2)
    cond = healthy(gpu)
    assert (cond.status, cond.reason) == ("False", "NvmlXidCriticalError")
    assert "XID 79" in cond.message
    assert cond.last_transition_time.ToDatetime(FIXED_NOW.tzinfo) == FIXED_NOW
    assert gpu.status.recommended_action == "RESTART_BM"
    assert [await rig.status_of(i) for i in (0, 1, 3)] == ["True"] * 3  # only the GPU that failed


async def test_an_application_xid_is_reported_but_not_fatal_and_the_gpu_stays_healthy(make_rig: RigFactory) -> None:
    rig = await make_rig()
    before = (await rig.gpu(1)).resource_version
    rig.nvml.inject_xid(1, 13)
    await eventually(lambda: len(rig.sink.events) == 1)
    event = rig.sink.events[0]
    assert (event.is_fatal, event.is_healthy, event.action, event.xid) == (False, False, RecommendedAction.NONE, 13)
    assert not event.needs_remediation
    after = await rig.gpu(1)
    assert healthy(after).status == "True" and after.resource_version == before  # nothing written


async def test_a_double_bit_ecc_increase_is_unhealthy_and_a_reset_makes_it_healthy(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_ecc_dbe(1, 2)
    await rig.provider.poll_once()
    assert rig.sink.checks() == [("NvmlEccDoubleBitError", False)]
    assert rig.sink.events[0].action is RecommendedAction.COMPONENT_RESET and rig.sink.events[0].is_fatal
    gpu = await rig.gpu(1)
    assert (healthy(gpu).status, healthy(gpu).reason) == ("False", "NvmlEccDoubleBitError")
    assert gpu.status.recommended_action == "COMPONENT_RESET"

    await rig.provider.poll_once()  # still bad: no second event, no write
    assert len(rig.sink.events) == 1 and (await rig.gpu(1)).resource_version == gpu.resource_version

    rig.nvml.reset_gpu(1)
    await rig.provider.poll_once()
    assert rig.sink.checks()[-1] == ("NvmlEccDoubleBitError", True)
    recovered = rig.sink.events[-1]
    assert (recovered.is_fatal, recovered.action) == (False, RecommendedAction.NONE)
    gpu = await rig.gpu(1)
    assert (healthy(gpu).status, healthy(gpu).reason, gpu.status.recommended_action) == ("True", "NvmlHealthy", "")


async def test_a_row_remapping_failure_asks_a_person_and_recovers_when_cleared(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_remapped_rows(0, uncorrectable=4, failure=True)
    await rig.provider.poll_once()
    assert rig.sink.checks() == [("NvmlRowRemapFailure", False)]
    assert rig.sink.events[0].action is RecommendedAction.CONTACT_SUPPORT
    gpu = await rig.gpu(0)
    assert (healthy(gpu).status, gpu.status.recommended_action) == ("False", "CONTACT_SUPPORT")
    rig.nvml.reset_gpu(0)  # a reset does not bring spare rows back
    await rig.provider.poll_once()
    assert await rig.status_of(0) == "False"
    rig.nvml.clear(0)  # the GPU was replaced
    await rig.provider.poll_once()
    assert await rig.status_of(0) == "True"
    assert rig.sink.checks()[-1] == ("NvmlRowRemapFailure", True)


async def test_pending_retirement_and_remapping_ask_for_a_gpu_reset(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_retired_pages_pending(3, True)
    rig.nvml.set_remapped_rows(3, correctable=1, pending=True)
    await rig.provider.poll_once()
    assert {e.check_name: e.action for e in rig.sink.events} == {
        "NvmlRetiredPagesPending": RecommendedAction.COMPONENT_RESET,
        "NvmlRowRemapPending": RecommendedAction.COMPONENT_RESET,
    }
    assert await rig.status_of(3) == "False"
    rig.nvml.reset_gpu(3)
    await rig.provider.poll_once()
    assert await rig.status_of(3) == "True"


async def test_a_lost_gpu_needs_a_reboot_and_is_healthy_once_it_answers(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.fail_device(1)
    await rig.provider.poll_once()
    assert rig.sink.checks() == [("NvmlGpuLost", False)]
    assert rig.sink.events[0].action is RecommendedAction.RESTART_BM
    assert healthy(await rig.gpu(1)).reason == "NvmlGpuLost"
    rig.nvml.reset_gpu(1)
    await rig.provider.poll_once()
    assert await rig.status_of(1) == "True"


async def test_unsupported_signals_are_unknown_and_never_flip_health(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_unsupported(3, *Signal)
    version = (await rig.gpu(3)).resource_version
    await rig.provider.poll_once()
    assert rig.sink.events == []
    gpu = await rig.gpu(3)
    assert healthy(gpu).status == "True" and gpu.resource_version == version

    # A fault seen while the signal was readable is not forgotten when it stops being readable.
    rig.nvml.set_remapped_rows(0, failure=True)
    await rig.provider.poll_once()
    rig.nvml.set_remapped_rows(0)
    rig.nvml.set_unsupported(0, Signal.REMAPPED_ROWS)
    await rig.provider.poll_once()
    assert await rig.status_of(0) == "False"
    assert rig.sink.checks() == [("NvmlRowRemapFailure", False)]


async def test_registering_again_after_a_restart_is_fine_and_keeps_the_recorded_fault(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    nvml = FakeNvml(NODE, count=4)
    first = await make_rig(nvml)
    nvml.inject_xid(0, 79)
    await eventually(lambda: first.has_status(0, "False"))
    await first.provider.stop()

    counts: list[int] = []
    second = await make_rig(nvml, on_registered=counts.append)
    assert counts == [4]
    assert len((await stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list.items) == 4
    assert healthy(await second.gpu(0)).reason == "NvmlXidCriticalError"  # not wiped by the restart
    await second.provider.clear(nvml.gpus[0].uuid)  # the GPU was repaired
    assert await second.status_of(0) == "True"


async def test_a_name_taken_already_exists_is_accepted_and_writes_read_afresh(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    nvml = FakeNvml(NODE, count=2)
    taken = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name=nvml.gpus[1].uuid.lower()), spec=gpu_pb2.GpuSpec(uuid="x"))
    await stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=taken))
    rig = await make_rig(nvml)  # CreateGpu answers ALREADY_EXISTS for GPU 1: not an error
    assert await rig.status_of(0) == "True" and await rig.status_of(1) == ""
    nvml.inject_xid(1, 79)
    await eventually(lambda: rig.has_status(1, "False"))  # no known version: GetGpu first


async def test_a_conflicting_write_is_retried_and_keeps_the_other_writers_condition(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    rig = await make_rig()
    gpu = await rig.gpu(2)
    gpu.status.conditions.add(type="DevicePluginAllocatable", status="True", reason="Other")
    # Another writer changes the GPU: the provider's remembered version is now stale.
    await stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=gpu.metadata.name, status=gpu.status))
    rig.nvml.set_ecc_dbe(2, 1)
    await rig.provider.poll_once()
    conditions = {c.type: c.status for c in (await rig.gpu(2)).status.conditions}
    assert conditions == {"Healthy": "False", "DevicePluginAllocatable": "True"}


async def test_the_poll_loop_runs_on_its_own(make_rig: RigFactory) -> None:
    rig = await make_rig(poll_interval_s=0.02)
    rig.nvml.set_ecc_dbe(0, 1)
    await eventually(lambda: rig.has_status(0, "False"))


async def test_a_failing_sink_does_not_stop_the_xid_loop(make_rig: RigFactory) -> None:
    class Broken(RecordingSink):
        async def submit(self, event: HealthEvent) -> None:
            await super().submit(event)
            raise RuntimeError("sink down")

    broken = Broken()
    rig = await make_rig()
    rig.provider._sink = broken  # swapped in after start: the loops read it per event
    rig.nvml.inject_xid(0, 79)
    rig.nvml.inject_xid(1, 79)
    await eventually(lambda: len(broken.events) == 2)
    assert await rig.status_of(1) == "False"


async def test_stop_is_prompt_and_shuts_nvml_down(make_rig: RigFactory) -> None:
    rig = await make_rig(event_wait_s=0.3)
    begun = time.monotonic()
    await rig.provider.stop()
    assert time.monotonic() - begun < 1.5
    assert rig.nvml.shutdown_calls == 1
    await rig.provider.stop()  # idempotent
    assert rig.nvml.shutdown_calls == 1


async def test_without_nvml_start_fails_clearly_and_registers_nothing(
    server: DeviceApiServer, stub: gpu_pb2_grpc.GpuServiceAsyncStub
) -> None:
    provider = NvmlProvider(FakeNvml(available=False), server.socket_path, RecordingSink(), NODE)
    with pytest.raises(NvmlUnavailableError, match="NVML is not available on this machine"):
        await provider.start()
    server.mark_ready()
    assert len((await stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list.items) == 0


async def test_nvml_is_never_shut_down_under_a_waiting_thread_even_if_the_loop_was_cancelled(
    server: DeviceApiServer,
) -> None:
    class Tracking(FakeNvml):
        waiting = False
        waiting_at_shutdown: bool | None = None

        def wait_xid_event(self, timeout_s: float) -> XidEvent | None:
            self.waiting = True
            try:
                time.sleep(timeout_s)  # a driver wait that shutdown does not interrupt
                return super().wait_xid_event(0)
            finally:
                self.waiting = False

        def shutdown(self) -> None:
            self.waiting_at_shutdown = self.waiting
            super().shutdown()

    nvml = Tracking(NODE, count=1)
    provider = NvmlProvider(nvml, server.socket_path, RecordingSink(), NODE, event_wait_s=0.3, poll_interval_s=3600)
    await provider.start()
    await eventually(lambda: nvml.waiting)
    for task in provider._tasks:  # as an event loop tearing everything down would
        task.cancel()
    await provider.stop()
    assert nvml.waiting_at_shutdown is False and nvml.shutdown_calls == 1
