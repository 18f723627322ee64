"""The generated protobuf modules match their `.proto` sources and keep the contract's names."""

from __future__ import annotations

from pathlib import Path

from gpuheal.protos import gpu_pb2, health_event_pb2
from gpuheal.protos.build import HERE, generate


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert {p.name for p in fresh} == {p.name for p in HERE.iterdir() if "_pb2" in p.name}
    stale = [p.name for p in fresh if p.read_bytes() != (HERE / p.name).read_bytes()]
    assert not stale, f"regenerate with `make protos`: {stale} differ from their .proto"


def test_wire_names_are_the_contracts() -> None:
    assert health_event_pb2.DESCRIPTOR.package == "datamodels"
    connector = health_event_pb2.DESCRIPTOR.services_by_name["PlatformConnector"]
    assert [m.name for m in connector.methods] == ["HealthEventOccurredV1"]
    service = gpu_pb2.DESCRIPTOR.services_by_name["GpuService"]
    assert service.full_name == "nvidia.device.v1alpha1.GpuService"
    assert [m.name for m in service.methods] == [
        "GetGpu",
        "ListGpus",
        "WatchGpus",
        "CreateGpu",
        "UpdateGpu",
        "UpdateGpuStatus",
        "DeleteGpu",
    ]
    fields = {f.name: (f.number, f.type) for f in health_event_pb2.HealthEvent.DESCRIPTOR.fields}
    assert fields["nodeName"][0] == 13
    assert fields["customRecommendedAction"][0] == 18
    assert health_event_pb2.RecommendedAction.Value("RESTART_BM") == 24
    assert health_event_pb2.RecommendedAction.Value("REMEDIATE") == 28  # NVSentinel's current proto
    assert health_event_pb2.ProcessingStrategy.Value("STORE_AND_ANALYSE") == 3
    assert {f.name: f.number for f in gpu_pb2.Gpu.DESCRIPTOR.fields} == {
        "metadata": 1,
        "spec": 2,
        "status": 3,
        "resource_version": 4,
    }
