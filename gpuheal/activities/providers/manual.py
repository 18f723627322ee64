"""The manual provider: an operator performs the repair and approves; gpuheal calls nothing."""

from __future__ import annotations

from datetime import datetime

from gpuheal.activities.providers import RebootTarget


class ManualProvider:
    """Repairs are done by a person before they approve, so there is nothing to call."""

    name = "manual"
    expects_new_boot = False
    supports_graceful = False

    def owns(self, target: RebootTarget) -> bool:
        return False  # only ever chosen by policy (repair.provider = "manual")

    async def reboot(self, target: RebootTarget) -> str:
        return f"repair of {target.node} performed by an operator"

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        return True

    async def describe(self, target: RebootTarget) -> str:
        return f"{target.node} is repaired by an operator; gpuheal cannot see the machine"
