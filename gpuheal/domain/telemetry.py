"""A DCGM telemetry reading as it travels from a `gpuheal-telemetry` streamer to the node's agent.

The streamer and the agent are independent packages; this module is the one both speak. A
`TelemetryIntake.Publish` message (gpuheal/protos/telemetry.proto) carries one reading: headers to
route it by (`HEADERS`), metadata about where it was read (`METADATA`) and the reading itself as a
`TelemetryPoint`, JSON-encoded in the payload. Headers and metadata repeat what the point says, so
a receiver can route without decoding the payload; the agent refuses a message where they disagree.
"""

from __future__ import annotations

import math

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

HEADER_INSTANCE_ID = "instance_id"
HEADER_GPU_UUID = "gpu_uuid"
HEADER_METRIC_NAME = "metric_name"
HEADERS = (HEADER_INSTANCE_ID, HEADER_GPU_UUID, HEADER_METRIC_NAME)

METADATA_HOSTNAME = "hostname"
METADATA_DEVICE = "device"
METADATA = (METADATA_HOSTNAME, METADATA_DEVICE)

# Names and labels are bounded so one reading stays small; DCGM's are far shorter. The values the
# agent exports as Prometheus labels (UUID, field, device, model) are held shorter still, since every
# one is repeated on each line of its `/metrics` page; the hostname must be the node's name anyway.
MAX_NAME_CHARS = 256
MAX_LABEL_CHARS = 64
MAX_LABELS_CHARS = 4096


class TelemetryPoint(BaseModel):
    """One metric reading of one GPU: a row of the DCGM exporter's CSV, published at `timestamp`.

    `value` is the number as the exporter wrote it (`"75"`, `"1.5e3"`); `observed_at` is the row's
    own timestamp, while `timestamp` is when the streamer published it; both carry a time zone (the
    streamer reads a CSV time without one as UTC). Unknown fields are ignored,
    so a newer streamer may add some.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    gpu_uuid: str = Field(min_length=1, max_length=MAX_LABEL_CHARS)
    metric_name: str = Field(min_length=1, max_length=MAX_LABEL_CHARS)
    value: str
    # With a time zone: a naive time could not be compared with the others.
    timestamp: AwareDatetime
    observed_at: AwareDatetime
    gpu_id: int = Field(ge=0)
    device: str = Field(max_length=MAX_LABEL_CHARS)
    model_name: str = Field(max_length=MAX_LABEL_CHARS)
    hostname: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    container: str = Field(default="", max_length=MAX_NAME_CHARS)
    pod: str = Field(default="", max_length=MAX_NAME_CHARS)
    namespace: str = Field(default="", max_length=MAX_NAME_CHARS)
    labels_raw: str = Field(default="", max_length=MAX_LABELS_CHARS)

    @field_validator("value")
    @classmethod
    def _finite_number(cls, value: str) -> str:
        parse_value(value)
        return value.strip()

    @property
    def number(self) -> float:
        return parse_value(self.value)


def parse_value(text: str) -> float:
    """A reading's value as a finite number; a ValueError naming the text otherwise."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"value {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"value {text!r} is not a finite number")
    return number
