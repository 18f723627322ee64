"""``SimulatedCluster``: the simulated fleet's Kubernetes API over HTTPS, with a kubeconfig to reach it.

Use it from asyncio::

    async with SimulatedCluster(FleetConfig(nodes=4), state_dir=tmp_path) as cluster:
        ...  # cluster.url, cluster.kubeconfig, cluster.store

or from synchronous code, with the event loop in a background thread::

    with SimulatedCluster.running_in_thread(FleetConfig(), state_dir) as cluster:
        ...

The API is served over HTTPS (127.0.0.1 on a free port unless told otherwise) with a certificate
from the simulator's own CA, as a real API server is: kubectl and the official clients send bearer
tokens only over TLS. The kubeconfig it writes carries the CA (``certificate-authority-data``), the
server, a context and a user with the cluster admin's bearer token (``system:masters``, as kubeadm's
``admin.conf``). Components under test get tokens of their own service accounts instead
(``service_account_token``, ``service_account_kubeconfig``; bound to a node or a pod like a projected
token), and what RBAC and the admission policies loaded from ``FleetConfig.access_manifests`` allow
them is all they can do; ``accesses`` tells which permissions each user really used. The simulator's
own control API (``/sim/v1``: reboots and faults, what a cloud console would do) listens on plain
HTTP on the same host at ``control_url``. The helper methods (``request_reboot``, ``inject_fault``,
``reboot_requests``, ``get_object`` …) may be called from any thread: in thread mode they run on the
simulation's loop and wait for the result. ``store`` gives direct access to the object store; use it
only on the simulation's loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from . import tls
from .access import Access, Denial
from .api import MAX_REQUEST_BODY_BYTES, KubernetesApi
from .clouds.catalog import ENDPOINTS
from .clouds.endpoint import CloudContext, CloudEndpoint
from .clouds.faults import CloudFault
from .control import ControlApi
from .fleet import FleetConfig
from .jsonvalues import JsonDict, clone, dumps
from .resources import ALL, BY_KEY, ResourceType
from .simulation import Simulation
from .store import Store

T = TypeVar("T")

CLUSTER_NAME = "gpuheal-sim"
USER_NAME = "gpuheal-sim-admin"


def write_kubeconfig(path: Path, url: str, token: str, ca_file: Path, user: str = USER_NAME) -> Path:
    """Write a kubeconfig (JSON is valid YAML) for ``url``, trusting ``ca_file``, with a bearer-token user."""
    authority = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": url, "certificate-authority-data": authority}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path


async def _serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: a free one); returns the runner and the port it got."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner, int(runner.addresses[0][1])


def resource_type(resource: str) -> ResourceType:
    """A resource by storage key (``pods``, ``deployments.apps``) or plural (``deployments``)."""
    if resource in BY_KEY:
        return BY_KEY[resource]
    for rt in ALL:
        if rt.plural == resource and rt.storage is None:
            return rt
    raise KeyError(f"unknown resource {resource!r}")


class SimulatedCluster:
    """A simulated GPU fleet behind a Kubernetes API server on HTTP."""

    def __init__(
        self,
        config: FleetConfig | None = None,
        state_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: Path | str | None = None,
    ) -> None:
        self.config = config or FleetConfig()
        self.host = host
        self._requested_port = port
        self.port = port
        self.token = self.config.token or secrets.token_urlsafe(24)
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._kubeconfig_path = Path(kubeconfig_path) if kubeconfig_path is not None else None
        self._sim: Simulation | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread_error: BaseException | None = None
        self._control_runner: web.AppRunner | None = None
        self.control_port = 0
        self._cloud_runner: web.AppRunner | None = None
        self._clouds: list[CloudEndpoint] = []
        self._cloud_context: CloudContext | None = None
        self._certificates: tls.Certificates | None = None

    # --- lifecycle (asyncio) -----------------------------------------------------------------------

    async def start(self) -> SimulatedCluster:
        """Build the fleet, start serving and write the kubeconfig."""
        if self._runner is not None:
            raise RuntimeError("the simulated cluster is already running")
        self._loop = asyncio.get_running_loop()
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="gpuheal-sim-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        sim = Simulation(self.config)
        self._sim = sim
        certificates = tls.issue(self.state_dir / "tls", tuple(dict.fromkeys((self.host, "127.0.0.1", "localhost"))))
        self._certificates = certificates
        await self._serve_clouds(sim, self.state_dir, certificates)
        sim.build()
        api = web.Application(client_max_size=MAX_REQUEST_BODY_BYTES)
        KubernetesApi(sim, self.token).add_routes(api)
        self._runner, self.port = await _serve(api, self.host, self._requested_port, certificates.server_context())
        control = web.Application()
        ControlApi(sim).add_routes(control)
        self._control_runner, self.control_port = await _serve(control, self.host, 0, None)
        write_kubeconfig(self.kubeconfig, self.url, self.token, certificates.ca_file)
        return self

    async def _serve_clouds(self, sim: Simulation, state_dir: Path, certificates: tls.Certificates) -> None:
        """Serve every simulated cloud on an HTTPS listener and give the fleet the chosen cloud's identities."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        context = CloudContext(
            sim, sim.cloud_faults, f"https://{self.host}:{listener.getsockname()[1]}", state_dir, certificates
        )
        self._cloud_context = context
        app = web.Application()
        self._clouds = [endpoint(context) for endpoint in ENDPOINTS]
        for cloud in self._clouds:
            cloud.add_routes(app)
        sim.cloud_names = frozenset(cloud.name for cloud in self._clouds)
        chosen = next((cloud for cloud in self._clouds if cloud.name == self.config.cloud), None)
        if chosen is not None:
            sim.identify = lambda node, index: (chosen.provider_id(node, index), chosen.node_annotations(node))
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, listener, ssl_context=certificates.server_context()).start()
        self._cloud_runner = runner
        for cloud in self._clouds:
            await cloud.start()

    async def stop(self) -> None:
        """Stop serving, end every watch and timer, and remove a temporary state directory."""
        for cloud in self._clouds:
            await cloud.stop()
        self._clouds = []
        if self._cloud_runner is not None:
            await self._cloud_runner.cleanup()
            self._cloud_runner = None
        if self._sim is not None:
            self._sim.close()
        for runner in (self._runner, self._control_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._control_runner = None
        if self._own_state_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    async def __aenter__(self) -> SimulatedCluster:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- lifecycle (background thread) -------------------------------------------------------------

    def start_in_thread(self, timeout: float = 60.0) -> SimulatedCluster:
        """Run the cluster on its own event loop in a daemon thread; returns once it serves."""
        ready = threading.Event()

        async def main() -> None:
            self._stop_event = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                self._thread_error = exc
                ready.set()
                return
            ready.set()
            try:
                await self._stop_event.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="gpuheal-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the simulated cluster did not start in time")
        if self._thread_error is not None:
            self._thread.join(timeout)
            raise RuntimeError("the simulated cluster failed to start") from self._thread_error
        return self

    def stop_in_thread(self, timeout: float = 30.0) -> None:
        """Stop a cluster started with ``start_in_thread`` and wait for its thread."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or event is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(event.set)
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimulatedCluster:
        return self.start_in_thread()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_in_thread()

    @classmethod
    @contextlib.contextmanager
    def running_in_thread(
        cls, config: FleetConfig | None = None, state_dir: Path | str | None = None, **kwargs: Any
    ) -> Iterator[SimulatedCluster]:
        cluster = cls(config, state_dir, **kwargs)
        cluster.start_in_thread()
        try:
            yield cluster
        finally:
            cluster.stop_in_thread()

    # --- properties --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Kubernetes API's base URL (HTTPS, trusted through ``ca_file``)."""
        return f"https://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        """The base URL of the simulator's own control API (``/sim/v1``, plain HTTP)."""
        return f"http://{self.host}:{self.control_port}"

    @property
    def cloud_url(self) -> str:
        """Base URL of the HTTPS listener the simulated clouds answer on."""
        return self._context().url

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the HTTPS listeners' certificate (API server and clouds)."""
        if self._certificates is None:
            raise RuntimeError("the simulated cluster has not been started")
        return self._certificates.ca_file

    def client_environment(self) -> dict[str, str]:
        """Environment under which the cloud SDKs' standard settings reach the simulated clouds."""
        environment: dict[str, str] = {}
        for cloud in self._clouds:
            environment.update(cloud.client_environment())
        return environment

    def cloud(self, name: str) -> CloudEndpoint:
        """The simulated cloud called `name` ("aws", "azure", "gcp", "nebius", "redfish")."""
        for cloud in self._clouds:
            if cloud.name == name:
                return cloud
        raise KeyError(f"unknown cloud {name!r}")

    def inject_cloud_fault(self, cloud: str, fault: CloudFault | str, count: int = 1) -> None:
        """The cloud's next `count` requests fail with `fault` (throttle, not_found, denied)."""
        if cloud not in self.simulation.cloud_names:
            raise KeyError(f"unknown cloud {cloud!r}")
        self.call(lambda: self.simulation.cloud_faults.inject(cloud, CloudFault(fault), count))

    def _context(self) -> CloudContext:
        if self._cloud_context is None:
            raise RuntimeError("the simulated cluster has not been started")
        return self._cloud_context

    @property
    def kubeconfig(self) -> Path:
        if self._kubeconfig_path is not None:
            return self._kubeconfig_path
        if self.state_dir is None:
            raise RuntimeError("the simulated cluster has not been started")
        return self.state_dir / "kubeconfig"

    @property
    def simulation(self) -> Simulation:
        if self._sim is None:
            raise RuntimeError("the simulated cluster has not been started")
        return self._sim

    @property
    def store(self) -> Store:
        return self.simulation.store

    def node_names(self) -> list[str]:
        """The names of the fleet's nodes, as built (``gpu-node-000`` …)."""
        return self.config.node_names()

    @property
    def build_seconds(self) -> float:
        return self.simulation.build_seconds

    # --- identities and what they did --------------------------------------------------------------

    def service_account_token(
        self, namespace: str, name: str, node: str | None = None, *, pod: str | None = None
    ) -> str:
        """A token of the ServiceAccount ``namespace/name`` (loaded from ``access_manifests``).

        Bound to ``node`` or to the pod ``pod`` (then to its node too), the user carries
        ``authentication.kubernetes.io/node-name`` (and ``node-uid``, ``pod-name``, ``pod-uid``) in
        its extra, as a pod's projected token does, and the token stops working when that object goes.
        """
        return self.call(lambda: self.simulation.access.authenticator.issue(namespace, name, node=node, pod=pod))

    def kubeconfig_for(self, token: str, path: Path | str, user: str = "service-account") -> Path:
        """Write a kubeconfig at ``path`` for this cluster with ``token`` as its user's credentials."""
        return write_kubeconfig(Path(path), self.url, token, self.ca_file, user)

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | str, *, node: str | None = None, pod: str | None = None
    ) -> Path:
        """``kubeconfig_for(service_account_token(...))``: how a pod of that account reaches the API."""
        token = self.service_account_token(namespace, name, node=node, pod=pod)
        return self.kubeconfig_for(token, path, f"{namespace}-{name}")

    def accesses(self, user: str | None = None) -> set[Access]:
        """The kinds of request ``user`` (every user: None) made that were authorized."""
        return self.call(lambda: self.simulation.access.used_by(user))

    def denials(self) -> list[Denial]:
        """The requests refused by RBAC, oldest first."""
        return self.call(lambda: list(self.simulation.access.denials))

    # --- thread-safe helpers -----------------------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the simulation's event loop (directly when already on it)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or self._thread is None or threading.current_thread() is self._thread:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def request_reboot(self, node: str, request_id: str | None = None) -> JsonDict:
        return self.call(lambda: self.simulation.lifecycle.request_reboot(node, request_id))

    def inject_fault(
        self, node: str, xid: int, gpu: int | str = 0, message: str | None = None, survives_reboot: bool = False
    ) -> JsonDict:
        return self.call(lambda: self.simulation.lifecycle.inject_fault(node, xid, gpu, message, survives_reboot))

    def clear_faults(self, node: str) -> None:
        self.call(lambda: self.simulation.lifecycle.clear_faults(node))

    def attach_agent(self, node: str, boot_id_file: Path) -> None:
        """A real gpuheal agent runs for ``node``: ``boot_id_file`` holds the node's boot id (kept
        current across reboots, as /proc/sys/kernel/random/boot_id), and GpuHealthy is the agent's."""
        self.call(lambda: self.simulation.lifecycle.attach_agent(node, boot_id_file))

    def node_state(self, node: str) -> JsonDict:
        """The simulator's truth about a node (what ``GET /sim/v1/nodes/{name}`` returns)."""
        return self.call(lambda: self.simulation.lifecycle.truth(node))

    def snapshot(self) -> bytes:
        """The cluster's whole state: every stored object, and the simulator's truth about every machine
        (boot IDs, reboot requests, GPUs); equal snapshots mean nothing was written and nothing rebooted."""

        def take() -> bytes:
            machines = [dumps(self.simulation.lifecycle.truth(node)) for node in self.node_names()]
            return b"\n".join([self.store.snapshot(), *machines])

        return self.call(take)

    def reboot_requests(self, node: str) -> int:
        return self.call(lambda: self.simulation.lifecycle.state(node).reboot_requests)

    def reboots_completed(self, node: str) -> int:
        return self.call(lambda: self.simulation.lifecycle.state(node).reboots_completed)

    def get_object(self, resource: str, name: str, namespace: str = "") -> JsonDict | None:
        """A copy of a stored object (``resource`` as ``pods`` or ``deployments.apps``), or None."""
        rt = resource_type(resource)

        def get() -> JsonDict | None:
            entry = self.store.get(rt.key, namespace if rt.namespaced else "", name)
            return clone(entry.obj) if entry is not None else None

        return self.call(get)

    def list_objects(self, resource: str, namespace: str | None = None) -> list[JsonDict]:
        """Copies of the stored objects of a resource, ordered by namespace and name."""
        rt = resource_type(resource)

        def get() -> list[JsonDict]:
            return [clone(e.obj) for e in self.store.sorted_objects(rt.key, namespace)]

        return self.call(get)
