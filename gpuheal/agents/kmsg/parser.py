"""Kernel log lines → GPU events. Pure: no I/O, no clock, and it never raises on any input.

What it recognises, in the body of a kernel message:

- NVRM XID lines: `NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.`,
  the older form without the `PCI:` tag (`Xid (0000:3b:00): 13, ...`), the form without pid/name,
  and any run of repeated `NVRM:` prefixes (the fault injector writes `NVRM: NVRM: Xid ...`, because
  the kernel gives user-written /dev/kmsg records the user facility and journald then takes the first
  `NVRM:` as the syslog identifier).
- NVSwitch SXid lines that carry a severity: `nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, ...`
  and `..., Non-fatal, ...`. The detail lines that follow a header (`20034, Severity 1 Engine ...`,
  `20034, Data {...}`) are part of that report and yield nothing.
  An XID line cut off after its number, or after its `pid=` or `name=` field, still counts.
- The "GPU has fallen off the bus" report, which the driver writes as several lines::

      NVRM: GPU at PCI:0000:3b:00: GPU-6b3a1c3e-0b0e-4f7e-9a43-1c2d3e4f5a6b
      NVRM: GPU Board Serial Number: 1653723052734
      NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
      NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.

  XID 79 and the `GPU ...: GPU has fallen off the bus.` line (also the older
  `The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:1db4) installed in this system has fallen off the bus ...`)
  each make an `xid` event with code 79 and `fallen_off_bus` set (the XID line keeps its pid and
  process); `KmsgParser` folds the pair into one event and names the GPU from the
  `GPU at PCI:...: GPU-...` line.
- GPU reset acknowledgements, kind `gpu_reset`, recognised only when they say the reset succeeded:
  `NVRM: GPU 0000:3b:00.0: GPU reset complete` (also `completed`, `successful`, `succeeded`, `done`,
  `completed successfully`, `(secondary bus) completed in 812 ms`: nothing else may follow, and no
  other parenthetical, since `(partial)` or `(rc=-5)` may take the success back), and
  nvidia-smi's own report `GPU 00000000:3B:00.0 was successfully reset.` as it lands in the journal
  when a reset tool logs it (any syslog identifier: it is a recovery signal, never a fault).
- GPU reset failures, kind `gpu_reset_failed`: a `GPU ...: GPU reset ...` line that negates or reports
  a failure (`did not complete`, `was not successful`, `timed out before it completed`, `failed`,
  `aborted`, `with errors`, ...) and nvidia-smi's `was not successfully reset`. A failure is never an
  acknowledgement; a reset line that says neither (`GPU reset requested`) yields nothing.

Wrappings accepted around that body, alone or combined in this order: a syslog priority `<3>`, a raw
/dev/kmsg record header `3,812,6085126134786,-;`, a journald/syslog header (`Nov 23 02:07:01 host kernel: `,
`Nov 23 02:07:01.123456 ...`, ISO `2026-11-23T02:07:01+00:00 host kernel: `, or the identifier alone
with neither date nor host, `kernel: `; for NVRM and SXid lines the identifier must be `kernel` or
absent, or be the injector's `NVRM`), dmesg's `-x` level tag
(`kern  :err   : `) and a dmesg timestamp (`[ 4821.337154] `, `dmesg -T`'s `[Mon Nov 23 02:07:01 2026] `,
`dmesg --time-format iso`'s leading ISO stamp). /dev/kmsg continuation lines (` SUBSYSTEM=pci`) and
anything else yield nothing; so does an NVRM or SXid text quoted inside some other program's message.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from gpuheal.agents.gpu_identity import PCI_PATTERN, UUID_PATTERN, normalise_uuid, pci_key


class EventKind(StrEnum):
    """What a kernel log line reported."""

    XID = "xid"  # also XID 79 and the driver's other "fallen off the bus" lines (`fallen_off_bus`)
    SXID = "sxid"
    GPU_RESET = "gpu_reset"  # the driver (or nvidia-smi) says a GPU reset succeeded
    GPU_RESET_FAILED = "gpu_reset_failed"  # ... or that it did not


XID_FALLEN_OFF_BUS = 79


@dataclass(frozen=True, slots=True)
class KernelEvent:
    """One GPU event read from the kernel log.

    `pci` is the address as the line wrote it (without a `PCI:` tag); `pci_key` is its normalised form.
    `fatal` is what the text itself claims: the SXid severity word, and always true for a GPU that fell
    off the bus. XID lines carry no such word; whether an XID is fatal is `decide`'s answer.
    `fallen_off_bus` marks XID 79 and the driver's other lines that say the GPU fell off the bus.
    """

    kind: EventKind
    code: int
    pci: str
    message: str
    raw: str
    fatal: bool = False
    gpu_uuid: str | None = None
    pid: int | None = None
    process: str | None = None
    device: str | None = None  # the NVSwitch device name of an SXid line (`nvidia-nvswitch0`)
    fallen_off_bus: bool = False

    @property
    def pci_key(self) -> str:
        """The normalised PCI address (`0000:3b:00.0`); the parser only emits addresses that have one."""
        return pci_key(self.pci) or self.pci


# The wrappers a kernel message can arrive in, each optional, in the order they nest.
_PRIORITY = r"(?:<[0-9]{1,3}>)?"
_KMSG_RECORD = r"(?:[0-9]{1,4},[0-9]{1,20},[0-9]{1,20},[^;]{0,200};)?"
_BSD_TIME = r"[A-Z][a-z]{2} {1,2}[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
_ISO_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]{1,9})?(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
_HOST = r"[^\s:\[\]]{1,255}"
_KERNEL_IDENT = r"kernel(?:\[[0-9]{1,10}\])?:[ \t]*"
_ANY_IDENT = r"[^\s:\[\]]{1,64}(?:\[[0-9]{1,10}\])?:[ \t]*"
_DMESG_LEVEL = r"(?:[a-z]{2,8} *:[a-z]{2,8} *: )?"
_DMESG_TIME = r"(?:\[[^\]\n]{1,40}\][ \t]*)?"


def _prefix(ident: str) -> str:
    # A date, then a host and an identifier (each optional); or the identifier alone.
    header = rf"(?:(?:{_BSD_TIME}|{_ISO_TIME})[ \t]+(?:{_HOST}[ \t]+)?(?:{ident})?|{ident})?"
    return _PRIORITY + _KMSG_RECORD + _PRIORITY + header + _DMESG_LEVEL + _DMESG_TIME + _PRIORITY


_KERNEL_PREFIX = re.compile(_prefix(_KERNEL_IDENT), re.ASCII)
_SWITCH_PREFIX = re.compile(_prefix(_KERNEL_IDENT) + r"(?:(?P<device>nvidia-nvswitch[0-9]{1,4}):[ \t]*)?", re.ASCII)
_ANY_PREFIX = re.compile(_prefix(_ANY_IDENT), re.ASCII)

_NVRM_TAGS = re.compile(r"(?:NVRM:[ \t]*)+", re.ASCII)
_XID = re.compile(
    rf"Xid \((?:PCI:)?(?P<pci>{PCI_PATTERN})\):[ \t]*(?P<code>[0-9]{{1,6}})(?:,[ \t]*(?P<tail>.*)|[ \t]*)", re.ASCII
)
# The process fields, each of which a line cut short may lack: `pid=1234, name=python3, <message>`.
_XID_PROCESS = re.compile(
    r"pid=(?P<pid>[^,]{0,32})(?:,[ \t]*name=(?P<name>[^,]{0,64})(?:,[ \t]*(?P<msg>.*))?)?", re.ASCII
)
_GPU_AT = re.compile(
    rf"GPU at PCI:(?P<pci>{PCI_PATTERN}):[ \t]*(?P<uuid>{UUID_PATTERN})\b",
    re.ASCII,
)
_FALLEN = re.compile(rf"(?:The NVIDIA )?GPU (?:PCI:)?(?P<pci>{PCI_PATTERN})\b[^\n]*?\bfallen off the bus", re.ASCII)
_NVRM_RESET = re.compile(rf"GPU (?:PCI:)?(?P<pci>{PCI_PATTERN}):[ \t]*GPU reset\b(?P<rest>.*)", re.ASCII)
# What may follow `GPU reset` in an acknowledgement: the words of success, and nothing else. The only
# parenthetical is the reset method known from the driver's lines; any other (`(partial)`,
# `(rc=-5)`, `(unrecoverable)`) may qualify the success away, so the line is not an acknowledgement.
_RESET_DONE = re.compile(
    r"[ \t]*(?:\(secondary bus\)[ \t]*)?(?:(?:is|has|was|has been)[ \t]+)?"
    r"(?:complete|completed|successful|succeeded|done)(?:[ \t]+successfully)?"
    r"(?:[ \t]+in[ \t]+[0-9]{1,9}(?:\.[0-9]{1,9})?[ \t]*(?:ms|s|seconds|milliseconds))?[ \t]*\.?[ \t]*",
    re.ASCII | re.IGNORECASE,
)
# Words by which a reset line says the reset did not succeed.
_RESET_FAILED = re.compile(
    r"\b(?:not|never|no|unable|cannot|[a-z]*n't|fail[a-z]*|unsuccessful(?:ly)?|timed out|time-?out|abort[a-z]*"
    r"|incomplete|errors?|denied|refused)\b",
    re.ASCII | re.IGNORECASE,
)
_SXID = re.compile(
    rf"SXid \((?:PCI:)?(?P<pci>{PCI_PATTERN})\):[ \t]*(?P<code>[0-9]{{1,6}}),[ \t]*(?P<severity>(?i:non-fatal|fatal))\b(?P<rest>.*)",
    re.ASCII,
)
# nvidia-smi's report, to the end of the line: `was successfully reset.` or `was not successfully reset.`
_SMI_RESET = re.compile(rf"GPU (?P<pci>{PCI_PATTERN}) was (?P<negated>not )?successfully reset\.?[ \t]*$", re.ASCII)

_UNKNOWN_PID = re.compile(r"'?<unknown>'?")


@dataclass(frozen=True, slots=True)
class _GpuAt:
    """A `GPU at PCI:...: GPU-...` line: it names the GPU behind an address."""

    pci_key: str
    uuid: str


@dataclass(frozen=True, slots=True)
class _BusLine:
    """The standalone `GPU ...: GPU has fallen off the bus.` line, told apart from its XID 79 twin."""

    event: KernelEvent


def _classify(line: str) -> KernelEvent | _GpuAt | _BusLine | None:
    """The event or GPU naming in one line (without its line ending), with no memory of earlier lines."""
    if "NVRM" in line:
        found = _nvrm(line)
        if found is not None:
            return found
    if "SXid" in line:
        return _sxid(line)
    if "successfully reset" in line:
        return _smi_reset(line)
    return None


def _nvrm(line: str) -> KernelEvent | _GpuAt | _BusLine | None:
    anchor = line.find("NVRM:")
    if anchor < 0 or _KERNEL_PREFIX.fullmatch(line, 0, anchor) is None:
        return None
    tags = _NVRM_TAGS.match(line, anchor)
    body_at = tags.end() if tags else anchor
    body = line[body_at:]
    if body.startswith("Xid"):
        return _xid(body, line)
    if body.startswith("GPU at"):
        at = _GPU_AT.match(body)
        key = pci_key(at["pci"]) if at else None
        uuid = normalise_uuid(at["uuid"]) if at else None
        return _GpuAt(key, uuid) if key and uuid else None
    if "fallen off the bus" in body:
        fallen = _FALLEN.match(body)
        if fallen is None:
            return None
        event = KernelEvent(
            EventKind.XID, XID_FALLEN_OFF_BUS, fallen["pci"], body.strip(), line, fatal=True, fallen_off_bus=True
        )
        return _BusLine(event)
    if "reset" in body:
        return _nvrm_reset(body, line)
    return None


def _nvrm_reset(body: str, line: str) -> KernelEvent | None:
    """A driver's reset line: failed when it says so, acknowledged only when it says nothing but success."""
    reset = _NVRM_RESET.match(body)
    if reset is None:
        return None
    rest = reset["rest"]
    if _RESET_FAILED.search(rest):
        kind = EventKind.GPU_RESET_FAILED
    elif _RESET_DONE.fullmatch(rest):
        kind = EventKind.GPU_RESET
    else:
        return None  # requested, started, in progress: neither news of success nor of failure
    return KernelEvent(kind, 0, reset["pci"], body.strip(), line)


