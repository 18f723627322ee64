"""The injector's central API on a simulated cluster: it finds each node's agent through the
Kubernetes API (the official client, over HTTPS, as the chart's injector-api ServiceAccount) and
routes injections to it; the agents write into their nodes' simulated /dev/kmsg."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gpuheal.address import parse_listen_address
from gpuheal.tools.injector.api import InjectorApiSettings, running_api
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.serving import serving
from gpuheal_sim.fake_nvml import fake_gpu_info
from gpuheal_sim.injection import agent_pod, injector_on_node
from gpuheal_sim.simulator import Access, FleetConfig, SimulatedCluster, service_account_username
from gpuheal_sim.simulator.kubelet import START_ANNOTATION
from gpuheal_sim.simulator.resources import PODS
from tests.chart import NAMESPACE, access_manifests, service_account
from tests.ipv6 import NEEDS_IPV6
from tests.tools.injector.conftest import TOKEN

NODES = ["gpu-node-000", "gpu-node-001"]
# A node whose agent's pod never starts, and one whose agent's pod runs where nothing listens.
STARTING, SILENT = "gpu-node-002", "gpu-node-003"
# One whose agent is Running but not Ready (crash-looping), one whose only agent is being deleted,
# and one whose agent takes every request and never answers.
CRASHING, TERMINATING, SLOW = "gpu-node-004", "gpu-node-005", "gpu-node-006"
# How long the API waits for an agent's answer here: the healthy agents answer at once.
AGENT_TIMEOUT = 1.0


@dataclass
class Fleet:
    cluster: SimulatedCluster
    url: str
    session: aiohttp.ClientSession
    kernel_logs: dict[str, Path]
    blackhole: int
    settings: InjectorApiSettings

    async def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    state = tmp_path_factory.mktemp("injector-api")
    config = FleetConfig(
        nodes=7, gpus_per_node=2, workloads=False, pod_start_seconds=0.05, access_manifests=access_manifests(True)
    )
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(SimulatedCluster(config, state_dir=state / "fleet"))
        kernel_logs = {}
        for node in NODES:
            kernel_logs[node] = state / node / "kmsg.log"
            kernel_logs[node].parent.mkdir()
            kernel_logs[node].touch()
            await stack.enter_async_context(
                injector_on_node(cluster, NAMESPACE, node, 2, state / node / "injector", kernel_logs[node], TOKEN)
            )
        starting = agent_pod(NAMESPACE, STARTING, "127.0.0.1", 1)
        starting["metadata"]["annotations"] = {START_ANNOTATION: "3600"}
        # Ready from the start, at the discard port, where nothing listens.
        silent = with_status(agent_pod(NAMESPACE, SILENT, "127.0.0.1", 9), ready=True)
        # Listening, never accepting: the kernel takes connections and requests, and nothing answers.
        blackhole = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=512))
        slow = with_status(agent_pod(NAMESPACE, SLOW, "127.0.0.1", blackhole.getsockname()[1]), ready=True)
        # A second agent on a healthy node during a rolling update: it sorts first, but is not Ready.
        surge = with_status(agent_pod(NAMESPACE, NODES[0], "127.0.0.1", 9), ready=False)
        surge["metadata"]["name"] = "a-surge-agent"
        crashing = with_status(agent_pod(NAMESPACE, CRASHING, "127.0.0.1", 9), ready=False)
        for pod in (starting, silent, slow, crashing, surge):
            cluster.call(functools.partial(cluster.simulation.registry.create_object, "pods", pod))
        leaving = with_status(agent_pod(NAMESPACE, TERMINATING, "127.0.0.1", 9), ready=True)
        entry = cluster.call(functools.partial(cluster.simulation.registry.create_object, "pods", leaving))
        cluster.call(functools.partial(cluster.simulation.registry.delete_pod, entry, 3600))
        kubeconfig = cluster.service_account_kubeconfig(
            *service_account("injector-api"), state / "injector-api.kubeconfig"
        )
        settings = InjectorApiSettings(
            token=Token(TOKEN), namespace=NAMESPACE, port=0, kubeconfig=kubeconfig, agent_timeout=AGENT_TIMEOUT
        )
        port = await stack.enter_async_context(running_api(settings))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Fleet(cluster, f"http://127.0.0.1:{port}", session, kernel_logs, blackhole.getsockname()[1], settings)


def with_status(pod: dict[str, Any], *, ready: bool) -> dict[str, Any]:
    """`pod` Running with its container started, Ready or not (a crash loop keeps phase Running)."""
    flag = "True" if ready else "False"
    container = pod["spec"]["containers"][0]["name"]
    pod["status"] = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": flag}, {"type": "ContainersReady", "status": flag}],
        "containerStatuses": [
            {
                "name": container,
                "state": {"running": {}},
                "ready": ready,
                "restartCount": 7,
                "image": "i",
                "imageID": "",
            }
        ],
    }
    return pod


async def test_an_injection_reaches_the_nodes_kernel_log_through_its_agent(fleet: Fleet) -> None:
    status, answer = await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-79", {"node_name": NODES[1], "gpu_id": 1})

    assert status == 200, answer
    fault_id = answer["fault_id"]
    assert answer["node_name"] == NODES[1]
    assert answer["agent"]["fault_id"] == fault_id
    pci = fake_gpu_info(NODES[1], 1).pci_bus_id
    assert answer["agent"]["pci"] == pci
    # The kernel gives a user-space write the user facility: <3> reads back as priority 11.
    [record] = fleet.kernel_logs[NODES[1]].read_text().splitlines()
    assert record.startswith("11,")
    assert record.endswith(f",-;NVRM: NVRM: Xid (PCI:{pci}): 79, GPU has fallen off the bus")
    assert fleet.kernel_logs[NODES[0]].read_text() == ""

    status, listed = await fleet.call("GET", f"/api/v1/faults?node={NODES[1]}")
    assert status == 200
    assert fault_id in {fault["fault_id"] for fault in listed["faults"]}
    assert {fault["node_name"] for fault in listed["faults"]} == {NODES[1]}


async def test_the_gpu_defaults_to_0(fleet: Fleet) -> None:
    status, answer = await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-48", {"node_name": NODES[0]})

    assert status == 200, answer
    assert (answer["agent"]["gpu"], answer["agent"]["pci"]) == (0, fake_gpu_info(NODES[0], 0).pci_bus_id)


async def test_the_agents_refusal_comes_back_with_its_reason(fleet: Fleet) -> None:
    status, answer = await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-79", {"node_name": NODES[0], "gpu_id": 5})

    assert status == 422
    assert answer["error"] == "gpu_id: no GPU 5 on this node (GPUs: 0, 1)"
    assert answer["node_name"] == NODES[0]
    assert answer["fault_id"].startswith("xid79-"), "every answer after the id is given names it"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("xid-79", {"node_name": "gpu-node-404"}, 404, "no injector agent on node 'gpu-node-404'"),
        ("xid-9999", {"node_name": NODES[0]}, 422, "xid: XID 9999 is not in the XID catalog"),
        ("xid-9999999", {"node_name": NODES[0]}, 422, "xid: '9999999' is not an XID number"),
        ("xid--1", {"node_name": NODES[0]}, 422, "xid: '-1' is not an XID number"),
        ("xid-79", {"node_name": NODES[0], "gpu_id": "0"}, 422, "gpu_id: Input should be a valid integer"),
        ("xid-79", {"node": NODES[0]}, 422, "node_name: Field required"),
        ("xid-79", {"node_name": f"{NODES[0]},metadata.name=x"}, 422, "node_name: String should match pattern"),
        (
            "xid-79",
            {"node_name": STARTING},
            503,
            f"the injector agent on node '{STARTING}' cannot be called yet: pod injector-agent-{STARTING} is Pending",
        ),
        (
            "xid-79",
            {"node_name": CRASHING},
            503,
            f"the injector agent on node '{CRASHING}' cannot be called yet: pod injector-agent-{CRASHING} "
            "is Running but not Ready",
        ),
        (
            "xid-79",
            {"node_name": TERMINATING},
            503,
            f"the injector agent on node '{TERMINATING}' cannot be called yet: pod injector-agent-{TERMINATING} "
            "is terminating",
        ),
        (
            "xid-79",
            {"node_name": SILENT},
            502,
            f"the injector agent on node '{SILENT}' (http://127.0.0.1:9) cannot be reached",
        ),
    ],
)
async def test_an_injection_that_cannot_be_carried_out_is_refused_naming_why(
    fleet: Fleet, path: str, body: dict[str, Any], status: int, reason: str
) -> None:
    got, answer = await fleet.call("POST", f"/api/v1/faults/gpu/inject/{path}", body)

    assert got == status, answer
    assert answer["error"].startswith(reason)


async def test_the_faults_of_every_agent_are_listed_and_an_unreachable_one_is_named(fleet: Fleet) -> None:
    for node in NODES:
        assert (await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-13", {"node_name": node}))[0] == 200

    status, listed = await fleet.call("GET", "/api/v1/faults")

    assert status == 200
    assert {fault["node_name"] for fault in listed["faults"] if fault["xid"] == 13} == set(NODES)
    assert [error["node_name"] for error in listed["errors"]] == [SILENT, SLOW]


async def test_an_agent_that_takes_the_injection_and_never_answers_is_502_naming_the_fault(fleet: Fleet) -> None:
    status, answer = await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-79", {"node_name": SLOW})

    assert status == 502
    fault_id = answer["fault_id"]
    assert answer["node_name"] == SLOW
    assert fault_id in answer["error"]
    assert "may have been written" in answer["error"]
    assert "GET /api/v1/faults" in answer["error"]


async def test_a_listing_asks_the_agents_a_few_at_a_time_and_hung_ones_do_not_crowd_out_the_rest(
    fleet: Fleet,
) -> None:
    """More hung agents than the HTTP session holds connections (100): the healthy ones, listed
    last, are still asked, since an agent's time starts when it is asked, not when it is queued."""
    registry = fleet.cluster.simulation.registry
    hung = [
        with_status(agent_pod(NAMESPACE, f"blackholed-{number:03}", "127.0.0.1", fleet.blackhole), ready=True)
        for number in range(120)
    ]
    for pod in hung:
        fleet.cluster.call(functools.partial(registry.create_object, "pods", pod))
    try:
        status, listed = await fleet.call("GET", "/api/v1/faults")
    finally:
        for pod in hung:
            entry = fleet.cluster.call(functools.partial(registry.get, PODS, NAMESPACE, pod["metadata"]["name"]))
            fleet.cluster.call(functools.partial(registry.delete_pod, entry, 0))

    assert status == 200
    errors = {error["node_name"] for error in listed["errors"]}
    assert errors == {pod["spec"]["nodeName"] for pod in hung} | {SILENT, SLOW}
    assert not set(NODES) & errors


