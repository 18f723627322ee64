"""NVIDIA's XID catalog and the default mapping from its resolution bucket to an action.

The catalog ships as package data (`data/xid-catalog.csv`). Operators override single XIDs through
the policy; this module only answers what the catalog itself says.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

from gpuheal.domain.actions import RecommendedAction

_BUCKET_ACTIONS: dict[str, RecommendedAction] = {
    "RESTART_APP": RecommendedAction.NONE,
    "IGNORE": RecommendedAction.NONE,
    "RESET_GPU": RecommendedAction.COMPONENT_RESET,
    "WORKFLOW_XID_48": RecommendedAction.COMPONENT_RESET,
    "RESTART_VM": RecommendedAction.RESTART_VM,
    "RESET_FABRIC": RecommendedAction.RESTART_VM,
    "RESTART_BM": RecommendedAction.RESTART_BM,
}

XID_RECOVERY_ACTION_CHANGED = 154


@dataclass(frozen=True, slots=True)
class XidEntry:
    """One row of the catalog."""

    xid: int
    mnemonic: str
    resolution_bucket: str

    @property
    def action(self) -> RecommendedAction:
        """The default action for this XID; unknown buckets ask a person (CONTACT_SUPPORT)."""
        return _BUCKET_ACTIONS.get(self.resolution_bucket, RecommendedAction.CONTACT_SUPPORT)


@cache
def xid_catalog() -> dict[int, XidEntry]:
    """The catalog keyed by XID, read once from the package data."""
    text = resources.files("gpuheal.domain").joinpath("data/xid-catalog.csv").read_text("utf-8")
    return {
        int(row["xid"]): XidEntry(int(row["xid"]), row["mnemonic"], row["resolution_bucket"])
        for row in csv.DictReader(io.StringIO(text))
    }


def action_for_xid(xid: int, message: str = "") -> RecommendedAction:
    """The catalog's action for an XID; XIDs missing from the catalog ask a person.

    XID 154 carries its verdict in the message text rather than in the catalog.
    """
    if xid == XID_RECOVERY_ACTION_CHANGED:
        return _action_for_recovery_message(message)
    entry = xid_catalog().get(xid)
    return entry.action if entry else RecommendedAction.CONTACT_SUPPORT


def _action_for_recovery_message(message: str) -> RecommendedAction:
    lowered = message.lower()
    if "gpu reset required" in lowered or "drain and reset" in lowered:
        return RecommendedAction.COMPONENT_RESET
    if "node reboot required" in lowered:
        return RecommendedAction.RESTART_BM
    if "none" in lowered:
        return RecommendedAction.NONE
    return RecommendedAction.CONTACT_SUPPORT
