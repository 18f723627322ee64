"""Every error the contract names, through a real channel, with a message that names the problem."""

from __future__ import annotations

import grpc

from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, ApiFactory, create, make_gpu, rpc_error


async def test_get_unknown_gpu_is_not_found(api: Api) -> None:
    error = await rpc_error(api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-3")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == 'gpu "gpu-3" not found'


async def test_update_status_and_delete_of_unknown_gpu_are_not_found(api: Api) -> None:
    status = gpu_pb2.GpuStatus(recommended_action="NONE")
    error = await rpc_error(api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-9", status=status)))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, 'gpu "gpu-9" not found')
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=make_gpu("gpu-9"))))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, 'gpu "gpu-9" not found')
    error = await rpc_error(api.stub.DeleteGpu(gpu_pb2.DeleteGpuRequest(name="gpu-9")))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, 'gpu "gpu-9" not found')


async def test_create_with_a_taken_name_and_another_uuid_already_exists(api: Api) -> None:
    await create(api, "gpu-0")
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-0", uuid="GPU-other"))))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details() == 'gpu "gpu-0" already exists with uuid GPU-gpu-0, not GPU-other'


async def test_create_of_the_same_gpu_again_is_idempotent(api: Api) -> None:
    first = await create(api, "gpu-0")
    again = make_gpu("gpu-0")
    again.status.recommended_action = "RESTART_BM"  # ignored: the existing GPU is returned as it is
    response = await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=again))
    assert not response.created
    assert response.gpu == first
    listed = await api.stub.ListGpus(gpu_pb2.ListGpusRequest())
    assert listed.gpu_list.metadata.resource_version == "1"  # nothing was written


async def test_create_without_name_or_uuid_is_invalid(api: Api) -> None:
    no_name = make_gpu("x")
    no_name.metadata.name = ""
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=no_name)))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "gpu.metadata.name is required")
    no_uuid = make_gpu("gpu-1", uuid="")
    no_uuid.spec.uuid = ""
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=no_uuid)))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, 'gpu "gpu-1": spec.uuid is required')


async def test_missing_names_and_bad_versions_are_invalid(api: Api) -> None:
    error = await rpc_error(api.stub.GetGpu(gpu_pb2.GetGpuRequest()))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "name is required")
    await create(api, "gpu-0")
    bad = make_gpu("gpu-0")
    bad.metadata.resource_version = "seven"
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=bad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "metadata.resource_version 'seven' is not an integer resource version"
    both = make_gpu("gpu-0")
    both.metadata.resource_version = "1"
    both.resource_version = 2
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=both)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disagree" in (error.details() or "")


async def test_update_status_with_a_stale_version_is_aborted(api: Api) -> None:
    gpu = await create(api, "gpu-3")
    for message in ("one", "two"):
        status = gpu_pb2.GpuStatus(recommended_action=message)
        await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-3", status=status))
    stale = gpu_pb2.UpdateGpuStatusRequest(
        name="gpu-3", status=gpu_pb2.GpuStatus(recommended_action="three"), resource_version=gpu.resource_version
    )
    error = await rpc_error(api.stub.UpdateGpuStatus(stale))
    assert error.code() == grpc.StatusCode.ABORTED
    assert error.details() == 'gpu "gpu-3": resource_version 1 is stale: current is 3'
    current = (await api.stub.GetGpu(gpu_pb2.GetGpuRequest(name="gpu-3"))).gpu
    assert current.status.recommended_action == "two"  # the refused write changed nothing


async def test_update_gpu_takes_the_version_from_either_field(api: Api) -> None:
    await create(api, "gpu-3")
    await api.stub.UpdateGpuStatus(
        gpu_pb2.UpdateGpuStatusRequest(name="gpu-3", status=gpu_pb2.GpuStatus(recommended_action="x"))
    )
    by_meta = make_gpu("gpu-3")
    by_meta.metadata.resource_version = "1"
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=by_meta)))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.ABORTED,
        'gpu "gpu-3": resource_version 1 is stale: current is 2',
    )
    by_field = make_gpu("gpu-3")
    by_field.resource_version = 5
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=by_field)))
    assert error.code() == grpc.StatusCode.ABORTED
    assert "resource_version 5 is from the future: current is 2" in (error.details() or "")
    by_field.resource_version = 2
    updated = (await api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=by_field))).gpu
    assert updated.resource_version == 3
    assert updated.status == gpu_pb2.GpuStatus()  # UpdateGpu replaces the status as well


async def test_a_full_cache_refuses_more_gpus(make_api: ApiFactory) -> None:
    api = await make_api(expected_gpus=0, max_gpus=2)
    await create(api, "gpu-0")
    await create(api, "gpu-1")
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=make_gpu("gpu-2"))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == 'cannot create gpu "gpu-2": the cache is full (2 GPUs)'


async def test_bytes_that_do_not_decode_are_an_invalid_argument(api: Api) -> None:
    junk = b"\xff\xff\xff\xff"
    for method in ("CreateGpu", "GetGpu", "WatchGpus"):
        path = f"/nvidia.device.v1alpha1.GpuService/{method}"
        if method == "WatchGpus":
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = api.channel.unary_stream(path)
            error = await rpc_error(_first(stream(junk)))
        else:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = api.channel.unary_unary(path)
            error = await rpc_error(call(junk))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert (error.details() or "").startswith("the request is not a valid nvidia.device.v1alpha1."), method


async def _first(stream: grpc.aio.UnaryStreamCall[bytes, bytes]) -> bytes:
    async for message in stream:
        return message
    raise AssertionError("the stream ended without a message or an error")
