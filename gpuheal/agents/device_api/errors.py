"""The Device API's failures, each tied to the gRPC status code the contract gives it.

The cache, the watch hub and the readiness gate raise these; the gRPC service turns them into a
status with the same code and message, and in-process providers catch them directly.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class DeviceApiError(Exception):
    """A request the Device API refuses; `code` is the gRPC status a remote caller sees."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(DeviceApiError):
    """No GPU has that name."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(DeviceApiError):
    """A different GPU already holds that name."""

    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgumentError(DeviceApiError):
    """The request is malformed: a required field is missing or a value does not parse."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ConflictError(DeviceApiError):
    """Optimistic concurrency: the writer's resource version is not the object's current one."""

    code = grpc.StatusCode.ABORTED


class NotReadyError(DeviceApiError):
    """Consumers are not served until providers have registered the node's GPUs."""

    code = grpc.StatusCode.UNAVAILABLE


class CacheFullError(DeviceApiError):
    """The cache holds its maximum number of GPUs."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ExpiredError(DeviceApiError):
    """A watch asked to resume from a resource version whose events are no longer kept."""

    code = grpc.StatusCode.OUT_OF_RANGE


class WatchDroppedError(DeviceApiError):
    """A watcher fell so far behind that its queue overflowed; it was dropped."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyWatchesError(DeviceApiError):
    """As many watches as the server serves at once are open already."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ShuttingDownError(DeviceApiError):
    """The server is stopping; the client should reconnect (to the next server) and resume."""

    code = grpc.StatusCode.UNAVAILABLE
