"""When a recorded line was written, from the stamp it carries.

Wall-clock stamps: ISO 8601 (journald's short-iso, RFC 5424 syslog, `dmesg --time-format iso`),
`dmesg -T`'s `[Mon Nov 23 02:07:01 2026]` and BSD syslog's `Nov 23 02:07:01` (which names no year:
the caller says which). Stamps that count from the boot (a /dev/kmsg record's
microseconds, dmesg's `[ 4821.337154]`) count from `EPOCH`. A line without a stamp was written when
the line before it was.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# Where stamps that count from the boot count from, and the year of a BSD stamp before any other.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PRIORITY = r"(?:<[0-9]{1,3}>)?"
_ISO = re.compile(
    _PRIORITY
    + r"\[?([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2}:[0-9]{2})([.,][0-9]{1,9})?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_DMESG_T = re.compile(r"\[(?:[A-Z][a-z]{2}) ([A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4})\]")
_BSD = re.compile(_PRIORITY + r"([A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?\s")
_KMSG = re.compile(_PRIORITY + r"[0-9]{1,4},[0-9]{1,20},([0-9]{1,20}),")
_UPTIME = re.compile(r"\[\s*([0-9]{1,10}\.[0-9]{1,9})\]")


def line_time(line: str, before: datetime, year: int) -> datetime:
    """When `line` was written; `before` is when the line before it was (also for a stamp that names
    no date there is: `Feb 30`), `year` the year of a stamp that names none."""
    try:
        return _stamp(line, before, year)
    except ValueError:
        return before


def _stamp(line: str, before: datetime, year: int) -> datetime:
    if iso := _ISO.match(line):
        day, clock, fraction, zone = iso.groups()
        zone = (zone or "Z").replace("Z", "+00:00")
        if len(zone) == 5:  # +0000
            zone = f"{zone[:3]}:{zone[3:]}"
        fraction = (fraction or "").replace(",", ".")[:7]
        return datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}").astimezone(UTC)
    if kmsg := _KMSG.match(line):
        return EPOCH + timedelta(microseconds=int(kmsg.group(1)))
    if stamped := _DMESG_T.search(line[:64]):
        return datetime.strptime(" ".join(stamped.group(1).split()), "%b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    if bsd := _BSD.match(line):
        written = datetime.strptime(f"{year} {' '.join(bsd.group(1).split())}", "%Y %b %d %H:%M:%S")
        return written.replace(tzinfo=UTC) + timedelta(seconds=float(f"0{bsd.group(2) or ''}"))
    if uptime := _UPTIME.search(line[:64]):
        return EPOCH + timedelta(seconds=float(uptime.group(1)))
    return before
