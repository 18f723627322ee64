"""GPU names follow Kubernetes' name rules; a UUID belongs to one GPU and never changes."""

from __future__ import annotations

import grpc
import pytest

from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, create, make_gpu, rpc_error

RULE = (
    "is not a valid name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpu\x000", f"gpu.metadata.name 'gpu\\x000' {RULE}"),
        ("GPU-0", f"gpu.metadata.name 'GPU-0' {RULE}"),
        ("gpu_0", f"gpu.metadata.name 'gpu_0' {RULE}"),
        ("-gpu", f"gpu.metadata.name '-gpu' {RULE}"),
        ("gpu/0", f"gpu.metadata.name 'gpu/0' {RULE}"),
        ("g" * 254, "gpu.metadata.name is 254 characters; at most 253 are accepted"),
    ],
)
async def test_create_refuses_a_name_kubernetes_would_refuse(api: Api, name: str, expected: str) -> None:
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu(name, uuid="GPU-x"))))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    assert len(api.server.cache) == 0


async def test_names_at_the_limits_are_taken(api: Api) -> None:
    for index, name in enumerate(("g" * 253, "gpu-0.node-1", "0")):
        await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu(name, uuid=f"GPU-{index}")))
    assert len(api.server.cache) == 3


async def test_a_megabyte_name_is_refused_unread_and_never_echoed(api: Api) -> None:
    huge = "g" * (1024 * 1024)
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu(huge))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A name that cannot exist is a bad argument to every call, and the answer quotes a short part of it.
    long_name = "G" * 100_000
    error = await rpc_error(api.stub.GetGpu(gpu_pb2.GetGpuRequest(name=long_name)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "name is 100000 characters; at most 253 are accepted"
    error = await rpc_error(api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="GPU-0")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_second_gpu_with_a_registered_uuid_already_exists(api: Api) -> None:
    await create(api, "gpu-0")  # uuid GPU-gpu-0
    for uuid in ("GPU-gpu-0", "gpu-GPU-0"):  # UUIDs are hex: case does not make another GPU
        error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-1", uuid=uuid))))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error.details() == f'gpu "gpu-1": uuid {uuid} is already registered as gpu "gpu-0"'
    assert len(api.server.cache) == 1

    # Once the first is deleted its UUID is free again (a GPU re-registered under another name).
    await api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="gpu-0"))
    response = await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-1", uuid="GPU-gpu-0")))
    assert response.created


async def test_update_cannot_change_a_gpus_uuid(api: Api) -> None:
    await create(api, "gpu-0")
    await create(api, "gpu-1")
    for uuid in ("GPU-new", "GPU-gpu-1"):
        error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=make_gpu("gpu-0", uuid=uuid))))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == f"gpu \"gpu-0\": spec.uuid is immutable: it is GPU-gpu-0, not '{uuid}'"
    assert api.server.cache.get("gpu-0").spec.uuid == "GPU-gpu-0"
    # The same UUID with another status is an ordinary update.
    same = make_gpu("gpu-0")
    same.status.recommended_action = "NONE"
    assert (await api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=same))).gpu.status.recommended_action == "NONE"
