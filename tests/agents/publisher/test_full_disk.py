"""A 1 MiB spool disk that fills up while Temporal and the API server are down loses no fatal fault.

The disk is a real 1 MiB tmpfs where one can be mounted (root), and a stand-in of the same size in
front of the spool's real write everywhere; Temporal is the real dev server behind a TCP path the
test cuts and restores.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuheal.agents.publisher import DependencyUnavailable, Publisher, Verdict
from gpuheal.agents.publisher import spool as spool_module
from gpuheal.agents.publisher.spool import MIB
from gpuheal.domain.health import HealthEvent
from gpuheal_sim.demo.devserver import DevServer
from tests.agents.publisher.conftest import FAST, Stack
from tests.agents.publisher.disks import FullDisk
from tests.agents.publisher.events import GPU_A, GPU_B, fatal_xid, healthy
from tests.agents.publisher.outage import Outage


@pytest.fixture(params=["tmpfs", "stand-in"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB filesystem for the spool."""
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "stand-in":
        monkeypatch.setattr(spool_module, "write_durably", FullDisk(root, MIB))
        yield root
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the stand-in disk runs the same test")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "gpuheal-test-spool", str(root)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"no tmpfs here ({mounted.stderr.strip()}); the stand-in disk runs the same test")
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


class SwitchableNodes:
    """The Kubernetes side of the publisher (`NodeReporter`), away until `up` is set; counts what it got."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.conditions = 0
        self.recorded: list[str] = []

    async def set_gpu_condition(self, node: str, verdict: Verdict) -> None:
        self._reachable()
        self.conditions += 1

    async def record_event(self, event: HealthEvent) -> None:
        self._reachable()
        self.recorded.append(event.id)

    def _reachable(self) -> None:
        if not self.up.is_set():
            raise DependencyUnavailable("the API server is away")


async def test_a_full_one_mib_spool_with_temporal_down_loses_no_fatal_fault(
    stack: Stack, dev_server: DevServer, small_disk: Path
) -> None:
    node = stack.nodes[0]
    # Twice what the disk holds (a spool entry takes a 4 KiB block): healthy chatter, a fault in ten.
    events = [
        fatal_xid(node, GPU_A, message=f"XID 79 #{i}") if i % 10 == 9 else healthy(node, GPU_B) for i in range(500)
    ]
    faults = [event.id for event in events if event.is_fatal]
    chatter = [event.id for event in events if not event.is_fatal]
    nodes = SwitchableNodes()
    async with Outage(dev_server.address) as temporal:
        remediations = stack.remediations(address=temporal.address)
        async with Publisher(small_disk, nodes=nodes, remediations=remediations, settings=FAST) as publisher:
            for event in events:
                await publisher.submit(event)  # never raises, though the disk is full
            during = publisher.spool_stats()
            assert during["kubernetes"].refused > 0, "the disk filled up"
            assert during["temporal"].entries + during["temporal"].held == len(faults)
            held = sum(stats.held for stats in during.values())
            assert len(publisher.problems()) == (held > 0), "readiness fails while faults are held in memory"

            await temporal.restore()
            nodes.up.set()
            await asyncio.wait_for(publisher.wait_delivered(), 60)
            assert publisher.problems() == []

    assert [fault.event_id for fault in await stack.faults_signalled(node)] == faults, "each once, in order"
    # Each event delivered to the Kubernetes side writes the condition; a healthy one records an Event too.
    assert nodes.conditions - len(nodes.recorded) == len(faults), "every fault reached the node's condition"
    kubernetes = during["kubernetes"]
    assert len(nodes.recorded) + kubernetes.shed + kubernetes.refused == len(chatter)
    delivered = set(nodes.recorded)
    assert nodes.recorded == [event for event in chatter if event in delivered], "in order"
