"""What one GPU may carry as a whole, and what the whole cache may hold: namespaces, unknown fields, counts."""

from __future__ import annotations

import grpc
import pytest

from gpuheal.agents.device_api import GpuCache, InvalidArgumentError
from gpuheal.agents.device_api.limits import MAX_LIST_BYTES, GpuLimits, worst_list_bytes
from gpuheal.protos import gpu_pb2
from tests.agents.device_api.conftest import Api, create, make_gpu, rpc_error

LABEL_RULE = (
    "is not a valid namespace: a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
    "or '-', and must start and end with an alphanumeric character"
)
# Field 99 of a Gpu, which gpu.proto does not have: a tag, a length (250,000 as a varint), the bytes.
UNKNOWN_FIELD = b"\x9a\x06" + b"\x80\xa0\x0f" + b"x" * 250_000


def with_unknown_field(gpu: gpu_pb2.Gpu) -> gpu_pb2.Gpu:
    """The GPU as a newer client (or an attacker) sends it: with a quarter megabyte in a field gpuheal does not know."""
    parsed = gpu_pb2.Gpu()
    parsed.ParseFromString(gpu.SerializeToString() + UNKNOWN_FIELD)
    assert parsed.ByteSize() > 250_000
    return parsed


def in_namespace(namespace: str, name: str = "gpu-0") -> gpu_pb2.Gpu:
    gpu = make_gpu(name)
    gpu.metadata.namespace = namespace
    return gpu


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("n" * 64, 'gpu "gpu-0": metadata.namespace is 64 characters; at most 63 are accepted'),
        ("n" * 250_000, 'gpu "gpu-0": metadata.namespace is 250000 characters; at most 63 are accepted'),
        ("gpu.operator", f"gpu \"gpu-0\": metadata.namespace 'gpu.operator' {LABEL_RULE}"),
        ("Default", f"gpu \"gpu-0\": metadata.namespace 'Default' {LABEL_RULE}"),
        ("kube\x00system", f"gpu \"gpu-0\": metadata.namespace 'kube\\x00system' {LABEL_RULE}"),
    ],
)
async def test_a_namespace_kubernetes_would_refuse_is_refused(api: Api, namespace: str, expected: str) -> None:
    error = await rpc_error(api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=in_namespace(namespace))))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    await create(api, "gpu-0")
    error = await rpc_error(api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=in_namespace(namespace))))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    assert api.server.cache.resource_version == 1


async def test_namespaces_within_the_rules_are_taken(api: Api) -> None:
    for index, namespace in enumerate(("", "gpu-operator", "n" * 63, "0")):
        response = await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=in_namespace(namespace, f"gpu-{index}")))
        assert response.gpu.metadata.namespace == namespace


async def test_fields_gpuheal_does_not_know_are_not_stored(api: Api) -> None:
    created = (await api.stub.CreateGpu(gpu_pb2.CreateGpuRequest(gpu=with_unknown_field(make_gpu("gpu-0"))))).gpu
    update = with_unknown_field(make_gpu("gpu-0"))
    update.status.recommended_action = "NONE"
    updated = (await api.stub.UpdateGpu(gpu_pb2.UpdateGpuRequest(gpu=update))).gpu
    status = gpu_pb2.GpuStatus(recommended_action="RESTART_VM")
    status.MergeFromString(UNKNOWN_FIELD)  # and one inside the status itself
    written = (await api.stub.UpdateGpuStatus(gpu_pb2.UpdateGpuStatusRequest(name="gpu-0", status=status))).gpu
    assert [gpu.ByteSize() < 200 for gpu in (created, updated, written)] == [True, True, True]
    stored = api.server.cache.snapshot()[1][0]
    assert stored.ByteSize() < 200
    assert (await api.stub.ListGpus(gpu_pb2.ListGpusRequest())).ByteSize() < 200


def test_a_gpu_over_its_byte_budget_is_refused_as_a_whole() -> None:
    cache = GpuCache(limits=GpuLimits(max_gpu_bytes=100))
    cache.create(make_gpu("gpu-0"))
    too_big = make_gpu("gpu-1", uuid="GPU-" + "1" * 100)
    with pytest.raises(InvalidArgumentError, match=r'^gpu "gpu-1" is 1\d\d bytes; at most 100 are accepted$'):
        cache.create(too_big)
    update = in_namespace("n" * 63)
    update.status.recommended_action = "x" * 50
    with pytest.raises(InvalidArgumentError, match=r'^gpu "gpu-0" is 1\d\d bytes; at most 100 are accepted$'):
        cache.update(update)
    assert len(cache) == 1
    assert cache.resource_version == 1


def test_the_largest_list_fits_what_clients_accept() -> None:
    """1,024 GPUs, each as large as a write may make it, list within the 64 MiB a client accepts."""
    assert GpuCache().max_gpus == 1024
    assert worst_list_bytes(1024, GpuLimits()) <= MAX_LIST_BYTES
    with pytest.raises(ValueError, match=r"^a ListGpus response of 4096 GPUs may be \d+ bytes; at most 67108864"):
        GpuCache(max_gpus=4096)
