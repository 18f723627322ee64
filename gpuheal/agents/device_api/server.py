"""The Device API server: GpuService, health checking and reflection on a unix socket.

The unix socket is the normal path (node-local, guarded by file permissions: mode 0660, so only the
owner and its group connect). TCP is off unless a port is given, and then binds 127.0.0.1 unless
told otherwise, because the API has no authentication.

    async with DeviceApiServer("/var/run/gpuheal/device-api.sock", expected_gpus=8) as server:
        server.cache.create(gpu)  # in-process providers write to the cache directly
        await server.call(server.service.list_gpus, gpu_pb2.ListGpusRequest())  # or call as clients do
        ...

The gRPC health service (`grpc.health.v1.Health`) reports NOT_SERVING for the server ("") and for
`nvidia.device.v1alpha1.GpuService` until the readiness gate opens, then SERVING, so a kubelet
probe or a consumer can wait for it; on stop it turns NOT_SERVING again before connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped,unused-ignore]

from gpuheal.agents.decoding import Answered, add_decoding_servicer
from gpuheal.agents.device_api.cache import DEFAULT_MAX_GPUS, CacheEvent, GpuCache
from gpuheal.agents.device_api.errors import DeviceApiError, ShuttingDownError
from gpuheal.agents.device_api.limits import GpuLimits
from gpuheal.agents.device_api.readiness import ReadinessGate
from gpuheal.agents.device_api.service import UNARY_METHODS, GpuService, GpuServicer, Request, Response
from gpuheal.agents.device_api.watch import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_MAX_WATCHES,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    WatchHub,
)
from gpuheal.agents.unix_socket import binding_privately, prepare_socket_path, restrict_socket
from gpuheal.protos import gpu_pb2
from gpuheal.protos.sockets import DEVICE_API_SOCKET, SOCKET_DIR

GPU_SERVICE_NAME: str = gpu_pb2.DESCRIPTOR.services_by_name["GpuService"].full_name
HEALTH_SERVICE_NAME: str = health.SERVICE_NAME
REFLECTION_SERVICE_NAME: str = reflection.SERVICE_NAME
DEFAULT_SOCKET_PATH = str(SOCKET_DIR / DEVICE_API_SOCKET)
DEFAULT_TCP_HOST = "127.0.0.1"
# The largest request gRPC decodes: one GPU is at most a few hundred bytes beyond its status
# (32 KiB by default, see limits.py), so this leaves room and still refuses a 4 MiB write
# (RESOURCE_EXHAUSTED) before it is read into memory.
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
# Calls served at once besides the watches (each holding up to a request's bytes): more get
# RESOURCE_EXHAUSTED from gRPC, which gpuheal's publisher retries.
DEFAULT_MAX_CALLS = 64


class DeviceApiServer:
    """One node's Device API: the cache, watch fan-out, readiness gate and the gRPC server.

    - `socket_path`: where to listen (parent directories are created; a stale socket left by a
      previous run is removed, a live one is an error).
    - `tcp_port`: also listen on TCP when given (0 picks a free port, see `tcp_port` once started);
      `tcp_host` defaults to 127.0.0.1.
    - `expected_gpus`: how many GPUs the node has; the readiness gate opens when that many are
      registered. Without it the gate waits for `mark_ready()`.
    - `max_gpus`, `watch_queue_size`, `watch_history`: bounds of the cache, of each watcher's queue
      and of the replay history for resuming watches; `watch_queue_bytes` and `watch_history_bytes`
      bound the latter two in bytes too.
    - `limits`: what one GPU may carry; `max_request_bytes`: the largest request gRPC accepts.
    - `max_watches`: watches served at once; `max_calls`: other calls served at once beside them
      (gRPC serves at most `max_watches + max_calls` calls in all, health checks included, and
      answers more with RESOURCE_EXHAUSTED).
    - `answered`: told of every GpuService call's method and status code (the agent's metrics),
      whether it came over gRPC or from this process (`call`).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        tcp_port: int | None = None,
        tcp_host: str = DEFAULT_TCP_HOST,
        expected_gpus: int | None = None,
        max_gpus: int = DEFAULT_MAX_GPUS,
        watch_queue_size: int = DEFAULT_QUEUE_SIZE,
        watch_history: int = DEFAULT_HISTORY_SIZE,
        watch_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        watch_history_bytes: int = DEFAULT_HISTORY_BYTES,
        limits: GpuLimits | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_watches: int = DEFAULT_MAX_WATCHES,
        max_calls: int = DEFAULT_MAX_CALLS,
        answered: Answered | None = None,
    ) -> None:
        self._socket_path = Path(socket_path).absolute()
        self._tcp_requested = tcp_port
        self._tcp_host = tcp_host
        self._tcp_port: int | None = None
        self._max_request_bytes = max_request_bytes
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, not {max_calls}")
        self._max_rpcs = max_watches + max_calls
        self._answered = answered
        self.cache = GpuCache(max_gpus, limits)
        self.hub = WatchHub(
            watch_queue_size,
            watch_history,
            queue_bytes=watch_queue_bytes,
            history_bytes=watch_history_bytes,
            max_watches=max_watches,
        )
        self.gate = ReadinessGate(expected_gpus)
        self.service = GpuService(self.cache, self.hub, self.gate)
        self.cache.add_listener(self.hub.publish)
        self.cache.add_listener(self._count_registered)
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self._socket_path

    @property
    def target(self) -> str:
        """The gRPC target for the unix socket, e.g. for `grpc.aio.insecure_channel`."""
        return f"unix:{self._socket_path}"

    @property
    def tcp_port(self) -> int | None:
        """The TCP port bound once started, or None when TCP is off."""
        return self._tcp_port

    @property
    def tcp_target(self) -> str | None:
        if self._tcp_port is None:
            return None
        host = f"[{self._tcp_host}]" if ":" in self._tcp_host else self._tcp_host
        return f"{host}:{self._tcp_port}"

    # -- readiness -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.gate.ready

    def mark_ready(self) -> None:
        """Providers have registered everything they will: start serving consumers."""
        self.gate.mark_ready()

    # -- callers in this process --------------------------------------------------------------

    async def call(self, operation: Callable[[Request], Response], request: Request) -> Response:
        """Run one of `service`'s unary operations for a caller in this process, as a gRPC call of its method runs it.

        `operation` is the service's own (e.g. `server.service.list_gpus`), which names the method
        (ListGpus); anything else, WatchGpus's stream included, is refused (ValueError). What
        differs is only the transport's: no serialization, framing or per-call task. So the call is
        refused UNAVAILABLE (ShuttingDownError) unless the server is started and not stopping, as a
        gRPC client is; its outcome is told to `answered` under the method's name, as a gRPC call's
        is; the answer or the DeviceApiError is the operation's own (responses the service shares,
        like ListGpus's, are read-only); and a caller that wrote is paced after it as gRPC would
        pace it, so the watch streams keep up (`WatchHub.room`). What only a gRPC call can meet
        does not apply: `max_request_bytes` (a request is not decoded), `max_calls` (nothing
        waits) and deadlines.
        """
        name = getattr(operation, "__name__", "")
        method = UNARY_METHODS.get(name)
        if method is None or operation != getattr(self.service, name):
            raise ValueError(
                f"{operation!r} is not one of the Device API's unary operations ({', '.join(UNARY_METHODS)})"
            )
        if self._server is None:
            raise ShuttingDownError("the device API server is not serving")
        version = self.cache.resource_version
        try:
            response = operation(request)
        except DeviceApiError as error:
            self._tell(method, error.code.name)
            raise
        except Exception:
            self._tell(method, grpc.StatusCode.UNKNOWN.name)  # what gRPC answers for what a handler raises
            raise
        self._tell(method, grpc.StatusCode.OK.name)
        if self.cache.resource_version != version:  # it wrote: the watches have an event to send
            await self.hub.room()
        return response

    def _tell(self, method: str, code: str) -> None:
        if self._answered is not None:
            self._answered(method, code)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; raises if a live server already owns the socket."""
        if self._server is not None:
            raise RuntimeError("the device API server is already started")
        prepare_socket_path(self._socket_path)
        # so_reuseport off: a second server on the same TCP port must fail, not share the port.
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", self._max_request_bytes)],
            maximum_concurrent_rpcs=self._max_rpcs,
        )
        self._health = health.aio.HealthServicer()
        add_decoding_servicer(
            server,
            gpu_pb2.DESCRIPTOR.services_by_name["GpuService"],
            GpuServicer(self.service),
            self._answered,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((GPU_SERVICE_NAME, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME), server)
        try:
            with binding_privately():
                server.add_insecure_port(self.target)
            if self._tcp_requested is not None:
                host = f"[{self._tcp_host}]" if ":" in self._tcp_host else self._tcp_host
                self._tcp_port = server.add_insecure_port(f"{host}:{self._tcp_requested}")
            await self._set_health(serving=self.gate.ready)
            await server.start()
            restrict_socket(self._socket_path)
        except BaseException:
            await server.stop(None)
            self._tcp_port = None
            _remove_socket(self._socket_path)
            raise
        self._server = server
        self.hub.accepting = True
        self.gate.add_listener(self._on_ready)

    async def stop(self, grace: float | None = 1.0) -> None:
        """End every watch, report NOT_SERVING, then stop within `grace` seconds and remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self.hub.close_all()
        await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        _remove_socket(self._socket_path)
        self._tcp_port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _count_registered(self, _event: CacheEvent) -> None:
        self.gate.observe(len(self.cache))

    def _on_ready(self) -> None:
        # The gate opens inside a synchronous cache write or mark_ready(); the health servicer's
        # setter is a coroutine, so it runs as a task right after.
        task = asyncio.get_running_loop().create_task(self._set_health(serving=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set_health(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", GPU_SERVICE_NAME):
            await self._health.set(service, status)


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
