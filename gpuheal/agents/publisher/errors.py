"""The one failure the publisher treats as passing: a dependency it could not reach."""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """The dependency could not be reached or asked to come back later; the delivery will be retried.

    Backends raise this for transport failures, timeouts and "try again" answers (HTTP 429/5xx, gRPC
    UNAVAILABLE, …). Any other exception means the event can never be delivered there, and it is
    logged and dropped for that dependency, because retrying it would block every event behind it.
    """
