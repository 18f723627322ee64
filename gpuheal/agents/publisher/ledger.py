"""Open GPU faults per node, so a health condition reflects every fault, not just the latest event.

A fatal event opens a fault on each GPU it names (on the node as a whole when it names none); a
healthy event closes the faults of the GPUs it names, or every fault of the node when it names no
GPU (what a monitor reports after a reboot). So a healthy report about GPU 1 does not hide the XID
still open on GPU 0. Non-fatal unhealthy events open nothing: they are informational.

The ledger lives in memory. After an agent restart it starts empty, which is right after a reboot
and, otherwise, only until a monitor reports again; events spooled before the restart are replayed
through it in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import CHECK_GPU_RESET, HealthEvent
from gpuheal.domain.truncate import truncate

HEALTHY_REASON = "GpusHealthy"
FAULT_REASON = "GpuFault"
# Kubernetes stores any length, but a condition message is meant to be read in `kubectl describe`
# (and the Device API takes condition messages of at most 4 KiB).
MAX_MESSAGE_BYTES = 1024
# The key of a fault that names no GPU.
WHOLE_NODE = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a health condition should say: status, reason, message and the strongest open action."""

    healthy: bool
    reason: str
    message: str
    action: RecommendedAction = RecommendedAction.NONE

    @property
    def status(self) -> str:
        """The condition status as Kubernetes and the Device API spell it."""
        return "True" if self.healthy else "False"


@dataclass(frozen=True, slots=True)
class _Fault:
    check: str
    message: str
    action: RecommendedAction
    # Order of arrival: the newest open fault names the condition's reason.
    seq: int


def is_fault(event: HealthEvent) -> bool:
    """A fatal report that something is unhealthy (a contradictory fatal-but-healthy event is not)."""
    return event.is_fatal and not event.is_healthy


class OpenFaults:
    """The faults still open, per node, GPU and check, as the events applied so far say."""

    def __init__(self) -> None:
        # node -> GPU UUID (or WHOLE_NODE) -> check name -> the newest fault from that check.
        self._open: dict[str, dict[str, dict[str, _Fault]]] = {}
        self._seq = 0

    def apply(self, event: HealthEvent, gpus: Sequence[str] | None = None) -> None:
        """Open or close faults for the event. Applying it again (a retried delivery) leaves the same faults open.

        `gpus` are the GPUs of the event to account for, when the caller knows better than the event
        which of them exist (the Device API lane passes the node's own UUIDs); by default, all it names.
        """
        node = self._open.setdefault(event.node, {})
        named = event.gpu_uuids if gpus is None else tuple(gpus)
        if is_fault(event):
            self._seq += 1
            fault = _Fault(event.check_name, event.message, event.action, self._seq)
            for gpu in named or (WHOLE_NODE,):
                node.setdefault(gpu, {})[event.check_name] = fault
        elif event.is_healthy:
            # A check's healthy report closes that check's faults; a GPU reset closes all of the GPU's.
            for gpu in named or tuple(node):
                if event.check_name == CHECK_GPU_RESET:
                    node.pop(gpu, None)
                else:
                    node.get(gpu, {}).pop(event.check_name, None)

    def node_verdict(self, node: str) -> Verdict:
        """The node's verdict: healthy when no fault is open on any of its GPUs."""
        return _verdict([(gpu, fault) for gpu, checks in self._open.get(node, {}).items() for fault in checks.values()])

    def gpu_verdict(self, node: str, gpu: str) -> Verdict:
        """One GPU's verdict: its own faults and those reported against the whole node."""
        faults = self._open.get(node, {})
        return _verdict([(g, fault) for g in dict.fromkeys((WHOLE_NODE, gpu)) for fault in faults.get(g, {}).values()])


def _verdict(faults: list[tuple[str, _Fault]]) -> Verdict:
    if not faults:
        return Verdict(healthy=True, reason=HEALTHY_REASON, message="no open GPU faults")
    action = RecommendedAction.NONE
    for _, fault in faults:
        action = action.escalate(fault.action)
    parts = [f"{gpu or 'node'}: {fault.check or 'fault'}: {fault.message}".rstrip(": ") for gpu, fault in faults]
    message = truncate("; ".join(parts), MAX_MESSAGE_BYTES)
    newest = max(faults, key=lambda pair: pair[1].seq)[1]
    return Verdict(healthy=False, reason=newest.check or FAULT_REASON, message=message, action=action)