def _xid(body: str, line: str) -> KernelEvent | None:
    xid = _XID.fullmatch(body)
    if xid is None:
        return None
    code = int(xid["code"])
    tail = (xid["tail"] or "").strip()
    pid: int | None = None
    process: str | None = None
    process_fields = _XID_PROCESS.fullmatch(tail)
    if process_fields is not None:
        raw_pid = process_fields["pid"].strip()
        pid = int(raw_pid) if raw_pid.isdigit() and raw_pid.isascii() and len(raw_pid) <= 10 else None
        name = (process_fields["name"] or "").strip()
        process = None if not name or _UNKNOWN_PID.fullmatch(name) else name
        tail = (process_fields["msg"] or "").strip()
    fallen = code == XID_FALLEN_OFF_BUS
    return KernelEvent(
        EventKind.XID, code, xid["pci"], tail, line, fatal=fallen, pid=pid, process=process, fallen_off_bus=fallen
    )


def _sxid(line: str) -> KernelEvent | None:
    anchor = line.find("SXid (")
    if anchor < 0:
        return None
    prefix = _SWITCH_PREFIX.fullmatch(line, 0, anchor)
    if prefix is None:
        return None
    sxid = _SXID.fullmatch(line, anchor)
    if sxid is None:
        return None
    severity = sxid["severity"]
    message = f"{severity}{sxid['rest']}".strip()
    return KernelEvent(
        EventKind.SXID,
        int(sxid["code"]),
        sxid["pci"],
        message,
        line,
        fatal=severity.lower() == "fatal",
        device=prefix["device"],
    )


