"""What one Kubernetes API request costs the worker's process in CPU, through the official asyncio client.

A simulated fleet runs as its own process (HTTPS, bearer token, as the worker meets it), so the
figures are this process's CPU alone: `time.process_time()` over a batch of sequential requests,
divided by the batch. Each request is one the activities make (gpuheal.activities.kube, drain): a
node read, a merge patch of one annotation, the list of one node's pods a drain makes, and, to
show what the typed model costs, a node read whose body is left unparsed.

Two clients make them, in alternating batches so that the machine's other load falls on both: the
official client as `new_client_from_config` builds it (its session trusts the environment, so
aiohttp looks for proxies and a ~/.netrc on every request), and gpuheal's `connect`. The floor is a
plain aiohttp GET of the same node URL over the same TLS context and token. Figures are medians
over the batches; no target, so no verdict.

Run it alone with `python -m bench.kube_client`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
from kubernetes.aio import client, config

from bench.stack import fleet_process
from gpuheal.activities.drain import pods_to_move
from gpuheal.activities.kube import MERGE_PATCH, read_node
from gpuheal.kubeclient import connect

NODE = "gpu-node-000"
LIST = "list one node's pods"
FLOOR = "plain aiohttp GET of the node (floor)"
ON_NODE = f"spec.nodeName={NODE}"
BATCHES = 7
PER_BATCH = 40

Request = Callable[[], Awaitable[object]]
K = TypeVar("K")


async def cpu_per_request(request: Request) -> float:
    """Microseconds of this process's CPU per call, over one batch of sequential calls."""
    began = time.process_time()
    for _ in range(PER_BATCH):
        await request()
    return (time.process_time() - began) / PER_BATCH * 1e6


def requests_of(api: client.ApiClient) -> dict[str, Request]:
    core = client.CoreV1Api(api)

    def patch() -> Awaitable[object]:
        # merge_patch_node's request without its resourceVersion, which the other client's patches
        # and the kubelet's heartbeats would turn into conflicts: the same bytes each way otherwise.
        annotations = {"bench": str(time.time())}
        return core.patch_node(NODE, {"metadata": {"annotations": annotations}}, _content_type=MERGE_PATCH)

    async def unparsed_read() -> None:
        response = await core.read_node_without_preload_content(NODE)
        await response.read()

    return {
        "read_node": lambda: read_node(core, NODE),
        "merge patch of one annotation": patch,
        LIST: lambda: pods_to_move(core, NODE),
        "read_node, body not parsed": unparsed_read,
    }


async def plain_get(api: client.ApiClient, session: aiohttp.ClientSession) -> Request:
    """A bare GET of the node's URL with the client's own TLS context and token."""
    url = f"{api.configuration.host}/api/v1/nodes/{NODE}"
    token = (await api.configuration.auth_settings())["BearerToken"]["value"]
    headers = {"Authorization": str(token), "Accept": "application/json"}

    async def get() -> None:
        async with session.get(url, headers=headers, ssl=api.rest_client.ssl_context) as response:
            await response.read()

    return get


async def medians(requests: dict[K, Request]) -> dict[K, float]:
    """The median CPU per request of each, over batches that take turns."""
    for request in requests.values():
        await request()  # opens the connection, builds the session
    samples: dict[K, list[float]] = {key: [] for key in requests}
    for _ in range(BATCHES):
        for key, request in requests.items():
            samples[key].append(await cpu_per_request(request))
    return {key: statistics.median(values) for key, values in samples.items()}


async def run() -> None:
    print(f"\n## Kubernetes client: CPU µs per request in the calling process, median of {BATCHES} × {PER_BATCH}")
    with tempfile.TemporaryDirectory() as state:
        async with fleet_process(Path(state), "--nodes", "2", "--gpus-per-node", "1") as fleet:
            official = await config.new_client_from_config(config_file=str(fleet.kubeconfig), persist_config=False)  # type: ignore[no-untyped-call]
            async with official, await connect(fleet.kubeconfig) as gpuheal, aiohttp.ClientSession() as session:
                listed = await client.CoreV1Api(gpuheal).list_pod_for_all_namespaces(field_selector=ON_NODE)
                clients = {"official default": requests_of(official), "connect": requests_of(gpuheal)}
                cpu = await medians(
                    {
                        (FLOOR, ""): await plain_get(gpuheal, session),
                        **{(kind, name): r for name, kinds in clients.items() for kind, r in kinds.items()},
                    }
                )
    print(f"  {FLOOR:<38} {cpu[FLOOR, '']:6.0f}")
    for kind in clients["connect"]:
        old, new = cpu[kind, "official default"], cpu[kind, "connect"]
        label = f"{kind} ({len(listed.items)})" if kind == LIST else kind
        print(f"  {label:<38} official default {old:6.0f}   connect {new:6.0f}   (saved {old - new:4.0f})")


if __name__ == "__main__":
    asyncio.run(run())
