"""The Device API (`nvidia.device.v1alpha1.GpuService`): node-local GPU state over gRPC.

Providers (monitors, NVML enumeration) register GPUs and write their status; consumers (device
plugins, DRA drivers) get, list and watch them. The pieces, one job each:

- `cache.GpuCache`: the GPUs by name, one resource version for the whole cache, optimistic
  concurrency; also the typed API for providers in the same process;
- `watch.WatchHub`: fan-out of every write to bounded per-watcher queues, dropping laggards;
- `readiness.ReadinessGate`: consumers get UNAVAILABLE until the node's GPUs are registered;
- `service.GpuService`: the operations a call runs once decoded (gate, cache, hub), raising refusals;
- `service.GpuServicer`: the gRPC handlers over them, mapping refusals to status codes;
- `server.DeviceApiServer`: the unix-socket (and optional TCP) server with health and reflection,
  which also runs the operations for callers in its own process (`DeviceApiServer.call`).
"""

from gpuheal.agents.device_api.cache import ADDED, DELETED, MODIFIED, CacheEvent, GpuCache
from gpuheal.agents.device_api.errors import (
    AlreadyExistsError,
    CacheFullError,
    ConflictError,
    DeviceApiError,
    ExpiredError,
    InvalidArgumentError,
    NotFoundError,
    NotReadyError,
    ShuttingDownError,
    TooManyWatchesError,
    WatchDroppedError,
)
from gpuheal.agents.device_api.readiness import ReadinessGate
from gpuheal.agents.device_api.server import DEFAULT_SOCKET_PATH, GPU_SERVICE_NAME, DeviceApiServer
from gpuheal.agents.device_api.service import GpuService, GpuServicer
from gpuheal.agents.device_api.watch import Subscription, WatchHub, WatchState

__all__ = [
    "ADDED",
    "DEFAULT_SOCKET_PATH",
    "DELETED",
    "GPU_SERVICE_NAME",
    "MODIFIED",
    "AlreadyExistsError",
    "CacheEvent",
    "CacheFullError",
    "ConflictError",
    "DeviceApiError",
    "DeviceApiServer",
    "ExpiredError",
    "GpuCache",
    "GpuService",
    "GpuServicer",
    "InvalidArgumentError",
    "NotFoundError",
    "NotReadyError",
    "ReadinessGate",
    "ShuttingDownError",
    "Subscription",
    "TooManyWatchesError",
    "WatchDroppedError",
    "WatchHub",
    "WatchState",
]
