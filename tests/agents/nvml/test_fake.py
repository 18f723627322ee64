"""FakeNvml: deterministic identities and the scripting that drives the provider tests."""

from __future__ import annotations

import threading

import pytest

from gpuheal.agents.nvml import (
    GpuLostError,
    HealthSignals,
    Nvml,
    NvmlCallError,
    NvmlUnavailableError,
    RemappedRows,
    Signal,
)
from gpuheal_sim.fake_nvml import FakeNvml, fake_gpu_info


def started(count: int = 4, node: str = "node-a") -> FakeNvml:
    nvml = FakeNvml(node, count=count)
    nvml.init()
    return nvml


def test_it_implements_the_interface() -> None:
    assert isinstance(FakeNvml(), Nvml)


def test_enumeration_is_deterministic_and_unique() -> None:
    nvml = started(count=8)
    infos = [nvml.device_info(i) for i in range(nvml.device_count())]
    assert nvml.device_count() == 8
    assert infos == [fake_gpu_info("node-a", i) for i in range(8)]
    assert infos == [started(count=8).device_info(i) for i in range(8)]  # same node, same identities
    assert [i.minor_number for i in infos] == list(range(8))
    assert infos[3].pci_bus_id == "00000000:03:00.0"
    assert infos[3].pci == "0000:03:00.0"
    assert all(i.uuid.startswith("GPU-") and len(i.uuid) == 40 for i in infos)
    other = started(count=8, node="node-b")
    assert not {i.uuid for i in infos} & {other.device_info(i).uuid for i in range(8)}


def test_identities_stay_unique_at_the_design_target_of_1024_gpus() -> None:
    infos = [fake_gpu_info("big", i) for i in range(1024)]
    assert len({i.uuid for i in infos}) == len({i.pci_bus_id for i in infos}) == len({i.serial for i in infos}) == 1024


def test_a_healthy_gpu_reads_all_signals_known_and_clean() -> None:
    assert started().health_signals(0) == HealthSignals(0, 0, False, RemappedRows(0, 0, False, False))


def test_scripted_signals_and_a_gpu_reset() -> None:
    nvml = started()
    nvml.set_ecc_dbe(1, 2)
    nvml.set_retired_pages_pending(1, True)
    nvml.set_remapped_rows(1, uncorrectable=3, pending=True, failure=True)
    assert nvml.health_signals(1) == HealthSignals(2, 2, True, RemappedRows(0, 3, True, True))
    assert nvml.health_signals(0).ecc_dbe_volatile == 0  # only GPU 1 changed
    nvml.reset_gpu(1)
    # A reset zeroes volatile counts and applies pending work; the lifetime count and a failure stay.
    assert nvml.health_signals(1) == HealthSignals(0, 2, False, RemappedRows(0, 3, False, True))
    nvml.clear(1)
    assert nvml.health_signals(1) == HealthSignals(0, 0, False, RemappedRows(0, 0, False, False))


def test_unsupported_signals_read_as_unknown() -> None:
    nvml = started()
    nvml.set_unsupported(2, Signal.ECC_DBE, Signal.REMAPPED_ROWS)
    assert nvml.health_signals(2) == HealthSignals(None, None, False, None)


def test_a_failed_gpu_raises_gpu_lost_until_reset() -> None:
    nvml = started()
    nvml.fail_device(0)
    with pytest.raises(GpuLostError, match="GPU 0"):
        nvml.health_signals(0)
    with pytest.raises(GpuLostError):
        nvml.device_info(0)
    nvml.reset_gpu(0)
    assert nvml.health_signals(0).ecc_dbe_volatile == 0


# Bounds that only stop a broken test from hanging; a waiter that is not woken waits far longer.
HANG_GUARD_S = 30.0
NEVER_S = 3600.0


class WaitObserved(threading.Condition):
    """A condition that tells the test when a thread is inside `wait` (its lock released, so anyone
    who takes the lock after `waiting` is set can only notify a thread that is already blocked)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def blocked_waiter(nvml: FakeNvml, timeout_s: float) -> tuple[threading.Thread, list[object]]:
    """A thread blocked in `wait_xid_event(timeout_s)`, and where its result will go."""
    observed = WaitObserved()
    nvml._cond = observed  # the fake's one lock and condition: every call takes it
    got: list[object] = []

    def wait() -> None:
        try:
            got.append(nvml.wait_xid_event(timeout_s))
        except Exception as error:  # recorded, so the test fails on it rather than losing it in the thread
            got.append(error)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    assert observed.waiting.wait(HANG_GUARD_S), "the waiter never blocked"
    return waiter, got


def test_an_injected_xid_wakes_a_blocked_waiter() -> None:
    nvml = started()
    nvml.register_xid_events()
    waiter, got = blocked_waiter(nvml, NEVER_S)
    injected = nvml.inject_xid(2, 79)
    waiter.join(HANG_GUARD_S)
    assert not waiter.is_alive(), "the injected event did not wake the waiter"
    assert got == [injected]
    assert injected.uuid == nvml.gpus[2].uuid and injected.xid == 79 and injected.index == 2


def test_wait_times_out_with_none_and_shutdown_wakes_a_waiter() -> None:
    nvml = started()
    nvml.register_xid_events()
    waiter, got = blocked_waiter(nvml, 0.05)
    waiter.join(HANG_GUARD_S)
    assert not waiter.is_alive(), "the wait did not time out"
    assert got == [None]  # timed out: nothing was injected and NVML is still up
    waiter, got = blocked_waiter(nvml, NEVER_S)
    nvml.shutdown()
    waiter.join(HANG_GUARD_S)
    assert not waiter.is_alive(), "shutdown did not wake the waiter"
    assert got == [None]


def test_gpus_without_xid_support_are_not_registered() -> None:
    nvml = started()
    nvml.set_xid_events_supported(1, False)
    assert nvml.register_xid_events() == (0, 2, 3)


def test_calls_before_init_and_an_unavailable_machine_fail_clearly() -> None:
    with pytest.raises(NvmlCallError, match="not initialised"):
        FakeNvml().device_count()
    with pytest.raises(NvmlUnavailableError, match=r"^NVML is not available on this machine: "):
        FakeNvml(available=False).init()
