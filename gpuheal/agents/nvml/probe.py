"""`python -m gpuheal.agents.nvml.probe`: check NVML on this machine, the way the provider uses it.

It initialises NVML, prints one JSON object with every GPU (uuid, pci, name, serial, minor) and the
health signals read from it (null where the GPU does not support one), then waits up to `--wait`
seconds for XID critical-error events and prints each as one JSON line. Exit codes: 0 done, 2 NVML
is not available here (the message says why), 1 an NVML call failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from gpuheal.agents.nvml.interface import GpuLostError, Nvml, NvmlError, NvmlUnavailableError
from gpuheal.agents.nvml.real import RealNvml

EXIT_UNAVAILABLE = 2


def snapshot(nvml: Nvml) -> dict[str, Any]:
    """Every GPU with its identity and health signals, as JSON-ready data; a lost GPU shows its error."""
    gpus: list[dict[str, Any]] = []
    for index in range(nvml.device_count()):
        try:
            info = nvml.device_info(index)
        except GpuLostError as err:  # one lost GPU must not hide the others
            gpus.append({"index": index, "error": str(err)})
            continue
        entry: dict[str, Any] = {
            "index": info.index,
            "uuid": info.uuid,
            "pci": info.pci_bus_id,
            "name": info.name,
            "serial": info.serial,
            "minor": info.minor_number,
        }
        try:
            entry["health"] = asdict(nvml.health_signals(index))
        except GpuLostError as err:
            entry["health"] = {"error": str(err)}
        gpus.append(entry)
    return {"gpu_count": len(gpus), "gpus": gpus}


def watch_xids(nvml: Nvml, seconds: float, out: TextIO, step_s: float = 0.5) -> int:
    """Print each XID event seen within `seconds`; returns how many there were."""
    registered = nvml.register_xid_events()
    print(json.dumps({"xid_events_registered": list(registered), "waiting_s": seconds}), file=out, flush=True)
    seen = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        event = nvml.wait_xid_event(min(step_s, left))
        if event is not None:
            seen += 1
            record = {"xid": event.xid, "uuid": event.uuid, "index": event.index, "at": event.timestamp.isoformat()}
            print(json.dumps(record), file=out, flush=True)
    return seen


def main(argv: Sequence[str] | None = None, nvml: Nvml | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpuheal.agents.nvml.probe", description="Check NVML on this machine."
    )
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for XID events (default 5; 0 skips)")
    args = parser.parse_args(argv)
    nvml = nvml if nvml is not None else RealNvml()
    try:
        nvml.init()
    except NvmlUnavailableError as err:
        print(str(err), file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        print(json.dumps(snapshot(nvml), indent=2), file=out, flush=True)
        if args.wait > 0:
            watch_xids(nvml, args.wait, out)
    except NvmlError as err:
        print(f"NVML call failed: {err}", file=sys.stderr)
        return 1
    finally:
        nvml.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
