"""What the demo shows: phase changes as they happen, then how long each phase took."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table

from gpuheal.domain.remediation import PhaseEntry, RemediationStatus


class PhaseView:
    """Prints each new phase once, with the time since the fault was reported.

    `label` (a node's name) leads each line where several remediations share the screen.
    """

    def __init__(self, console: Console, started: datetime, label: str = "") -> None:
        self._console = console
        self._started = started
        self._label = f"{label}  " if label else ""
        self._shown = 0

    def update(self, status: RemediationStatus) -> None:
        for entry in status.history[self._shown :]:
            elapsed = (entry.entered_at - self._started).total_seconds()
            hint = _hint(entry, status)
            self._console.print(f"  [dim]{elapsed:7.2f}s[/]  {self._label}[bold]{entry.phase.value:<17}[/] {hint}")
        self._shown = len(status.history)


def phase_table(status: RemediationStatus, finished: datetime) -> Table:
    """Time spent in each phase, from the workflow's own phase history."""
    table = Table(title=f"Remediation of {status.node}: {status.phase.value}")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    entries = status.history
    for entry, following in zip(entries, [*entries[1:], None], strict=True):
        if following is None:
            continue  # the final phase has no duration
        table.add_row(entry.phase.value, f"{(following.entered_at - entry.entered_at).total_seconds():.2f}")
    if entries:
        total = (entries[-1].entered_at - entries[0].entered_at).total_seconds()
        table.add_row("[bold]total[/]", f"[bold]{total:.2f}[/]")
    return table


def _hint(entry: PhaseEntry, status: RemediationStatus) -> str:
    hints = {
        "Detected": f"{status.action.name} for XID {', '.join(map(str, status.xids)) or '-'}",
        "AwaitingBudget": "the node untouched until the fleet governor grants a permit",
        "Quarantined": "cordoned and tainted gpuheal.io/gpu-fault:NoSchedule",
        "Draining": "evicting pods through the Eviction API",
        "AwaitingApproval": f"waiting for gpuheal approve {status.node} (or reject): the decide line above",
        "Repairing": f"approved by {status.decision.approver}" if status.decision else "",
        "WaitingForNode": "waiting for Ready with a new bootID",
        "Resolved": "back in service",
    }
    if entry.phase.is_settled and entry == status.history[-1] and status.reason:
        return status.reason
    return hints.get(entry.phase.value, "")
