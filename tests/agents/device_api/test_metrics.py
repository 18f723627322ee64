"""The Device API's calls, watchers and GPU health, as the agent's metrics report them."""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

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
