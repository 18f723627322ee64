"""What a GPU in the Device API may be called and may carry, checked before a write is taken.

The agent holds every GPU in memory, and each write is kept for a while in the watch history and
in watchers' queues, so what one write may carry is bounded, in bytes: a status of at most 32 KiB
(at most 32 conditions, each message at most 4 KiB). With 1,024 GPUs that bounds the cache itself
to tens of MiB, whatever providers send.

Names are Kubernetes object names, DNS-1123 subdomains: lower-case alphanumerics, '-' and '.',
starting and ending with an alphanumeric, at most 253 characters (`IsDNS1123Subdomain` in
kubernetes/apimachinery, pkg/util/validation/validation.go). A name then never carries a NUL byte,
a path separator or a megabyte into a log line. Condition types and reasons keep to the lengths
Kubernetes gives `metav1.Condition` (316 and 1,024).

A refusal is INVALID_ARGUMENT naming the field and the limit, e.g. `gpu "gpu-0":
status.conditions[2].message is 5000 bytes; at most 4096 are accepted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuheal.agents.device_api.errors import InvalidArgumentError
from gpuheal.domain.truncate import truncate
from gpuheal.protos import gpu_pb2

NAME_MAX_CHARS = 253
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
# How much of a refused value an error message repeats.
SHOWN_BYTES = 96


@dataclass(frozen=True, slots=True)
class GpuLimits:
    """Bytes (UTF-8) and counts one GPU may carry; see the module docstring."""

    max_uuid_bytes: int = 256
    max_conditions: int = 32
    max_condition_type_bytes: int = 316
    max_condition_status_bytes: int = 64
    max_condition_reason_bytes: int = 1024
    max_condition_message_bytes: int = 4 * 1024
    max_recommended_action_bytes: int = 256
    # The whole status as serialized: what one write adds to the cache and the watch history.
    max_status_bytes: int = 32 * 1024


def check_name(name: str, field: str = "name") -> None:
    """InvalidArgumentError unless `name` is a valid GPU name (a DNS-1123 subdomain)."""
    if not name:
        raise InvalidArgumentError(f"{field} is required")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidArgumentError(f"{field} is {len(name)} characters; at most {NAME_MAX_CHARS} are accepted")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(f"{field} {truncate(name, SHOWN_BYTES)!r} is not a valid name: {_NAME_RULE}")


def check_gpu(gpu: gpu_pb2.Gpu, limits: GpuLimits) -> None:
    """InvalidArgumentError unless the GPU's name, UUID and status are within the rules."""
    check_name(gpu.metadata.name, "gpu.metadata.name")
    prefix = f'gpu "{gpu.metadata.name}": '
    if not gpu.spec.uuid:
        raise InvalidArgumentError(prefix + "spec.uuid is required")
    _check_bytes(prefix, "spec.uuid", gpu.spec.uuid, limits.max_uuid_bytes)
    check_status(gpu.metadata.name, gpu.status, limits)


def check_status(name: str, status: gpu_pb2.GpuStatus, limits: GpuLimits) -> None:
    """InvalidArgumentError unless the status of GPU `name` is within the limits."""
    prefix = f'gpu "{name}": '
    count = len(status.conditions)
    if count > limits.max_conditions:
        raise InvalidArgumentError(
            prefix + f"status has {count} conditions; at most {limits.max_conditions} are accepted"
        )
    _check_bytes(prefix, "status.recommended_action", status.recommended_action, limits.max_recommended_action_bytes)
    for index, condition in enumerate(status.conditions):
        field = f"status.conditions[{index}]"
        _check_bytes(prefix, f"{field}.type", condition.type, limits.max_condition_type_bytes)
        _check_bytes(prefix, f"{field}.status", condition.status, limits.max_condition_status_bytes)
        _check_bytes(prefix, f"{field}.reason", condition.reason, limits.max_condition_reason_bytes)
        _check_bytes(prefix, f"{field}.message", condition.message, limits.max_condition_message_bytes)
    size = status.ByteSize()
    if size > limits.max_status_bytes:
        raise InvalidArgumentError(prefix + f"status is {size} bytes; at most {limits.max_status_bytes} are accepted")


def _check_bytes(prefix: str, field: str, value: str, most: int) -> None:
    size = len(value.encode())
    if size > most:
        raise InvalidArgumentError(prefix + f"{field} is {size} bytes; at most {most} are accepted")
