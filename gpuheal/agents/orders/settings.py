"""How the agent follows its own node for orders: the bounds of every read and retry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class FollowSettings:
    """Bounds of following the node; the defaults suit a real node, tests shorten them."""

    # Polling the node with GET, where the agent may not list/watch nodes.
    poll_interval: timedelta = timedelta(seconds=1)
    # Server-side length of one watch of the node; then it is listed and watched again.
    watch_timeout: timedelta = timedelta(seconds=300)
    # Timeout of one ordinary API request (get, list, patch).
    request_timeout: timedelta = timedelta(seconds=10)
    # Longest pause between attempts after an API failure.
    max_backoff: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        if self.poll_interval <= timedelta(0) or self.request_timeout <= timedelta(0):
            raise ValueError("FollowSettings: poll_interval and request_timeout must be positive")
        if self.watch_timeout < timedelta(seconds=1) or self.max_backoff <= timedelta(0):
            raise ValueError("FollowSettings: watch_timeout >= 1s and max_backoff > 0")