def _smi_reset(line: str) -> KernelEvent | None:
    reset = _SMI_RESET.search(line)
    if reset is None or _ANY_PREFIX.fullmatch(line, 0, reset.start()) is None:
        return None
    kind = EventKind.GPU_RESET_FAILED if reset["negated"] else EventKind.GPU_RESET
    return KernelEvent(kind, 0, reset["pci"], line[reset.start() :].strip(), line)


def _decode(line: object) -> str:
    if isinstance(line, bytes | bytearray | memoryview):
        return bytes(line).decode("utf-8", errors="replace")
    return str(line)


# How far apart (in NVRM/SXid lines) the XID 79 line and its "GPU has fallen off the bus" line may be
# and still be read as one report.
FALLEN_GROUP_SPAN = 16
# Bounds on per-address memory: a node has at most a few hundred GPUs and switches.
MAX_ADDRESSES = 4096


@dataclass(slots=True)
class _Fallen:
    """The last fallen-off report of one address: which line form it came from, and where."""

    from_xid: bool
    line_no: int
    paired: bool = False


@dataclass(frozen=True, slots=True)
class ParserMemory:
    """What a `KmsgParser` has learned that later lines still need, to carry across a restart.

    `gpus`: normalised PCI address → GPU UUID, from `GPU at PCI:...` lines. `fallen`: fallen-off
    reports still waiting for their other half, as (PCI key, whether it came from the XID line,
    how many NVRM/SXid lines ago).
    """

    gpus: dict[str, str]
    fallen: tuple[tuple[str, bool, int], ...] = ()


