"""Where the server listens, with what permissions, and the health and reflection services."""

from __future__ import annotations

import ipaddress
import socket
import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped,unused-ignore]
    reflection_pb2,
    reflection_pb2_grpc,
)

from gpuheal.agents.device_api import GPU_SERVICE_NAME, DeviceApiServer
from gpuheal.protos import gpu_pb2, gpu_pb2_grpc
from tests.agents.device_api.conftest import Api, ApiFactory, create
from tests.agents.listening import listening_tcp, needs_proc


async def test_socket_is_created_with_mode_0660_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "var" / "run" / "device.sock"
    assert not path.parent.exists()
    async with DeviceApiServer(path, expected_gpus=0) as server:
        assert server.socket_path == path
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660


async def test_socket_is_removed_on_stop(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0)
    await api.server.stop()
    assert not api.server.socket_path.exists()


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "device.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a crashed server leaves behind
    assert path.exists()
    async with DeviceApiServer(path, expected_gpus=0) as server, grpc.aio.insecure_channel(server.target) as channel:
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        listed = await stub.ListGpus(gpu_pb2.ListGpusRequest())
        assert listed.gpu_list.metadata.resource_version == "0"


async def test_a_live_socket_or_a_regular_file_is_not_replaced(api: Api, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError, match="another process is serving on"):
        await DeviceApiServer(api.server.socket_path).start()
    await create(api, "gpu-0")  # the first server is unharmed
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a socket"):
        await DeviceApiServer(regular).start()
    assert regular.read_text() == "keep me"


@needs_proc
async def test_tcp_is_off_unless_configured(make_api: ApiFactory) -> None:
    before = listening_tcp()
    api = await make_api(expected_gpus=0)
    assert api.server.tcp_port is None
    assert api.server.tcp_target is None
    assert listening_tcp() == before


@needs_proc
async def test_tcp_binds_loopback_by_default(make_api: ApiFactory) -> None:
    before = listening_tcp()
    api = await make_api(expected_gpus=0, tcp_port=0)
    port = api.server.tcp_port
    assert port is not None and port > 0
    assert listening_tcp() - before == {(ipaddress.IPv4Address("127.0.0.1"), port)}  # and nothing else
    await create(api, "gpu-0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        listed = await gpu_pb2_grpc.GpuServiceStub(channel).ListGpus(gpu_pb2.ListGpusRequest())
    assert [g.metadata.name for g in listed.gpu_list.items] == ["gpu-0"]


async def test_health_responds_for_the_server_and_the_service(api: Api) -> None:
    stub = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", GPU_SERVICE_NAME):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_gpu_service(api: Api) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=GPU_SERVICE_NAME),
    ]
    responses = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {GPU_SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = responses[1].file_descriptor_response.file_descriptor_proto
    assert files, "reflection returned no descriptor for the GpuService"
    assert any(b"GpuService" in f for f in files)
