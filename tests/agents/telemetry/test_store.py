"""The metrics store's bounds, by default: what a node's GPUs need, and a `/metrics` page that stays small."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pydantic
import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from gpuheal.agents.telemetry import LatestMetrics, TelemetryCollector
from gpuheal.agents.telemetry.store import StoreFull
from gpuheal.domain.telemetry import TelemetryPoint

NOW = datetime(2025, 7, 18, 20, 42, 34, tzinfo=UTC)


def point(gpu: int, metric: int, *, model: str = "NVIDIA H100 80GB HBM3") -> TelemetryPoint:
    return TelemetryPoint(
        gpu_uuid=f"GPU-{gpu:08x}-86f3-7a43-b711-4771313afc50",
        metric_name=f"DCGM_FI_DEV_FIELD_{metric:03d}",
        value="123456.5",
        timestamp=NOW,
        observed_at=NOW,
        gpu_id=gpu,
        device=f"nvidia{gpu}",
        model_name=model,
        hostname="dgx-node-031",
    )


def test_the_default_bounds_are_64_gpus_of_128_fields_and_the_full_page_stays_small() -> None:
    store = LatestMetrics()
    for gpu in range(64):
        for metric in range(128):
            store.update(point(gpu, metric))
    with pytest.raises(StoreFull, match="at most 64 GPUs"):
        store.update(point(64, 0))
    with pytest.raises(StoreFull, match="at most 128 metrics per GPU"):
        store.update(point(0, 128))

    registry = CollectorRegistry()
    registry.register(TelemetryCollector(store, Counter()))
    assert len(generate_latest(registry)) < 2_500_000, "a few MB at most, whatever the streamers send"


def test_a_label_value_longer_than_64_characters_is_no_reading() -> None:
    with pytest.raises(pydantic.ValidationError, match="model_name"):
        point(0, 0, model="x" * 65)
