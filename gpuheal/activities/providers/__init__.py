"""Reboot providers: the ways a node can be repaired, behind one interface.

A provider is asked to reboot a node and, before a retry, whether it was already asked since a
given moment. The repair activity uses that second question to never reboot a node twice for one
fault, even when a worker dies between the request and its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RebootTarget:
    """The node to reboot, with what the provider needs to find the machine behind it."""

    node: str
    provider_id: str


class ProviderError(Exception):
    """A provider refused or failed. `retryable` is False when trying again cannot help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RebootProvider(Protocol):
    """What the repair activity needs from a way of rebooting nodes."""

    @property
    def name(self) -> str: ...

    @property
    def expects_new_boot(self) -> bool:
        """False when a person performs the repair and the node need not report a new bootID."""
        ...

    async def reboot(self, target: RebootTarget) -> str:
        """Ask for the reboot; returns a line for the record. Raises ProviderError."""
        ...

    async def requested_since(self, target: RebootTarget, since: datetime) -> bool | None:
        """Whether a reboot was asked for at or after `since`; None when the provider cannot tell."""
        ...
