"""Faults to Temporal: signal-with-start of the node's `remediate-<node>` workflow.

The client is connected on first use and again after a failed connect, so an agent that starts
while Temporal is away keeps its faults in the spool and delivers them once Temporal answers.
Reporting a fault twice is harmless: the workflow counts each event id once.
"""

from __future__ import annotations

from typing import Protocol

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.control.connection import DEFAULT_TASK_QUEUE, connect
from gpuheal.control.remediations import report_fault
from gpuheal.domain.faults import Fault
from gpuheal.domain.policy import RemediationPolicy

# Answers that no retry can change; everything else (UNAVAILABLE, auth, namespace not yet there, …)
# may clear up, and a fault is worth waiting for.
_PERMANENT = frozenset({RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.OUT_OF_RANGE})


class Remediations(Protocol):
    """Where fatal, actionable faults go to start or join the node's remediation."""

    async def report(self, fault: Fault) -> None: ...


class TemporalRemediations:
    """`Remediations` on Temporal. Give a connected `client`, or an `address`/`namespace` to dial lazily.

    With neither, the standard Temporal environment settings apply (`TEMPORAL_ADDRESS`, …).
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        address: str | None = None,
        namespace: str | None = None,
        policy: RemediationPolicy | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> None:
        self._client = client
        self._address = address
        self._namespace = namespace
        self._policy = policy
        self._task_queue = task_queue

    async def report(self, fault: Fault) -> None:
        """Signal-with-start `remediate-<node>` with the fault; `DependencyUnavailable` when Temporal is away."""
        client = await self._connected()
        try:
            await report_fault(client, fault, self._policy, task_queue=self._task_queue)
        except RPCError as error:
            if error.status in _PERMANENT:
                raise
            raise DependencyUnavailable(f"Temporal: {error.status.name}: {error.message}") from error

    async def _connected(self) -> Client:
        if self._client is None:
            try:
                self._client = await connect(self._address, self._namespace)
            except RuntimeError as error:  # the SDK's "Failed client connect"
                raise DependencyUnavailable(f"Temporal: {error}") from error
        return self._client
