"""Faults to Temporal: signal-with-start of the node's `remediate-<node>` workflow.

The client is connected on first use and again after a failed connect, so an agent that starts
while Temporal is away keeps its faults in the spool and delivers them once Temporal answers.
Reporting a fault twice is harmless: the workflow counts each event id once.

A fault's text is cut so that its payload fits Temporal's default limits (`Fault`), but a namespace
may be configured with a lower `limit.blobSize.error`: a fault refused for its size is sent again
with its message cut to 1 KiB, so the remediation still starts.
"""

from __future__ import annotations

import logging
from typing import Protocol

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from gpuheal.agents.publisher.errors import DependencyUnavailable
from gpuheal.control.connection import DEFAULT_TASK_QUEUE, connect_temporal
from gpuheal.control.report import report_fault
from gpuheal.domain.faults import Fault
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.truncate import truncate

log = logging.getLogger(__name__)

# Answers that no retry can change; everything else (UNAVAILABLE, auth, namespace not yet there, …)
# may clear up, and a fault is worth waiting for.
_PERMANENT = frozenset({RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.OUT_OF_RANGE})
# How the server refuses a payload over the namespace's `limit.blobSize.error`.
_TOO_LARGE = "Blob data size exceeds limit"
_SHORT_MESSAGE_BYTES = 1024


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
            short = truncate(fault.message, _SHORT_MESSAGE_BYTES)
            if (
                error.status is RPCStatusCode.INVALID_ARGUMENT
                and _TOO_LARGE in error.message
                and short != fault.message
            ):
                log.warning(
                    "Temporal refused fault %s of %s for its size; sending it again with a %d-byte message",
                    fault.event_id,
                    fault.node,
                    len(short.encode()),
                    extra={"node": fault.node, "gpu": fault.gpu_uuids},
                )
                await self.report(fault.model_copy(update={"message": short}))
                return
            if error.status in _PERMANENT:
                raise
            raise DependencyUnavailable(f"Temporal: {error.status.name}: {error.message}") from error

    async def _connected(self) -> Client:
        if self._client is None:
            try:
                self._client = await connect_temporal(self._address, self._namespace)
            except RuntimeError as error:  # the SDK's "Failed client connect"
                raise DependencyUnavailable(f"Temporal: {error}") from error
        return self._client
