"""`gpuheal demo --via injector`: the fault goes in through the fault injector, as an operator's would.

Each node with a gpuheal agent gets an injector agent (its simulated /dev/kmsg writing into the
node's kernel log file, its driver GPU directory, its pod in the simulated cluster), and the central
API runs beside them; the demo then injects with `POST /api/v1/faults/gpu/inject/xid-<xid>` and
follows the fault id the API answers with. The API reaches the simulated cluster as the chart's
injector-api account (`kubeconfig`), which may only list pods in its namespace.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gpuheal.tools.injector.api import InjectorApiSettings, running_api
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.client import inject_xid
from gpuheal_sim.injection import injector_on_node
from gpuheal_sim.simulator import SimulatedCluster


@dataclass(frozen=True, slots=True)
class DemoInjector:
    """The running central API, and the token its callers carry."""

    url: str
    token: str

    async def inject(self, node: str, xid: int, gpu: int) -> str:
        """Inject through the API; the fault id it answers with."""
        answer = await inject_xid(self.url, self.token, node, xid, gpu)
        return str(answer["fault_id"])


@asynccontextmanager
async def demo_injector(
    cluster: SimulatedCluster,
    namespace: str,
    kernel_logs: Mapping[str, Path],
    gpus: int,
    home: Path,
    kubeconfig: Path,
) -> AsyncIterator[DemoInjector]:
    """Injector agents on the nodes of `kernel_logs` (node → its kernel log file) and the central API,
    while the block runs; `home` holds their FIFOs and driver directories (a short path)."""
    token = secrets.token_urlsafe(32)
    async with AsyncExitStack() as stack:
        for node, kernel_log in kernel_logs.items():
            await stack.enter_async_context(
                injector_on_node(cluster, namespace, node, gpus, home / node, kernel_log, token)
            )
        settings = InjectorApiSettings(token=Token(token), namespace=namespace, port=0, kubeconfig=kubeconfig)
        port = await stack.enter_async_context(running_api(settings))
        yield DemoInjector(f"http://127.0.0.1:{port}", token)
