"""Errors a simulated cloud is told to answer with, so the providers' error handling can be tested."""

from __future__ import annotations

from collections import deque
from enum import StrEnum


class CloudFault(StrEnum):
    """What a cloud answers instead of doing the work, in its own protocol's words."""

    THROTTLE = "throttle"  # EC2 RequestLimitExceeded, ARM 429, GCE rateLimitExceeded, Redfish 503
    NOT_FOUND = "not_found"  # the machine does not exist
    DENIED = "denied"  # the caller lacks the permission


class CloudFaults:
    """Per-cloud queues of injected faults; each request a cloud serves takes at most one."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[CloudFault]] = {}

    def inject(self, cloud: str, fault: CloudFault, count: int = 1) -> None:
        """The next `count` requests to `cloud` fail with `fault`."""
        self._queues.setdefault(cloud, deque()).extend([fault] * count)

    def take(self, cloud: str) -> CloudFault | None:
        """The fault the current request must answer with, if any."""
        queue = self._queues.get(cloud)
        return queue.popleft() if queue else None

    def pending(self, cloud: str) -> int:
        return len(self._queues.get(cloud, ()))

    def clear(self) -> None:
        self._queues.clear()
