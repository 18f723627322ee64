"""Status conditions (``status.conditions``): finding one by type and setting it as Kubernetes does."""

from __future__ import annotations

from typing import Any

from .jsonvalues import JsonDict


def find_condition(conditions: Any, ctype: str) -> JsonDict | None:
    """The condition of type ``ctype`` in a conditions list, if present."""
    for cond in conditions or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(
    conditions: list[JsonDict],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    *,
    heartbeat: bool = False,
    probe: bool = False,
) -> bool:
    """Set a condition in place; ``lastTransitionTime`` moves only when the status changes.

    Returns True when anything changed. ``heartbeat`` adds/refreshes ``lastHeartbeatTime`` (node
    conditions), ``probe`` adds ``lastProbeTime: null`` (pod conditions).
    """
    cond = find_condition(conditions, ctype)
    if cond is None:
        cond = {"type": ctype, "status": status}
        if probe:
            cond["lastProbeTime"] = None
        if heartbeat:
            cond["lastHeartbeatTime"] = now
        cond["lastTransitionTime"] = now
        cond["reason"] = reason
        cond["message"] = message
        conditions.append(cond)
        return True
    changed = False
    if cond.get("status") != status:
        cond["status"] = status
        cond["lastTransitionTime"] = now
        changed = True
    if cond.get("reason") != reason or cond.get("message") != message:
        cond["reason"] = reason
        cond["message"] = message
        changed = True
    if heartbeat and changed:
        cond["lastHeartbeatTime"] = now
    return changed


def post_condition(conditions: list[JsonDict], ctype: str, status: str, reason: str, message: str, now: str) -> bool:
    """Set a node condition as its writer posts it: ``lastHeartbeatTime`` now on every post,
    ``lastTransitionTime`` only when the status changes (the kubelet's condition setters).

    Returns True when the status changed.
    """
    cond = find_condition(conditions, ctype)
    if cond is None:
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            }
        )
        return True
    transition = cond.get("status") != status
    cond["status"] = status
    cond["lastHeartbeatTime"] = now
    if transition or "lastTransitionTime" not in cond:
        cond["lastTransitionTime"] = now
    cond["reason"] = reason
    cond["message"] = message
    return transition