async def test_an_agent_that_lists_something_else_than_faults_is_named_and_the_others_still_listed(
    fleet: Fleet,
) -> None:
    async def odd_listing(request: web.Request) -> web.Response:
        return web.json_response({"faults": ["an-older-agent's-id"]})

    app = web.Application()
    app.router.add_get("/faults", odd_listing)
    registry = fleet.cluster.simulation.registry
    async with serving(app, "127.0.0.1", 0, "an odd agent") as port:
        pod = with_status(agent_pod(NAMESPACE, "gpu-node-odd", "127.0.0.1", port), ready=True)
        fleet.cluster.call(functools.partial(registry.create_object, "pods", pod))
        try:
            status, listed = await fleet.call("GET", "/api/v1/faults")
        finally:
            entry = fleet.cluster.call(functools.partial(registry.get, PODS, NAMESPACE, pod["metadata"]["name"]))
            fleet.cluster.call(functools.partial(registry.delete_pod, entry, 0))

    assert status == 200, listed
    assert {"node_name": "gpu-node-odd", "error": "its agent answered a listing that is not a list of faults"} in (
        listed["errors"]
    )
    assert {fault["node_name"] for fault in listed["faults"]} <= set(NODES)


@NEEDS_IPV6
async def test_the_api_told_an_ipv6_address_serves_there(fleet: Fleet) -> None:
    host, port = parse_listen_address("[::1]:0")
    async with running_api(dataclasses.replace(fleet.settings, host=host, port=port)) as bound:
        ipv6 = dataclasses.replace(fleet, url=f"http://[::1]:{bound}")
        status, answer = await ipv6.call("POST", "/api/v1/faults/gpu/inject/xid-13", {"node_name": NODES[1]})
    assert status == 200, answer


