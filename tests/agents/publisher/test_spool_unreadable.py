"""Spool entries that cannot be read are moved aside (`*.bad`), and the entries behind them go on."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gpuheal.agents.publisher import spool as spool_module
from gpuheal.agents.publisher.spool import READ_ATTEMPTS, Spool, SpoolLimits
from gpuheal.agents.publisher.spool_files import read_entry
from tests.agents.publisher.events import fatal_xid, non_fatal
from tests.agents.publisher.test_spool import drain

PLANTED = "000000000001.a.json"


def directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("a person's file")


def dangling_symlink(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def fifo(path: Path) -> None:
    os.mkfifo(path)  # reading it would wait for a writer for ever


def bad_json(path: Path) -> None:
    path.write_text("{not json")


def not_a_health_event(path: Path) -> None:
    path.write_text('{"id": 7}')


def not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00")


@pytest.mark.parametrize("plant", [directory, dangling_symlink, fifo, bad_json, not_a_health_event, not_utf8])
def test_an_unreadable_entry_is_moved_aside_and_later_entries_come_out(
    tmp_path: Path, plant: Callable[[Path], None]
) -> None:
    plant(tmp_path / PLANTED)
    spool = Spool(tmp_path)
    fault = fatal_xid("n")
    spool.append(fault, actionable=True)

    assert drain(spool) == [fault.id]
    assert not os.path.lexists(tmp_path / PLANTED)
    assert os.path.lexists(tmp_path / f"{PLANTED}.bad"), "kept for a person to inspect"
    assert (spool.stats().moved_aside, spool.stats().faults_aside) == (1, 1), "a fault's entry waits for a person"

    # Never loaded again, and a new entry never takes its name.
    reopened = Spool(tmp_path)
    assert len(reopened) == 0
    later = fatal_xid("n")
    reopened.append(later, actionable=True)
    assert drain(reopened) == [later.id]
    assert os.path.lexists(tmp_path / f"{PLANTED}.bad")


def failing(monkeypatch: pytest.MonkeyPatch, path: Path, code: int, times: int) -> None:
    """Reads of `path` fail with `code` the first `times` times; the real read otherwise."""

    def read(entry: Path) -> bytes:
        nonlocal times
        if entry == path and times:
            times -= 1
            raise OSError(code, os.strerror(code), str(entry))
        return read_entry(entry)

    monkeypatch.setattr(spool_module, "read_entry", read)


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def two_entries(tmp_path: Path, *, actionable: bool = True, clock: Clock | None = None) -> tuple[Spool, str, str, Path]:
    spool = Spool(tmp_path, clock=clock or Clock())
    first, second = (fatal_xid("n"), fatal_xid("n")) if actionable else (non_fatal("n"), non_fatal("n"))
    spool.append(first, actionable=actionable)
    spool.append(second, actionable=actionable)
    return spool, first.id, second.id, sorted(tmp_path.glob("*.json"))[0]


def test_the_read_retry_window_is_a_duration_that_must_not_be_negative() -> None:
    assert SpoolLimits(read_retry=timedelta(0)).read_retry == timedelta(0)
    with pytest.raises(ValueError, match="spool read_retry must not be negative"):
        SpoolLimits(read_retry=timedelta(seconds=-1))


def test_a_fault_that_fails_to_read_is_retried_for_the_whole_window_then_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    spool, _, second, first_path = two_entries(tmp_path, clock=clock)
    assert spool.limits.read_retry == timedelta(minutes=10)
    failing(monkeypatch, first_path, errno.EIO, times=1000)
    for now in (0, 1, 2, 4, 8, 16, 60, 300, 599):  # far more reads than READ_ATTEMPTS
        clock.now = now
        with pytest.raises(OSError, match="Input/output error"):
            spool.head()
    assert spool.stats().faults_aside == 0
    clock.now = 600
    assert drain(spool) == [second]
    assert (tmp_path / f"{first_path.name}.bad").exists()
    assert (spool.stats().moved_aside, spool.stats().faults_aside) == (1, 1)
    assert Spool(tmp_path).stats().faults_aside == 1, "it still waits for a person after a restart"


def test_a_disk_flaky_for_a_few_seconds_costs_no_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five failed reads over 7.5 s (the lane's backoff) moved a fatal fault aside for good."""
    clock = Clock()
    spool, first, second, first_path = two_entries(tmp_path, clock=clock)
    failing(monkeypatch, first_path, errno.EIO, times=2 * READ_ATTEMPTS)
    for attempt in range(2 * READ_ATTEMPTS):
        clock.now = 1.5 * attempt
        with pytest.raises(OSError, match="Input/output error"):
            spool.head()
    assert drain(spool) == [first, second]
    assert (spool.stats().moved_aside, spool.stats().faults_aside) == (0, 0)


def test_an_io_error_on_chatter_is_retried_a_few_times_then_the_entry_is_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, _, second, first_path = two_entries(tmp_path, actionable=False)
    failing(monkeypatch, first_path, errno.EIO, times=100)
    for _ in range(READ_ATTEMPTS - 1):
        with pytest.raises(OSError, match="Input/output error"):
            spool.head()
    assert drain(spool) == [second]
    assert (tmp_path / f"{first_path.name}.bad").exists()
    assert (spool.stats().moved_aside, spool.stats().faults_aside) == (1, 0), "no fault waits for a person"


def test_an_io_error_that_clears_up_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool, first, second, first_path = two_entries(tmp_path)
    failing(monkeypatch, first_path, errno.EIO, times=READ_ATTEMPTS - 1)
    for _ in range(READ_ATTEMPTS - 1):
        with pytest.raises(OSError, match="Input/output error"):
            spool.head()
    assert drain(spool) == [first, second]
    assert spool.stats().moved_aside == 0


def test_a_process_short_of_file_descriptors_never_moves_an_entry_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, first, second, first_path = two_entries(tmp_path)
    failing(monkeypatch, first_path, errno.EMFILE, times=3 * READ_ATTEMPTS)
    for _ in range(3 * READ_ATTEMPTS):
        with pytest.raises(OSError, match="Too many open files"):
            spool.head()
    assert drain(spool) == [first, second]
    assert not list(tmp_path.glob("*.bad"))


def test_an_entry_it_may_not_read_is_moved_aside_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES (chmod 000 for an agent without CAP_DAC_OVERRIDE, as the chart runs it; injected, since
    the tests may run as root, whom chmod does not stop)."""
    spool, _, second, first_path = two_entries(tmp_path)
    failing(monkeypatch, first_path, errno.EACCES, times=1)
    assert drain(spool) == [second]
    assert (tmp_path / f"{first_path.name}.bad").exists()


def test_a_new_entry_never_takes_the_name_of_one_moved_aside(tmp_path: Path) -> None:
    Spool(tmp_path).append(fatal_xid("n"), actionable=True)  # 000000000001.a.json
    (tmp_path / "000000000007.a.json.bad").write_text("moved aside by an earlier run")
    reopened = Spool(tmp_path)
    reopened.append(fatal_xid("n"), actionable=True)
    assert (tmp_path / "000000000008.a.json").exists()
    assert (tmp_path / "000000000007.a.json.bad").read_text() == "moved aside by an earlier run"
