"""Reboot providers: the ways a node can be repaired, behind one interface.

A provider reboots the machine behind a node: a cloud instance (AWS, Azure, GCP, Nebius), a
bare-metal server through its BMC (Redfish), a simulated node, or a person (manual). The node's
`spec.providerID` (or, for bare metal, a Redfish annotation) says which machine it is and so which
provider owns it, unless the policy forces one.

Besides the reboot itself a provider answers two questions. Before a retry: was a reboot already
asked for since a given moment? The repair activity uses the answer to never reboot a node twice
for one fault, even when a worker dies between its record and the call. And when the node does
not come back: what state is the machine in, for the reason a person reads.

A provider that can also terminate its machines, so that their group launches new ones, is a
`MachineReplacer` too (policy `repair.replace`); one that cannot is simply not, and a person is
asked instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RebootTarget:
    """The node to reboot, with what a provider needs to find the machine behind it."""

    node: str
    # The node's `spec.providerID` ("aws:///us-east-1a/i-…", "gce://project/zone/name", …); may be empty.
    provider_id: str
    # The node's annotations; bare-metal nodes name their BMC here.
    annotations: Mapping[str, str] = field(default_factory=dict)
    # Ask for a graceful restart (the OS shuts down first). Providers without one restart as usual.
    graceful: bool = False


class ProviderError(Exception):
    """A provider refused or failed. `retryable` is False when trying again cannot help.

    The message is what an operator reads in the escalation reason, so it names the machine, the
    provider's own error code and, where there is one, what to do about it.
    """

    def __init__(self, message: str, *, retryable: bool, refused: bool = False) -> None:
        super().__init__(message)
        self._retryable = retryable
        self._refused = refused

    @property
    def retryable(self) -> bool:
        return self._retryable

    @property
    def refused(self) -> bool:
        """True only when the provider did not act on this request (an error answer to the reboot
        call itself: throttled, refused, never connected). Asking again is then safe; any other
        failure may have rebooted the machine, so a retry must not ask again. Fixed when built."""
        return self._refused


class RebootProvider(Protocol):
    """What the repair activity needs from a way of rebooting nodes.

    Providers call blocking SDKs in a thread (`asyncio.to_thread`) so the worker's event loop keeps
    serving other remediations. Throttling and transient failures raise a retryable ProviderError
    (Temporal retries with backoff); a machine that does not exist or a permission the worker lacks
    raises a non-retryable one, which escalates the remediation to a person.
    """

    @property
    def name(self) -> str:
        """The provider's name in policies and records ("aws", "azure", "gcp", …)."""
        ...

    @property
    def expects_new_boot(self) -> bool:
        """False when a person performs the repair and the node need not report a new bootID."""
        ...

    @property
    def supports_graceful(self) -> bool:
        """True when `target.graceful` asks for something gentler than the usual restart."""
        ...

    def owns(self, target: RebootTarget) -> bool:
        """Whether the node names a machine of this provider (by providerID scheme or annotation)."""
        ...

    async def reboot(self, target: RebootTarget) -> str:
        """Ask for the reboot and, where the provider has one, follow its operation to the end.

        Returns a line for the record. Raises ProviderError.
        """
        ...

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """Whether a reboot was asked for at or after `since`; None when the provider keeps no record."""
        ...

    async def describe(self, target: RebootTarget) -> str:
        """The provider's view of the machine, one line ("EC2 i-0abc running", …). Raises ProviderError."""
        ...


@runtime_checkable
class MachineReplacer(Protocol):
    """A provider that can terminate the machine behind a node, for its group to launch another."""

    async def replace(self, target: RebootTarget) -> str:
        """Terminate the machine (idempotent: a machine already terminating or terminated is not an
        error). Returns a line for the record. Raises ProviderError."""
        ...