async def test_an_unknown_path_or_method_is_a_json_error(fleet: Fleet) -> None:
    assert await fleet.call("GET", "/api/v1/nowhere") == (404, {"error": "Not Found: GET /api/v1/nowhere"})
    assert await fleet.call("DELETE", "/api/v1/faults") == (
        405,
        {"error": "Method Not Allowed: DELETE /api/v1/faults"},
    )


async def test_a_listing_for_something_that_is_no_node_name_is_refused(fleet: Fleet) -> None:
    status, answer = await fleet.call("GET", "/api/v1/faults?node=a,b=c")

    assert status == 422
    assert answer == {"error": "node: 'a,b=c' is not a node name"}


async def test_every_call_but_health_needs_the_token(fleet: Fleet) -> None:
    for method, path in [("POST", "/api/v1/faults/gpu/inject/xid-79"), ("GET", "/api/v1/faults")]:
        for token in (None, "wrong"):
            assert await fleet.call(method, path, {"node_name": NODES[0]}, token) == (
                401,
                {"error": "missing or wrong bearer token"},
            ), (method, path, token)
    assert await fleet.call("GET", "/health", token=None) == (200, {"status": "ok"})


async def test_the_api_only_lists_pods(fleet: Fleet) -> None:
    assert (await fleet.call("POST", "/api/v1/faults/gpu/inject/xid-79", {"node_name": NODES[0]}))[0] == 200

    user = service_account_username(*service_account("injector-api"))
    assert fleet.cluster.accesses(user) == {Access(user, "list", "", "pods")}
    assert [denial for denial in fleet.cluster.denials() if denial.user == user] == []


