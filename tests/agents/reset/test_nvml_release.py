"""`NvmlProvider.released()`: NVML let go for a reset (nvidia-smi refuses a GPU any NVML client holds)."""

from __future__ import annotations

import pytest

from gpuheal.agents.nvml.interface import NvmlCallError
from gpuheal.domain.actions import RecommendedAction
from tests.agents.nvml.conftest import RigFactory, eventually, make_rig, server, stub

__all__ = ["make_rig", "server", "stub"]  # the NVML suite's fixtures, used here


async def test_released_nvml_is_shut_down_and_taken_up_again_where_it_left_off(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.nvml.set_remapped_rows(3, correctable=1, pending=True)
    await rig.provider.poll_once()
    assert rig.sink.checks() == [("NvmlRowRemapPending", False)]

    async with rig.provider.released():
        assert rig.nvml.shutdown_calls == 1
        with pytest.raises(NvmlCallError):
            rig.nvml.device_count()  # nobody holds NVML now
        rig.nvml.reset_gpu(3)  # what nvidia-smi does meanwhile

    assert rig.nvml.init_calls == 2
    # The provider remembers what it reported: the cleared signal is reported healthy.
    await rig.provider.poll_once()
    assert rig.sink.checks()[1:] == [("NvmlRowRemapPending", True)]
    # Both loops run again: an XID after the reset is reported.
    rig.nvml.inject_xid(1, 48)
    await eventually(lambda: len(rig.sink.events) == 3)
    xid = rig.sink.events[2]
    assert (xid.is_healthy, xid.gpu_uuids, xid.action) == (False, rig.uuid(1), RecommendedAction.COMPONENT_RESET)


async def test_a_provider_stopped_while_released_stays_stopped(make_rig: RigFactory) -> None:
    rig = await make_rig()
    async with rig.provider.released():
        await rig.provider.stop()
    assert (rig.nvml.init_calls, rig.nvml.shutdown_calls) == (1, 1)


async def test_nvml_that_does_not_come_back_leaves_the_provider_stopped(make_rig: RigFactory) -> None:
    rig = await make_rig()
    async with rig.provider.released():
        rig.nvml.available = False  # the reset took the driver with it
    assert rig.nvml.init_calls == 2
    await rig.provider.stop()  # still stops cleanly
    assert rig.nvml.shutdown_calls == 1
