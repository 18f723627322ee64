"""What the spool counts is what it keeps: sequence numbers stay unique, the index stays the size of
what it holds, and the memory hold keeps the bytes it counts."""

from __future__ import annotations

import errno
import tracemalloc
from pathlib import Path

import pytest

from gpuheal.agents.publisher import spool as spool_module
from gpuheal.agents.publisher.spool import Spool
from gpuheal.domain.health import Entity, HealthEvent
from tests.agents.publisher.disks import BrokenDisk, LostRename
from tests.agents.publisher.events import fatal_xid, non_fatal
from tests.agents.publisher.test_spool import drain, size_of


def on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("*.json"))


def test_a_write_that_failed_after_its_rename_uses_up_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(spool_module, "write_durably", LostRename())
        assert not spool.append(non_fatal("n"), actionable=False)  # refused: the disk said it failed
        refused_fault = fatal_xid("n")
        assert spool.append(refused_fault, actionable=True)  # held in memory
    fault = fatal_xid("n")
    assert spool.append(fault, actionable=True)
    names = [path.name.split(".")[0] for path in tmp_path.glob("*.json")]
    assert len(names) == len(set(names)), f"two entries share a number: {sorted(tmp_path.iterdir())}"

    # A restart before delivery: every fault comes back, and the budget counts what lies there.
    reopened = Spool(tmp_path)
    assert reopened.stats().bytes == on_disk(tmp_path)
    assert drain(reopened) == [refused_fault.id, fault.id], "the refused chatter's file is not left behind"
    assert on_disk(tmp_path) == 0 and reopened.stats().bytes == 0


def test_two_files_with_one_number_are_both_kept_in_a_fixed_order(tmp_path: Path) -> None:
    """Left by an earlier version that reused a number: neither overwrites the other."""
    fault, chatter = fatal_xid("n"), non_fatal("n")
    (tmp_path / "000000000001.n.json").write_text(chatter.model_dump_json())
    (tmp_path / "000000000001.a.json").write_text(fault.model_dump_json())
    spool = Spool(tmp_path)
    assert (len(spool), spool.stats().bytes) == (2, on_disk(tmp_path))
    later = fatal_xid("n")
    spool.append(later, actionable=True)
    assert drain(spool) == [fault.id, chatter.id, later.id]
    assert spool.stats().bytes == 0


def test_delivered_entries_leave_nothing_behind_in_the_index(tmp_path: Path) -> None:
    """A lane delivering through its spool (a backlog never quite drained) keeps no trace per event."""

    def cycle(count: int) -> None:
        for _ in range(count):
            spool.append(non_fatal("n"), actionable=False)  # a new event arrives mid-backlog
            head = spool.head()
            assert head is not None
            spool.remove(head[0])  # the oldest is delivered

    spool = Spool(tmp_path)
    spool.append(non_fatal("n"), actionable=False)
    cycle(100)  # warm the allocator
    only_spool = [tracemalloc.Filter(True, spool_module.__file__)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_spool)
        cycle(1000)
        after = tracemalloc.take_snapshot().filter_traces(only_spool)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(spool) == 1
    assert grown < 1000 * 8, f"the spool kept {grown} bytes more after 1,000 deliveries"


def detailed_fault(number: int) -> HealthEvent:
    """A fault with as much detail as monitors send: many small fields, which cost most as objects."""
    return fatal_xid(
        "n",
        entities=tuple(Entity(type="GPU_UUID", value=f"GPU-{number:08d}-{gpu}") for gpu in range(8)),
        metadata={f"key{key}": f"value {number}.{key}" for key in range(32)},
    )


def test_the_memory_hold_keeps_the_bytes_it_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults the disk refuses are kept as their JSON: what the hold counts is what memory holds."""
    monkeypatch.setattr(spool_module, "write_durably", BrokenDisk(errno.EIO))
    monkeypatch.setattr(
        spool_module.log, "disabled", True
    )  # the test runner keeps log records; they are not the spool's
    spool = Spool(tmp_path)
    counted = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(200):
            fault = detailed_fault(number)
            counted += size_of(fault)
            spool.append(fault, actionable=True)
        del fault
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = spool.stats()
    assert (stats.held, stats.held_bytes) == (200, counted)
    # The JSON, and a few hundred bytes of bookkeeping per fault (the objects took 7.7 times the JSON).
    assert kept < 1.5 * counted, f"{counted} bytes of faults held take {kept} bytes of memory"
    head = spool.head()
    assert head is not None and head[1] == detailed_fault(0).model_copy(update={"id": head[1].id})
