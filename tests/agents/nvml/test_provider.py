"""NvmlProvider against a real Device API server over its unix socket, with FakeNvml underneath.

The provider registers GPUs in the Device API and reports what it sees as health events; it writes
no GPU status after registration (the publisher does). The tests read the Device API only through
gRPC, as consumers and other writers would, and check the events that reach the sink.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from gpuheal.agents.device_api import DeviceApiServer
from gpuheal.agents.nvml import NvmlProvider, NvmlUnavailableError, Signal, XidEvent
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import GPU_SERIAL, GPU_UUID, PCI, Entity, HealthEvent
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from gpuheal_sim.fake_nvml import FakeNvml

from .conftest import FIXED_NOW, NODE, RecordingSink, Rig, RigFactory, eventually, healthy

COMPONENT_RESET = RecommendedAction.COMPONENT_RESET
NONE = RecommendedAction.NONE


async def snapshot(stub: gpu_pb2_grpc.GpuServiceAsyncStub) -> dict[str, gpu_pb2.Gpu]:
    """Every GPU in the Device API by name, to show the provider wrote nothing after registering."""
    return {g.metadata.name: g for g in (await stub.ListGpus(gpu_pb2.ListGpusRequest())).gpu_list.items}


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
    listed = (await snapshot(stub)).values()
    assert sorted((g.metadata.name, g.spec.uuid) for g in listed) == sorted(
        (g.uuid.lower(), g.uuid) for g in rig.nvml.gpus
    )
    for gpu in listed:
        cond = healthy(gpu)
        assert (cond.status, cond.reason) == ("True", "NvmlRegistered")
        assert cond.last_transition_time.ToDatetime(FIXED_NOW.tzinfo) == FIXED_NOW
        assert gpu.status.recommended_action == ""
    assert rig.sink.events == []  # a clean node reports nothing


async def test_a_fatal_xid_reaches_the_sink_and_the_provider_writes_no_status(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    rig = await make_rig()
    before = await snapshot(stub)
    injected = rig.nvml.inject_xid(2, 79)
    await eventually(lambda: len(rig.sink.events) == 1)
    event = rig.sink.events[0]
    info = rig.nvml.gpus[2]
    assert (event.node, event.agent, event.check_name) == (NODE, "gpuheal-nvml", "NvmlXidEvent")
    assert (event.is_fatal, event.is_healthy, event.action) == (True, False, RecommendedAction.RESTART_BM)
    assert event.xid == 79 and event.needs_remediation
    assert info.serial, "the fake board has a serial, as NVML reports for data-centre GPUs"
    assert event.entities == (
        Entity(type=GPU_UUID, value=info.uuid),
        Entity(type=PCI, value="0000:02:00.0"),
        Entity(type=GPU_SERIAL, value=info.serial),
    )
    assert event.to_fault().gpu_serials == (info.serial,), "the serial reaches the remediation"
    assert event.generated_at == injected.timestamp
    assert "XID 79" in event.message and info.uuid in event.message
    assert await snapshot(stub) == before  # the publisher, not the provider, writes the condition


async def test_an_application_xid_is_reported_but_not_fatal(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.inject_xid(1, 13)
    await eventually(lambda: len(rig.sink.events) == 1)
    event = rig.sink.events[0]
    assert (event.is_fatal, event.is_healthy, event.action, event.xid) == (False, False, NONE, 13)
    assert event.gpu_uuids == rig.uuid(1)
    assert not event.needs_remediation


async def test_a_double_bit_ecc_error_is_reported_once_and_its_recovery_too(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    rig = await make_rig()
    before = await snapshot(stub)
    rig.nvml.set_ecc_dbe(1, 2)
    await rig.provider.poll_once()
    assert rig.sink.summary() == [("NvmlEccDoubleBitError", True, False, COMPONENT_RESET, rig.uuid(1))]
    assert rig.sink.events[0].error_codes == ("ECC_DBE_VOLATILE",)

    await rig.provider.poll_once()  # still bad: no second event
    assert len(rig.sink.events) == 1

    rig.nvml.reset_gpu(1)
    await rig.provider.poll_once()
    assert rig.sink.summary()[1:] == [("NvmlEccDoubleBitError", False, True, NONE, rig.uuid(1))]
    assert "(recovered)" in rig.sink.events[1].message
    assert await snapshot(stub) == before  # nothing written by the provider either way


async def test_a_row_remapping_failure_asks_a_person_and_recovers_only_when_replaced(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_remapped_rows(0, uncorrectable=4, failure=True)
    await rig.provider.poll_once()
    assert rig.sink.summary() == [("NvmlRowRemapFailure", True, False, RecommendedAction.CONTACT_SUPPORT, rig.uuid(0))]
    rig.nvml.reset_gpu(0)  # a reset does not bring spare rows back
    await rig.provider.poll_once()
    assert len(rig.sink.events) == 1
    rig.nvml.clear(0)  # the GPU was replaced
    await rig.provider.poll_once()
    assert rig.sink.summary()[1:] == [("NvmlRowRemapFailure", False, True, NONE, rig.uuid(0))]


async def test_pending_retirement_and_remapping_ask_for_a_gpu_reset(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_retired_pages_pending(3, True)
    rig.nvml.set_remapped_rows(3, correctable=1, pending=True)
    await rig.provider.poll_once()
    assert sorted(rig.sink.summary()) == [
        ("NvmlRetiredPagesPending", True, False, COMPONENT_RESET, rig.uuid(3)),
        ("NvmlRowRemapPending", True, False, COMPONENT_RESET, rig.uuid(3)),
    ]
    rig.nvml.reset_gpu(3)
    await rig.provider.poll_once()
    assert sorted(rig.sink.summary()[2:]) == [
        ("NvmlRetiredPagesPending", False, True, NONE, rig.uuid(3)),
        ("NvmlRowRemapPending", False, True, NONE, rig.uuid(3)),
    ]


async def test_a_gpu_lost_while_polled_needs_a_reboot_and_recovers_once_it_answers(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.fail_device(1)
    await rig.provider.poll_once()
    assert rig.sink.summary() == [("NvmlGpuLost", True, False, RecommendedAction.RESTART_BM, rig.uuid(1))]
    await rig.provider.poll_once()  # still lost: no second event
    assert len(rig.sink.events) == 1
    rig.nvml.reset_gpu(1)
    await rig.provider.poll_once()
    assert rig.sink.summary()[1:] == [("NvmlGpuLost", False, True, NONE, rig.uuid(1))]


async def test_a_gpu_lost_at_enumeration_does_not_stop_the_start_and_is_reported(
    server: DeviceApiServer, stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    nvml = FakeNvml(NODE, count=4)
    nvml.fail_device(2)
    counts: list[int] = []

    def opened(count: int) -> None:
        counts.append(count)
        server.mark_ready()

    rig = await make_rig(nvml, on_registered=opened)
    assert counts == [3] and server.ready
    assert rig.provider.gpus == tuple(nvml.gpus[i] for i in (0, 1, 3))
    assert sorted(await snapshot(stub)) == sorted(nvml.gpus[i].uuid.lower() for i in (0, 1, 3))
    assert rig.sink.summary() == [("NvmlGpuLost", True, False, RecommendedAction.RESTART_BM, ())]
    event = rig.sink.events[0]
    assert event.needs_remediation and event.metadata == {"gpu_index": "2"} and event.entities == ()
    await rig.provider.poll_once()  # the GPUs that answered are polled as usual
    assert len(rig.sink.events) == 1
    rig.nvml.set_ecc_dbe(3, 1)
    await rig.provider.poll_once()
    assert rig.sink.summary()[1:] == [("NvmlEccDoubleBitError", True, False, COMPONENT_RESET, rig.uuid(3))]


async def test_unsupported_signals_are_unknown_and_never_flip_health(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_unsupported(3, *Signal)
    await rig.provider.poll_once()
    assert rig.sink.events == []

    # A fault seen while the signal was readable is not forgotten when it stops being readable.
    rig.nvml.set_remapped_rows(0, failure=True)
    await rig.provider.poll_once()
    rig.nvml.set_remapped_rows(0)
    rig.nvml.set_unsupported(0, Signal.REMAPPED_ROWS)
    await rig.provider.poll_once()
    assert rig.sink.checks() == [("NvmlRowRemapFailure", False)]


async def test_registering_again_after_a_restart_leaves_the_recorded_status(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    nvml = FakeNvml(NODE, count=4)
    first = await make_rig(nvml)
    # The publisher records a fault on GPU 0, as it does for the provider's events.
    gpu = await first.gpu(0)
    cond = healthy(gpu)
    cond.status, cond.reason = "False", "NvmlXidEvent"
    gpu.status.recommended_action = "RESTART_BM"
    await stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name=gpu.metadata.name, status=gpu.status))
    await first.provider.stop()
    before = await snapshot(stub)

    counts: list[int] = []
    second = await make_rig(nvml, on_registered=counts.append)
    assert counts == [4]
    assert await snapshot(stub) == before  # ALREADY_EXISTS for all four: nothing wiped by the restart
    assert (healthy(await second.gpu(0)).status, (await second.gpu(0)).status.recommended_action) == (
        "False",
        "RESTART_BM",
    )


async def test_a_name_taken_already_exists_is_accepted(
    stub: gpu_pb2_grpc.GpuServiceAsyncStub, make_rig: RigFactory
) -> None:
    nvml = FakeNvml(NODE, count=2)
    taken = gpu_pb2.Gpu(metadata=gpu_pb2.ObjectMeta(name=nvml.gpus[1].uuid.lower()), spec=gpu_pb2.GpuSpec(uuid="x"))
    await stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=taken))
    rig = await make_rig(nvml)  # CreateGpu answers ALREADY_EXISTS for GPU 1: not an error
    assert (await rig.gpu(1)).spec.uuid == "x" and len((await rig.gpu(1)).status.conditions) == 0
    assert healthy(await rig.gpu(0)).status == "True"
    nvml.inject_xid(1, 79)
    await eventually(lambda: len(rig.sink.events) == 1)
    assert rig.sink.summary() == [("NvmlXidEvent", True, False, RecommendedAction.RESTART_BM, rig.uuid(1))]


async def test_the_poll_loop_runs_on_its_own(make_rig: RigFactory) -> None:
    rig = await make_rig(poll_interval=timedelta(seconds=0.02))
    rig.nvml.set_ecc_dbe(0, 1)
    await eventually(lambda: rig.sink.checks() == [("NvmlEccDoubleBitError", False)])


async def test_a_failing_sink_does_not_stop_the_xid_loop(make_rig: RigFactory) -> None:
    class Broken(RecordingSink):
        async def submit(self, event: HealthEvent) -> None:
            await super().submit(event)
            raise RuntimeError("sink down")

    broken = Broken()
    rig: Rig = await make_rig()
    rig.provider._sink = broken  # swapped in after start: the loops read it per event
    rig.nvml.inject_xid(0, 79)
    rig.nvml.inject_xid(1, 79)
    await eventually(lambda: len(broken.events) == 2)
    assert [e.gpu_uuids for e in broken.events] == [rig.uuid(0), rig.uuid(1)]


def test_its_intervals_are_positive_durations(server: DeviceApiServer) -> None:
    nvml, sink = FakeNvml(NODE, count=1), RecordingSink()
    with pytest.raises(ValueError, match="poll_interval and event_wait must be positive"):
        NvmlProvider(nvml, server.socket_path, sink, NODE, poll_interval=timedelta(0))
    with pytest.raises(ValueError, match="poll_interval and event_wait must be positive"):
        NvmlProvider(nvml, server.socket_path, sink, NODE, event_wait=timedelta(seconds=-1))


async def test_stop_is_prompt_and_shuts_nvml_down(make_rig: RigFactory) -> None:
    # An hour between polls: only stop() waking the loops can end them before the hang guard below.
    rig = await make_rig(event_wait=timedelta(seconds=0.3), poll_interval=timedelta(hours=1))
    loops = list(rig.provider._tasks)
    assert len(loops) == 2 and not any(loop.done() for loop in loops)
    await asyncio.wait_for(rig.provider.stop(), timeout=60)  # a hang guard, not a timing assertion
    # Both loops ended on their own because of stop(): not cancelled, no error, nothing left running.
    assert all(loop.done() and not loop.cancelled() and loop.exception() is None for loop in loops)
    assert rig.provider._tasks == []
    assert rig.nvml.shutdown_calls == 1
    await rig.provider.stop()  # idempotent
    assert rig.nvml.shutdown_calls == 1


async def test_without_nvml_start_fails_clearly_registers_nothing_and_leaks_no_thread(
    server: DeviceApiServer, stub: gpu_pb2_grpc.GpuServiceAsyncStub
) -> None:
    nvml = FakeNvml(available=False)
    provider = NvmlProvider(nvml, server.socket_path, RecordingSink(), NODE)
    with pytest.raises(NvmlUnavailableError, match="NVML is not available on this machine"):
        await provider.start()
    with pytest.raises(RuntimeError, match="shutdown"):
        provider._executor.submit(time.sleep, 0)  # the executor was shut down, not leaked
    assert nvml.shutdown_calls == 0  # NVML never came up: nothing to shut down
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
    provider = NvmlProvider(
        nvml,
        server.socket_path,
        RecordingSink(),
        NODE,
        event_wait=timedelta(seconds=0.3),
        poll_interval=timedelta(hours=1),
    )
    await provider.start()
    await eventually(lambda: nvml.waiting)
    for task in provider._tasks:  # as an event loop tearing everything down would
        task.cancel()
    await provider.stop()
    assert nvml.waiting_at_shutdown is False and nvml.shutdown_calls == 1