class KmsgParser:
    """A line parser that remembers what multi-line reports need: GPU names and the fallen-off pair.

    Feed it every line in order; `feed` returns the event a line completes, or None. Never raises.
    `memory` and `restore` carry what it learned to a parser that reads on after a restart.
    """

    def __init__(self) -> None:
        self._uuids: OrderedDict[str, str] = OrderedDict()
        self._fallen: OrderedDict[str, _Fallen] = OrderedDict()
        self._line_no = 0

    def reset(self) -> None:
        """Forget everything learned so far (after a reboot the addresses may name other GPUs)."""
        self._uuids.clear()
        self._fallen.clear()
        self._line_no = 0

    def memory(self) -> ParserMemory:
        """What later lines still need (see `ParserMemory`)."""
        fallen = tuple(
            (key, entry.from_xid, self._line_no - entry.line_no)
            for key, entry in self._fallen.items()
            if not entry.paired and self._line_no - entry.line_no < FALLEN_GROUP_SPAN
        )
        return ParserMemory(dict(self._uuids), fallen)

    def restore(self, memory: ParserMemory) -> None:
        """Read on as a parser that had learned `memory` (from `memory()`) would."""
        self.reset()
        for key, uuid in memory.gpus.items():
            _remember(self._uuids, key, uuid)
        for key, from_xid, ago in memory.fallen:
            _remember(self._fallen, key, _Fallen(from_xid, -ago))

    def known_gpus(self) -> dict[str, str]:
        """The GPUs named by `GPU at PCI:...` lines so far: normalised PCI address → UUID."""
        return dict(self._uuids)

    def feed(self, line: str | bytes) -> KernelEvent | None:
        """Read one line; the event it reports, or None for noise and for lines folded into another."""
        # Almost every kernel line is noise: three substring scans (C speed) decide that before anything
        # else is spent on the line. Bytes from files are decoded leniently.
        text = line if type(line) is str else _decode(line)
        if "NVRM" not in text and "SXid" not in text and "successfully reset" not in text:
            return None
        found = _classify(text.rstrip("\r\n"))
        if found is None:
            return None
        self._line_no += 1
        if isinstance(found, _GpuAt):
            _remember(self._uuids, found.pci_key, found.uuid)
            return None
        from_xid = not isinstance(found, _BusLine)
        if isinstance(found, _BusLine):
            found = found.event
        key = found.pci_key
        if found.fallen_off_bus and self._folds_into_previous(key, from_xid=from_xid):
            return None
        if found.kind is EventKind.GPU_RESET:
            self._fallen.pop(key, None)
        uuid = self._uuids.get(key)
        if uuid is not None and found.gpu_uuid is None:
            found = replace(found, gpu_uuid=uuid)
        return found

    def _folds_into_previous(self, key: str, *, from_xid: bool) -> bool:
        """True when this fallen-off line is the other half of a report already emitted.

        The driver writes the XID 79 line and the "GPU has fallen off the bus" line together; either may
        come alone. A repeat of the same form is a new report (flood control is `dedupe`'s job).
        """
        previous = self._fallen.get(key)
        if (
            previous is not None
            and not previous.paired
            and previous.from_xid is not from_xid
            and self._line_no - previous.line_no <= FALLEN_GROUP_SPAN
        ):
            previous.paired = True
            return True
        _remember(self._fallen, key, _Fallen(from_xid, self._line_no))
        return False


_V = TypeVar("_V")


def _remember(table: OrderedDict[str, _V], key: str, value: _V) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_ADDRESSES:
        table.popitem(last=False)
