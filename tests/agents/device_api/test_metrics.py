"""The Device API's calls (over gRPC and from its own process), watchers and GPU health, as the agent's metrics report them."""

from __future__ import annotations

import pytest
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.device_api import NotReadyError, ShuttingDownError
from gpuheal.agents.device_api.limits import HEALTH_CONDITION
from gpuheal.agents.metrics import AgentMetrics, AgentState
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import ApiFactory, condition, create, eventually, make_gpu, rpc_error


async def test_calls_are_counted_by_method_and_code_and_watchers_and_health_read_at_scrape(
    make_api: ApiFactory,
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    api = await make_api(answered=metrics.device_api_answered)
    registry.register(AgentState(api.server, lambda: 1_700_000_000.0))

    def requests(method: str, code: str) -> float | None:
        return registry.get_sample_value("gpuheal_agent_device_api_requests_total", {"method": method, "code": code})

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # The gate is closed until the providers have registered: consumers are told to come back.
    await rpc_error(api.stub.ListGpus(gpu_pb2.ListGpusRequest()))
    assert requests("ListGpus", "UNAVAILABLE") == 1
    await create(api, "gpu-a")
    sick = make_gpu("gpu-b")
    sick.status.conditions.append(condition(HEALTH_CONDITION, "False"))
    await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=sick))
    api.server.mark_ready()
    await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    await rpc_error(api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-z")))

    assert requests("CreateGpu", "OK") == 2
    assert requests("ListGpus", "OK") == 1
    assert requests("GetGpu", "NOT_FOUND") == 1
    # A GPU without a Healthy condition says nothing of its health.
    assert sample("gpuheal_agent_gpu_healthy", gpu="GPU-gpu-a") is None
    assert sample("gpuheal_agent_gpu_healthy", gpu="GPU-gpu-b") == 0
    assert sample("gpuheal_agent_last_report_timestamp_seconds") == 1_700_000_000.0

    assert sample("gpuheal_agent_device_api_watchers") == 0
    watch = api.stub.WatchGpus(gpu_pb2.WatchGpusRequest())
    await watch.read()  # the first GPU, as the watch starts
    assert sample("gpuheal_agent_device_api_watchers") == 1
    watch.cancel()
    await eventually(lambda: requests("WatchGpus", "CANCELLED") == 1)
    assert sample("gpuheal_agent_device_api_watchers") == 0


async def test_calls_from_the_servers_own_process_are_counted_as_grpc_calls_are(make_api: ApiFactory) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    server = (await make_api(answered=metrics.device_api_answered)).server
    service = server.service

    def requests(method: str, code: str) -> float | None:
        return registry.get_sample_value("gpuheal_agent_device_api_requests_total", {"method": method, "code": code})

    with pytest.raises(NotReadyError):
        server.call("ListGpus", service.list_gpus, gpu_pb2.ListGpusRequest())
    server.call("CreateGpu", service.create_gpu, gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-a")))
    server.mark_ready()
    listed = server.call("ListGpus", service.list_gpus, gpu_pb2.ListGpusRequest())
    assert [gpu.metadata.name for gpu in listed.gpu_list.items] == ["gpu-a"]

    def broken(_request: gpu_pb2.GetGpuRequest) -> gpu_pb2.GetGpuResponse:
        raise RuntimeError("a defect in the service")

    with pytest.raises(RuntimeError):
        server.call("GetGpu", broken, gpu_pb2.GetGpuRequest(name="gpu-a"))
    assert (requests("ListGpus", "UNAVAILABLE"), requests("CreateGpu", "OK"), requests("ListGpus", "OK")) == (1, 1, 1)
    assert requests("GetGpu", "UNKNOWN") == 1  # as gRPC answers what a handler raises

    # A stopped server refuses as its socket would, before the call is served or counted.
    await server.stop()
    with pytest.raises(ShuttingDownError):
        server.call("ListGpus", service.list_gpus, gpu_pb2.ListGpusRequest())
    assert requests("ListGpus", "UNAVAILABLE") == 1
