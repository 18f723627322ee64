"""What a kernel event calls for: the recommended action, and whether the event is fatal.

The rule is the same for every kind: an event is fatal exactly when its action is not NONE.

- XID: the operator's override when the policy has one, else NVIDIA's catalog (`action_for_xid`).
  XID 154 ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)") is decided by
  the action it changed *to*, so a GPU that recovers (`... to 0x0 (None)`) is not fatal.
  A GPU fallen off the bus is XID 79 (also when only the driver's "fallen off the bus" line says so):
  the catalog's RESTART_BM, since only a power cycle of the machine brings the GPU back.
- SXid: an override for that SXid when there is one; else a fatal SXid gets `fatal_sxid_action`
  (RESTART_VM by default: a fatal NVSwitch error needs the fabric reset, which the catalog's
  RESET_FABRIC bucket maps to RESTART_VM) and a non-fatal one NONE.
- GPU reset acknowledgement: NONE and healthy; it is a recovery signal. A failed reset: NONE (the
  fault it was meant to repair stays open; the reset handler answers the order with a failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpuheal.agents.kmsg.parser import EventKind, KernelEvent
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.catalog import XID_RECOVERY_ACTION_CHANGED, action_for_xid
from gpuheal.domain.xid_policy import XidPolicy

__all__ = ["EventAction", "XidPolicy", "decide", "load_xid_policy"]


def load_xid_policy(path: Path) -> XidPolicy:
    """Read an XID policy from a JSON file; raises `pydantic.ValidationError` or `OSError` when it can't."""
    return XidPolicy.model_validate_json(path.read_bytes())


@dataclass(frozen=True, slots=True)
class EventAction:
    """The action an event calls for, whether it is fatal (`action` is not NONE), and who said so.

    `source` is `policy` (an operator's override), `catalog` (NVIDIA's XID catalog) or `default`
    (this module's rule for kinds the catalog does not cover).
    """

    action: RecommendedAction
    source: str = "default"

    @property
    def fatal(self) -> bool:
        return self.action is not RecommendedAction.NONE


_DEFAULT_POLICY = XidPolicy()


def decide(event: KernelEvent, policy: XidPolicy | None = None) -> EventAction:
    """The action one event calls for under a policy (the catalog alone when there is none)."""
    rules = policy or _DEFAULT_POLICY
    if event.kind is EventKind.XID:
        override = rules.overrides.get(event.code)
        if override is not None:
            return EventAction(override, "policy")
        return EventAction(action_for_xid(event.code, _catalog_message(event)), "catalog")
    if event.kind is EventKind.SXID:
        override = rules.sxid_overrides.get(event.code)
        if override is not None:
            return EventAction(override, "policy")
        return EventAction(rules.fatal_sxid_action if event.fatal else RecommendedAction.NONE)
    return EventAction(RecommendedAction.NONE)


def _catalog_message(event: KernelEvent) -> str:
    """The text the catalog reads an XID 154 verdict from: what the recovery action changed *to*."""
    if event.code != XID_RECOVERY_ACTION_CHANGED:
        return event.message
    _, separator, target = event.message.rpartition(" to ")
    return target if separator else event.message
