"""The worker's policy, handed to a remediation that starts without one."""

from __future__ import annotations

from gpuheal.activities.contract import implements
from gpuheal.domain import contracts
from gpuheal.domain.policy_document import PolicySnapshot
from gpuheal.domain.steps import NodeRef
from gpuheal.policyfile import WorkerPolicy


class PolicyActivities:
    """Reads the policy in force on this worker (its file's latest good version, or the defaults)."""

    def __init__(self, policy: WorkerPolicy) -> None:
        self._policy = policy

    @implements(contracts.CURRENT_POLICY)
    async def current_policy(self, request: NodeRef) -> PolicySnapshot:
        """The remediation part of the policy in force, and the version of the whole document."""
        document = self._policy.document
        return PolicySnapshot(version=document.version, policy=document.remediation())
