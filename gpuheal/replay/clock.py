"""When a recorded line was written, from the stamp it carries, and where a node's boots begin.

Wall-clock stamps: ISO 8601 (journald's short-iso, RFC 5424 syslog, `dmesg --time-format iso`),
`dmesg -T`'s `[Mon Nov 23 02:07:01 2026]` and BSD syslog's `Nov 23 02:07:01`, which names no year
(the first is the caller's, and it moves on at New Year). The last two are the host's local time;
they are read as UTC. Stamps that count from the boot (a /dev/kmsg record's microseconds, dmesg's
`[ 4821.337154]`) count from `EPOCH` on a log's first boot, and from the last line before it on each
boot after (a boot is where they go back). A line without a stamp, or with one before the line ahead
of it, was written when that line was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Where stamps that count from the boot count from on a log's first boot.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PRIORITY = r"(?:<[0-9]{1,3}>(?:1 )?)?"
_ISO = re.compile(
    _PRIORITY
    + r"\[?([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2}:[0-9]{2})([.,][0-9]{1,9})?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_DMESG_T = re.compile(r"\[(?:[A-Z][a-z]{2}) ([A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4})\]")
_BSD = re.compile(_PRIORITY + r"([A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?\s")
_KMSG = re.compile(_PRIORITY + r"[0-9]{1,4},[0-9]{1,20},([0-9]{1,20}),")
_UPTIME = re.compile(r"\[\s*([0-9]{1,10}\.[0-9]{1,9})\]")
# The kernel's first line on every boot.
_BOOT_BANNER = "Linux version "
# A BSD stamp this far before the line ahead of it is in the next year.
_NEW_YEAR = timedelta(days=180)


@dataclass(frozen=True, slots=True)
class Stamp:
    """A line's stamp: wall-clock (`at`), or counting from the boot (`since_boot`)."""

    at: datetime | None = None
    since_boot: timedelta | None = None


def read_stamp(line: str, year: int) -> Stamp | None:
    """The stamp `line` carries, if any; `year` is the year of a stamp that names none."""
    try:
        return _stamp(line, year)
    except (ValueError, OverflowError):  # a date that does not exist (Feb 30), or one beyond the calendar
        return None


def _stamp(line: str, year: int) -> Stamp | None:
    if iso := _ISO.match(line):
        day, clock, fraction, zone = iso.groups()
        zone = (zone or "Z").replace("Z", "+00:00")
        if len(zone) == 3:  # +01
            zone += ":00"
        elif len(zone) == 5:  # +0100
            zone = f"{zone[:3]}:{zone[3:]}"
        fraction = (fraction or "").replace(",", ".")[:7]
        return Stamp(at=datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}").astimezone(UTC))
    if kmsg := _KMSG.match(line):
        return Stamp(since_boot=timedelta(microseconds=int(kmsg.group(1))))
    if stamped := _DMESG_T.search(line[:64]):
        return Stamp(at=datetime.strptime(" ".join(stamped.group(1).split()), "%b %d %H:%M:%S %Y").replace(tzinfo=UTC))
    if bsd := _BSD.match(line):
        written = datetime.strptime(f"{year} {' '.join(bsd.group(1).split())}", "%Y %b %d %H:%M:%S")
        return Stamp(at=written.replace(tzinfo=UTC) + timedelta(seconds=float(f"0{bsd.group(2) or ''}")))
    if uptime := _UPTIME.search(line[:64]):
        return Stamp(since_boot=timedelta(seconds=float(uptime.group(1))))
    return None


class NodeClock:
    """The times of one node's lines, in order, and the boots they begin."""

    def __init__(self, year: int) -> None:
        self._year = year
        self._last = EPOCH
        self._boot_began = EPOCH
        self._since_boot: timedelta | None = None
        self._lines = 0
        # Lines stamped before the line ahead of them (taken as written with it).
        self.backwards = 0

    def read(self, line: str) -> tuple[datetime, bool]:
        """When `line` was written, and whether a new boot begins with it."""
        self._lines += 1
        new_boot = _BOOT_BANNER in line and self._lines > 1
        stamp = read_stamp(line, self._year)
        at = self._last
        if stamp is not None and stamp.since_boot is not None:
            if self._since_boot is not None and (stamp.since_boot < self._since_boot or new_boot):
                new_boot, self._boot_began = True, self._last
            self._since_boot = stamp.since_boot
            at = self._later(self._boot_began, stamp.since_boot)
        elif stamp is not None and stamp.at is not None:
            at = stamp.at
            if at < self._last - _NEW_YEAR and self._year == at.year:  # syslog's Dec 31, then Jan 1
                self._year += 1
                next_year = read_stamp(line, self._year)
                at = next_year.at if next_year is not None and next_year.at is not None else at
        if at < self._last:
            self.backwards += 1
            at = self._last
        self._last = at
        return at, new_boot

    @staticmethod
    def _later(began: datetime, since: timedelta) -> datetime:
        try:
            return began + since
        except OverflowError:
            return began