async def test_gpuheal_inject_prints_the_fault_id(fleet: Fleet, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    flags = ["--node", NODES[0], "--xid", "74", "--gpu", "1", "--api", fleet.url, "--token-file", str(token_file)]

    code, out, err = await gpuheal("inject", *flags)

    assert code == 0, err
    fault_id = out.strip()
    _, listed = await fleet.call("GET", f"/api/v1/faults?node={NODES[0]}")
    [fault] = [fault for fault in listed["faults"] if fault["fault_id"] == fault_id]
    assert (fault["xid"], fault["gpu"]) == (74, 1)

    code, out, err = await gpuheal("inject", *flags[:-2], "--token-file", str(tmp_path / "absent"))
    assert code == 2
    assert "cannot read the token file" in err
    token_file.write_text("wrong")
    code, out, err = await gpuheal("inject", *flags[:2], "--xid", "79", "--gpu", "9", *flags[6:])
    assert code == 1
    assert "the injector API refused (401): missing or wrong bearer token" in err
    code, out, err = await gpuheal(
        "inject", "--node", "n", "--xid", "79", "--api", "http://127.0.0.1:9", "--token-file", str(token_file)
    )
    assert code == 1
    assert "cannot reach the injector API at http://127.0.0.1:9" in err
    token_file.write_text(TOKEN)
    code, out, err = await gpuheal("inject", "--node", SLOW, "--xid", "79", *flags[6:])
    assert code == 1
    assert "(fault id xid79-" in err
    assert f"on node {SLOW})" in err


async def gpuheal(*args: str) -> tuple[int, str, str]:
    """Run the gpuheal CLI in a process of its own, while this loop keeps serving the API."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpuheal", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
