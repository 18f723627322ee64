"""`gpuheal kmsg parse`: kernel log lines on stdin, one JSON object per GPU event on stdout.

Every report is printed (no flood control: this is for reading logs, not for acting on them).
The output is a contract, documented in the README ("`gpuheal kmsg parse`") and pinned by a test:
an object's keys are a subset of `FIELDS`, in that order. Always there: `kind` (`xid`, `sxid`,
`gpu_reset`, `gpu_reset_failed`), `pci` as the line wrote it, `action` (the RecommendedAction name),
`fatal` and `message`; an XID has `xid` and `fallen_off_bus`, an SXid `sxid`; `gpu_uuid`, `pid`,
`process` and `nvswitch` only when known.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from gpuheal.agents.kmsg.decide import XidPolicy, decide, load_xid_policy
from gpuheal.agents.kmsg.gpumap import GpuMap
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent, KmsgParser

JsonValue = str | int | bool

# Every key an object may have, in the order it has them.
FIELDS = (
    "kind",
    "xid",
    "fallen_off_bus",
    "sxid",
    "pci",
    "action",
    "fatal",
    "gpu_uuid",
    "message",
    "pid",
    "process",
    "nvswitch",
)


def parse_lines(
    lines: Iterable[str | bytes],
    policy: XidPolicy | None = None,
    gpu_map: GpuMap | Mapping[str, str] | None = None,
) -> Iterator[dict[str, JsonValue]]:
    """One JSON-ready dict per event in the lines, in order; `gpu_map` names GPUs the log doesn't."""
    gpus = gpu_map if isinstance(gpu_map, GpuMap) or gpu_map is None else GpuMap(gpu_map)
    parser = KmsgParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event_dict(event, policy, gpus)


def event_dict(event: KernelEvent, policy: XidPolicy | None = None, gpus: GpuMap | None = None) -> dict[str, JsonValue]:
    """The JSON form of one parsed event, with the decision under `policy`."""
    decision = decide(event, policy)
    found: dict[str, JsonValue] = {"kind": str(event.kind)}
    if event.kind is EventKind.XID:
        found["xid"] = event.code
        found["fallen_off_bus"] = event.fallen_off_bus
    elif event.kind is EventKind.SXID:
        found["sxid"] = event.code
    found |= {"pci": event.pci, "action": decision.action.name, "fatal": decision.fatal}
    gpu_uuid = event.gpu_uuid
    if gpu_uuid is None and gpus is not None and event.kind is not EventKind.SXID:
        gpu_uuid = gpus.lookup(event.pci)
    if gpu_uuid:
        found["gpu_uuid"] = gpu_uuid
    found["message"] = event.message
    if event.pid is not None:
        found["pid"] = event.pid
    if event.process:
        found["process"] = event.process
    if event.device:
        found["nvswitch"] = event.device
    return found


def main(stdin: TextIO, stdout: TextIO, policy_path: Path | None = None, *, gpu_map: GpuMap | None = None) -> int:
    """Read stdin to its end, print one JSON line per event; 0, or 2 when the policy file is unusable.

    Bytes that are not UTF-8 are replaced rather than fatal: stdin is read through its binary buffer
    when it has one. The GPU map defaults to the driver's /proc files (empty off GPU machines).
    """
    policy: XidPolicy | None = None
    if policy_path is not None:
        try:
            policy = load_xid_policy(policy_path)
        except (OSError, ValidationError) as error:
            print(f"gpuheal kmsg parse: cannot use policy {policy_path}: {error}", file=sys.stderr)
            return 2
    buffer = getattr(stdin, "buffer", None)
    lines: Iterable[str | bytes] = buffer if buffer is not None else stdin
    for found in parse_lines(lines, policy, gpu_map if gpu_map is not None else GpuMap()):
        stdout.write(json.dumps(found) + "\n")
        stdout.flush()  # followers (`journalctl -kf | gpuheal kmsg parse`) see each event at once
    return 0
