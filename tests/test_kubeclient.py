"""The shared Kubernetes client (gpuheal.kubeclient): proxies as the official client documents them,
from a kubeconfig's `proxy-url` or the standard environment variables, looked up once, not per request."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes.aio import client

from gpuheal.kubeclient import connect
from gpuheal_sim.simulator import FleetConfig, SimulatedCluster

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


class TunnellingProxy:
    """An HTTP proxy that tunnels CONNECT requests, keeping the head of each one it was asked."""

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TunnellingProxy:
        self._server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, *fields = (await reader.readuntil(b"\r\n\r\n")).decode().strip().split("\r\n")
        method, target, _ = line.split(" ")
        headers = dict(field.split(": ", 1) for field in fields)
        self.asked.append({"method": method, "target": target} | {k.lower(): v for k, v in headers.items()})
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    async with SimulatedCluster(FleetConfig(nodes=1, gpus_per_node=1, workloads=False), state_dir=tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the proxy variables it means; none leak in from the machine running the suite."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)


async def read_a_node(cluster: SimulatedCluster, kubeconfig: Path | None = None) -> None:
    async with await connect(kubeconfig or cluster.kubeconfig) as api:
        node = await client.CoreV1Api(api).read_node(cluster.node_names()[0])
        assert node.metadata is not None and node.metadata.name == cluster.node_names()[0]


def api_server(cluster: SimulatedCluster) -> str:
    return f"{cluster.host}:{cluster.port}"


async def test_requests_go_through_the_proxy_the_environment_names(
    cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with TunnellingProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://gpuheal:s3cret@"))
        await read_a_node(cluster)
    [asked] = proxy.asked
    assert (asked["method"], asked["target"]) == ("CONNECT", api_server(cluster))
    assert asked["proxy-authorization"] == "Basic " + base64.b64encode(b"gpuheal:s3cret").decode()


async def test_no_proxy_naming_the_api_server_goes_direct(
    cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with TunnellingProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", f"localhost,{cluster.host}")
        await read_a_node(cluster)
    assert proxy.asked == []


async def test_the_kubeconfig_proxy_url_comes_before_the_environment(
    cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kubeconfig = json.loads(cluster.kubeconfig.read_text())
    async with TunnellingProxy() as configured, TunnellingProxy() as environment:
        kubeconfig["clusters"][0]["cluster"]["proxy-url"] = configured.url
        (tmp_path / "proxied").write_text(json.dumps(kubeconfig))
        monkeypatch.setenv("HTTPS_PROXY", environment.url)
        await read_a_node(cluster, tmp_path / "proxied")
    assert [asked["target"] for asked in configured.asked] == [api_server(cluster)]
    assert environment.asked == []


async def test_the_environment_is_read_when_connecting_not_on_each_request(
    cluster: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy named after the client was built is not used: the lookup costs no request anything."""
    async with TunnellingProxy() as proxy, await connect(cluster.kubeconfig) as api:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        await client.CoreV1Api(api).read_node(cluster.node_names()[0])
    assert proxy.asked == []
