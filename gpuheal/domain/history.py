"""Repeat offenders: a node or a GPU that gpuheal repaired lately and that faults again.

A repair that does not hold is not repaired again and again: a node remediated `max_per_node` times
within `node_window`, or a GPU (by UUID, and by board serial where the agent knows it, so across
reboots, node names and nodes the GPU moved to) that faults again within `gpu_window` of an earlier
remediation, is escalated to a person, naming the earlier remediations. The history is Temporal's
own: the search attributes every remediation carries (`GpuhealNode`, `GpuhealGpu`,
`GpuhealGpuSerial`, `GpuhealPhase`) read through visibility, so gpuheal keeps no database of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.policy import LoopPolicy

# How many earlier remediations one look at the history reads at most (the newest first).
MOST = 50
# Values a visibility query may quote as they are: node names, GPU UUIDs, serials. Anything else is
# left out of the query rather than escaped (Temporal's query language has no documented escaping).
_QUOTABLE = re.compile(r"[A-Za-z0-9._:-]{1,253}")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryRequest(_Payload):
    """Which earlier remediations to find: of this node, or naming one of these GPUs, that asked for a
    repair and were still running at `since` (the fault's time less the longest window)."""

    node: str
    gpus: tuple[str, ...] = ()
    serials: tuple[str, ...] = ()
    since: datetime
    # The asking run, left out of its own history.
    run_id: str


class EarlierRemediation(_Payload):
    """A remediation as visibility shows it."""

    workflow_id: str
    run_id: str
    node: str
    phase: str
    gpus: tuple[str, ...] = ()
    serials: tuple[str, ...] = ()
    # GPU resets and reboots it asked for (GpuhealRepairs).
    repairs: int = 0
    started_at: datetime
    # None while it runs (held for a person, say).
    closed_at: datetime | None = None


class RemediationHistory(_Payload):
    remediations: tuple[EarlierRemediation, ...] = Field(default_factory=tuple)


def history_query(request: HistoryRequest, workflow_type: str) -> str | None:
    """The visibility query for the request's earlier remediations that repaired something; None when
    the request names nothing a query can quote."""
    about = [f"GpuhealNode = '{request.node}'"] if _QUOTABLE.fullmatch(request.node) else []
    for attribute, values in (("GpuhealGpu", request.gpus), ("GpuhealGpuSerial", request.serials)):
        quoted = [f"'{value}'" for value in values if _QUOTABLE.fullmatch(value)]
        if quoted:
            about.append(f"{attribute} IN ({', '.join(quoted)})")
    if not about:
        return None
    since = request.since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"WorkflowType = '{workflow_type}' AND GpuhealRepairs > 0 AND "
        f"(ExecutionStatus = 'Running' OR CloseTime >= '{since}') AND ({' OR '.join(about)})"
    )


def repeat_offence(
    loops: LoopPolicy,
    node: str,
    gpus: Iterable[str],
    serials: Iterable[str],
    history: RemediationHistory,
    fault_at: datetime,
) -> str:
    """Why the fault detected at `fault_at` is escalated instead of repaired again, naming the earlier
    remediations; "" when the node and its GPUs have no such history.

    An earlier remediation counts when it asked for a repair and the fault came after it ended, within
    the window (one still running counts: its repair has not held so far); a fault detected before it
    ended (delivered late, or reported twice) is the same fault, not a new one.
    """
    gpus, serials = set(gpus), set(serials)

    def within(window: timedelta) -> list[EarlierRemediation]:
        return [
            r
            for r in history.remediations
            if r.repairs > 0 and (r.closed_at is None or r.closed_at <= fault_at <= r.closed_at + window)
        ]

    if loops.gpu_window > timedelta(0):
        again = [r for r in within(loops.gpu_window) if gpus & set(r.gpus) or serials & set(r.serials)]
        if again:
            named = sorted(gpus & {g for r in again for g in r.gpus} | serials & {s for r in again for s in r.serials})
            return (
                f"repeat offender: GPU {', '.join(named)} faulted again within {loops.gpu_window} of "
                f"{_list(again)}; not repaired again"
            )
    if loops.max_per_node > 0:
        # A name given to a new machine (EKS names nodes after reused private IPs, GCE recreates a
        # managed instance under its name) starts afresh: only runs since its last replacement count.
        replaced = [
            r.closed_at for r in history.remediations if r.node == node and r.phase == "Replaced" and r.closed_at
        ]
        since = max(replaced, default=None)
        on_node = [
            r
            for r in within(loops.node_window)
            if r.node == node and r.phase != "Replaced" and (since is None or r.started_at >= since)
        ]
        if len(on_node) >= loops.max_per_node:
            return (
                f"repeat offender: node {node} was remediated {len(on_node)} times within {loops.node_window} "
                f"({_list(on_node)}); not repaired again"
            )
    return ""


def _list(remediations: list[EarlierRemediation], limit: int = 3) -> str:
    newest = sorted(remediations, key=lambda r: r.started_at, reverse=True)
    named = [f"{r.workflow_id} (run {r.run_id}, {r.phase}, {_when(r)})" for r in newest[:limit]]
    more = len(newest) - limit
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _when(remediation: EarlierRemediation) -> str:
    if remediation.closed_at is None:
        return f"running since {remediation.started_at.isoformat(timespec='seconds')}"
    return f"ended {remediation.closed_at.isoformat(timespec='seconds')}"
