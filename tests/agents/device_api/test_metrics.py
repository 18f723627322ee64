"""The Device API's calls (over gRPC and from its own process), watchers and GPU health, as the agent's metrics report them."""

from __future__ import annotations

import pytest
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.device_api import NotReadyError, ShuttingDownError
from gpuheal.agents.device_api.limits import HEALTH_CONDITION
from gpuheal.agents.device_api.service import UNARY_METHODS
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


async def test_calls_from_the_servers_own_process_are_counted_as_grpc_calls_are(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    server = (await make_api(answered=metrics.device_api_answered)).server
    service = server.service

    def requests(method: str, code: str) -> float | None:
        return registry.get_sample_value("gpuheal_agent_device_api_requests_total", {"method": method, "code": code})

    with pytest.raises(NotReadyError):
        await server.call(service.list_gpus, gpu_pb2.ListGpusRequest())
    await server.call(service.create_gpu, gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-a")))
    server.mark_ready()
    listed = await server.call(service.list_gpus, gpu_pb2.ListGpusRequest())
    assert [gpu.metadata.name for gpu in listed.gpu_list.items] == ["gpu-a"]

    def broken(_name: str) -> gpu_pb2.Gpu:
        raise RuntimeError("a defect in the cache")

    monkeypatch.setattr(server.cache, "get", broken)
    with pytest.raises(RuntimeError):
        await server.call(service.get_gpu, gpu_pb2.GetGpuRequest(name="gpu-a"))
    assert (requests("ListGpus", "UNAVAILABLE"), requests("CreateGpu", "OK"), requests("ListGpus", "OK")) == (1, 1, 1)
    assert requests("GetGpu", "UNKNOWN") == 1  # as gRPC answers what a handler raises

    # A stopped server refuses as its socket would, before the call is served or counted.
    await server.stop()
    with pytest.raises(ShuttingDownError):
        await server.call(service.list_gpus, gpu_pb2.ListGpusRequest())
    assert requests("ListGpus", "UNAVAILABLE") == 1


async def test_only_the_services_unary_operations_are_called_in_process(make_api: ApiFactory) -> None:
    """The operation names the method it is counted under, so the two cannot disagree; a watch is
    gRPC's alone (its slot is freed when its stream ends, and a call has no stream)."""
    registry = CollectorRegistry()
    server = (await make_api(expected_gpus=0, answered=AgentMetrics(registry).device_api_answered)).server
    with pytest.raises(ValueError, match="is not one of the Device API's unary operations"):
        await server.call(server.service.watch_gpus, gpu_pb2.WatchGpusRequest())
    assert server.hub.streams == 0, "no watch slot is taken"

    def list_gpus(request: gpu_pb2.ListGpusRequest) -> gpu_pb2.ListGpusResponse:  # named as one, but not the service's
        return server.service.list_gpus(request)

    with pytest.raises(ValueError, match="is not one of the Device API's unary operations"):
        await server.call(list_gpus, gpu_pb2.ListGpusRequest())
    assert (
        registry.get_sample_value("gpuheal_agent_device_api_requests_total", {"method": "ListGpus", "code": "OK"})
        is None
    )

    # Every unary method of the contract has its operation.
    for operation in UNARY_METHODS:
        assert callable(getattr(server.service, operation)), operation
