"""DCGM readings as a streamer sends them, built by the streamer's own code for the intake's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpuheal.protos import telemetry_pb2 as pb
from gpuheal.tools.telemetry.publish import message
from gpuheal.tools.telemetry.rows import Row

OBSERVED_AT = datetime(2025, 7, 18, 20, 42, 34, tzinfo=UTC)


def row(metric: str, value: str, *, gpu: str, host: str, gpu_id: int = 0, at: int = 0, **optional: str) -> Row:
    """A CSV row of an H100 at `nvidia<gpu_id>`, read `at` seconds after `OBSERVED_AT`; `optional` fills in
    container, pod, namespace, labels_raw."""
    return Row(
        line=2,
        timestamp=OBSERVED_AT + timedelta(seconds=at),
        metric_name=metric,
        gpu_id=gpu_id,
        device=f"nvidia{gpu_id}",
        uuid=gpu,
        model_name="NVIDIA H100 80GB HBM3",
        hostname=host,
        value=value,
        **optional,
    )


def reading(metric: str, value: str, *, gpu: str, host: str, gpu_id: int = 0, at: int = 0) -> pb.TelemetryMessage:
    """The message streamer-1 publishes for that row, now."""
    return message(row(metric, value, gpu=gpu, host=host, gpu_id=gpu_id, at=at), "streamer-1", datetime.now(UTC))
