"""The simulator's /dev/kmsg: what the kernel's devkmsg_write makes of a write, and the FIFO that plays it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuheal.tools.injector.gpus import discover_gpus
from gpuheal.tools.injector.kmsg import write_record
from gpuheal_sim.fake_nvml import fake_gpu_info
from gpuheal_sim.injection import SimulatedKmsg, driver_gpu_tree, kmsg_record


@pytest.mark.parametrize(
    ("write", "record"),
    [
        # User space gets the user facility (1) unless it names another: <3> reads back as 11.
        (b"<3>NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, x\n", "11,7,99,-;NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, x"),
        (b"<30>systemd: up\n", "30,7,99,-;systemd: up"),
        # No priority: the default level 4; a malformed one is text.
        (b"plain\n", "12,7,99,-;plain"),
        (b"<x>text\n", "12,7,99,-;<x>text"),
        (b"<3 text\n", "12,7,99,-;<3 text"),
        # devkmsg_write (kernel/printk/printk.c) reads the number with simple_strtoul, which takes no
        # digits as 0: `<>` is level 0, its prefix stripped.
        (b"<>text\n", "8,7,99,-;text"),
        # What /dev/kmsg's reader escapes.
        (b"<3>a\tb\\c\xc3\xa9", "11,7,99,-;a\\x09b\\x5cc\\xc3\\xa9"),
    ],
)
def test_a_write_becomes_the_record_the_kernel_would_make(write: bytes, record: str) -> None:
    assert kmsg_record(write, 7, 99) == record + "\n"


def test_an_oversized_write_is_refused() -> None:
    with pytest.raises(ValueError, match="over the kernel's 976"):
        kmsg_record(b"<3>" + b"x" * 974, 1, 1)
    assert kmsg_record(b"<3>" + b"x" * 973, 1, 1).startswith("11,1,1,-;xxx")


async def test_the_fifo_turns_each_write_into_a_record_of_the_kernel_log(tmp_path: Path) -> None:
    kernel_log = tmp_path / "kmsg.log"
    kernel_log.write_text("6,1,5,-;earlier\n")
    async with SimulatedKmsg(tmp_path / "kmsg", kernel_log) as kmsg:
        await asyncio.to_thread(write_record, kmsg.path, "<3>NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, first")
        await asyncio.to_thread(write_record, kmsg.path, "<4>second")
        # Not through the injector's checks: a record over the kernel's limit.
        with kmsg.path.open("w") as raw:
            raw.write("<3>" + "y" * 2000 + "\n")
        await asyncio.to_thread(write_record, kmsg.path, "<6>third")
        while kmsg.records + kmsg.refused < 4:
            await asyncio.sleep(0.01)

    lines = kernel_log.read_text().splitlines()
    assert [line.split(";", 1)[1] for line in lines] == [
        "earlier",
        "NVRM: NVRM: Xid (PCI:0000:3b:00.0): 79, first",
        "second",
        "third",
    ]
    assert [line.split(",")[:2] for line in lines[1:]] == [["11", "1"], ["12", "2"], ["14", "3"]]
    assert kmsg.refused == 1
    assert not kmsg.path.exists(), "the FIFO goes with the block"


def test_the_driver_tree_names_the_fake_gpus_the_node_agent_sees(tmp_path: Path) -> None:
    root = driver_gpu_tree(tmp_path / "gpus", "gpu-node-001", 3)

    assert discover_gpus(root) == {index: fake_gpu_info("gpu-node-001", index).pci_bus_id for index in range(3)}
