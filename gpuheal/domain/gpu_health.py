"""When a node's `GpuHealthy` condition proves its GPUs healthy after a repair.

A repair counts only on evidence the agent cannot forge alone (design: "Rules the workflow keeps"):
the kubelet's Ready and bootID say the node came back, and the GPU health must have been reported
after it did. A `GpuHealthy=True` written before the reboot lingers on the node until the agent
reports again, so its status alone proves nothing.

gpuheal's agent names, at the end of the condition's message, the boot it wrote the condition on
(the kernel's `/proc/sys/kernel/random/boot_id`) and the moment it wrote it, to the microsecond:

    All 8 GPUs are healthy [boot 0b5e…, at 2026-03-01T10:00:00.123456Z]

The condition's own timestamps are whole seconds, which cannot order a report and a reset answer
given in the same second; the stamp can. Other writers of the condition carry no stamp: for them
the later of `lastHeartbeatTime` and `lastTransitionTime` stands in for the moment of the report.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

_STAMP = re.compile(r" \[boot (?P<boot>[^\s,\]]+), at (?P<at>[^\s\]]+)\]\Z")


def stamp_message(message: str, boot_id: str, at: datetime) -> str:
    """The condition message naming the boot it was written on and when (UTC, microseconds)."""
    return f"{message} [boot {boot_id}, at {_micro(at)}]"


def read_stamp(message: str) -> tuple[str, str, datetime | None]:
    """`(message without the stamp, boot ID, time)`; `("…", "", None)` when the message carries none."""
    found = _STAMP.search(message)
    if found is None:
        return message, "", None
    try:
        at = datetime.fromisoformat(found["at"].replace("Z", "+00:00"))
    except ValueError:
        return message, "", None
    if at.tzinfo is None:
        return message, "", None
    return message[: found.start()], found["boot"], at


class GpuHealthReport(BaseModel):
    """A read of the node's `GpuHealthy` condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: str
    # The message without the stamp.
    message: str = ""
    # The boot and the moment the writer names in its stamp ("" / None: it names none).
    boot_id: str = ""
    reported_at: datetime | None = None
    heartbeat: datetime | None = None
    transition: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "True"


class HealthBar(BaseModel):
    """What a GPU health report must come after: the repair it is to prove."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The node's bootID when the reboot was requested; "" when the repair was no reboot (a GPU reset).
    boot_id_before: str = ""
    # When the repair was asked for or answered: the reboot request as recorded, the reset's answer.
    after: datetime | None = None
    # How the reason names `after`: "the reboot request", "the GPU reset's answer".
    after_what: str = "the repair"


def gpu_health_problem(report: GpuHealthReport | None, node_boot_id: str, bar: HealthBar) -> str | None:
    """None when the report proves the GPUs healthy after the repair; else what is missing.

    `node_boot_id` is the kubelet's `status.nodeInfo.bootID` now; the report is accepted when it says
    True and

    * it names a boot (gpuheal's agent): that boot must be the node's current one, and either the
      node is on another boot than when the reboot was requested (the report was written after the
      node came back), or, when no reboot happened (a GPU reset, a provider that repairs without
      rebooting), the moment it names must be later than `bar.after`;
    * it names none (another writer): the later of its `lastHeartbeatTime` and `lastTransitionTime`
      must be later than `bar.after`.

    "Later" is strict, and without a `bar.after` only the boot can prove anything.
    """
    if report is None:
        return "the node has no GpuHealthy condition (is the gpuheal agent running on it?)"
    if not report.healthy:
        return report.message or f"GpuHealthy={report.status}"
    rebooted = bool(bar.boot_id_before) and bool(node_boot_id) and node_boot_id != bar.boot_id_before
    if report.boot_id:
        if report.boot_id != node_boot_id:
            if report.boot_id == bar.boot_id_before:
                return f"GpuHealthy=True was reported on boot {report.boot_id}, before the reboot"
            return (
                f"GpuHealthy=True was reported on boot {report.boot_id}, "
                f"not on the node's current boot {node_boot_id or '(unknown)'}"
            )
        if rebooted:
            return None
        when = report.reported_at
    else:
        times = [_utc(t) for t in (report.heartbeat, report.transition) if t is not None]
        when = max(times) if times else None
    if bar.after is None:
        return f"GpuHealthy=True {_at(when)} names no boot after the reboot and there is no time to compare it with"
    if when is None or _utc(when) <= _utc(bar.after):
        return f"GpuHealthy=True was last reported {_at(when)}, before {bar.after_what} at {_micro(bar.after)}"
    return None


def _utc(moment: datetime) -> datetime:
    """Aware, in UTC: a time without a zone is read as UTC (as the API server writes them)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _at(when: datetime | None) -> str:
    return f"at {_micro(when)}" if when is not None else "at an unknown time"


def _micro(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
