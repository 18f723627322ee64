"""What a GPU in the Device API may be called and may carry, checked before a write is taken.

The agent holds every GPU in memory, and each write is kept for a while in the watch history and
in watchers' queues, so what one write may carry is bounded, in bytes: a status of at most 32 KiB
(at most 32 conditions, each message at most 4 KiB) and the whole GPU, as serialized, at most
33 KiB. Fields gpuheal does not know are not stored (the cache discards them), so they cannot
carry bytes past these checks. With at most 1,024 GPUs (the cache's bound) the cache, and so the
largest ListGpus response, stays under the 64 MiB a client accepts (`MAX_LIST_BYTES`), whatever
providers send.

Names are Kubernetes object names, DNS-1123 subdomains: lower-case alphanumerics, '-' and '.',
starting and ending with an alphanumeric, at most 253 characters (`IsDNS1123Subdomain` in
kubernetes/apimachinery, pkg/util/validation/validation.go). A name then never carries a NUL byte,
a path separator or a megabyte into a log line. A namespace is empty or a namespace name as
Kubernetes has them, a DNS-1123 label: the same characters without '.', at most 63 characters
(`IsDNS1123Label`, same file). Condition types and reasons keep to the lengths Kubernetes gives
`metav1.Condition` (316 and 1,024).

One condition type is gpuheal's own: `Healthy`, which the agent's publisher writes on every GPU.
Other providers may fill a status only so far that it always fits: conditions of other types may
take at most 31 of the 32 places, and their bytes at most the status budget less the largest
`Healthy` condition (and recommended action) these limits accept. So a status another provider
filled to its limits never keeps gpuheal from marking the GPU unhealthy.

A refusal is INVALID_ARGUMENT naming the field and the limit, e.g. `gpu "gpu-0":
status.conditions[2].message is 5000 bytes; at most 4096 are accepted`.
"""

from __future__ import annotations

import functools
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
NAMESPACE_MAX_CHARS = 63
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
# How much of a refused value an error message repeats.
SHOWN_BYTES = 96
# The condition type gpuheal's publisher writes; the limits keep room for it in every status.
HEALTH_CONDITION = "Healthy"
# The largest ListGpus response a client must accept: gpuheal's publisher sets its receive limit to it.
MAX_LIST_BYTES = 64 * 1024 * 1024
# What the cache stamps on a stored GPU beyond what was checked: both resource versions, at most
# an int64's 19 digits as a string and 10 bytes as a varint, with their tags and lengths.
_VERSION_STAMP_BYTES = 2 + 19 + 1 + 10
# What a GPU adds to a list beyond its own bytes (its tag and length), and the list's own envelope
# (ListGpusResponse.gpu_list, ListMeta and its resource version).
_LIST_ITEM_BYTES = 1 + 5
_LIST_ENVELOPE_BYTES = 64


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
    # The whole GPU as serialized, without the resource versions the cache stamps on it: the
    # largest name, namespace, UUID and status take 33,358 bytes.
    max_gpu_bytes: int = 33 * 1024

    def __post_init__(self) -> None:
        if self.max_conditions < 1 or self.max_status_bytes < health_reserve_bytes(self):
            raise ValueError(
                f"a status of at most {self.max_conditions} conditions and {self.max_status_bytes} bytes has no room "
                f"for the largest {HEALTH_CONDITION} condition these limits accept ({health_reserve_bytes(self)} bytes)"
            )


@functools.cache
def health_reserve_bytes(limits: GpuLimits) -> int:
    """What the largest `Healthy` condition and recommended action `limits` accept add to a status."""
    largest = gpu_pb2.GpuStatus(recommended_action="x" * limits.max_recommended_action_bytes)
    condition = largest.conditions.add(
        type=HEALTH_CONDITION,
        status="x" * limits.max_condition_status_bytes,
        reason="x" * limits.max_condition_reason_bytes,
        message="x" * limits.max_condition_message_bytes,
    )
    # The latest instant a Timestamp holds (9999-12-31T23:59:59.999999999Z) takes the most bytes.
    condition.last_transition_time.seconds = 253_402_300_799
    condition.last_transition_time.nanos = 999_999_999
    return largest.ByteSize()


def worst_list_bytes(max_gpus: int, limits: GpuLimits) -> int:
    """The largest ListGpus response a cache of `max_gpus` GPUs within `limits` can give, in bytes."""
    return _LIST_ENVELOPE_BYTES + max_gpus * (limits.max_gpu_bytes + _VERSION_STAMP_BYTES + _LIST_ITEM_BYTES)


def check_name(name: str, field: str = "name") -> None:
    """InvalidArgumentError unless `name` is a valid GPU name (a DNS-1123 subdomain)."""
    if not name:
        raise InvalidArgumentError(f"{field} is required")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidArgumentError(f"{field} is {len(name)} characters; at most {NAME_MAX_CHARS} are accepted")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(f"{field} {truncate(name, SHOWN_BYTES)!r} is not a valid name: {_NAME_RULE}")


def check_gpu(gpu: gpu_pb2.Gpu, limits: GpuLimits) -> None:
    """InvalidArgumentError unless the GPU's name, namespace, UUID, status and size are within the rules.

    `gpu` is the GPU as it will be stored, without resource versions and unknown fields.
    """
    name = gpu.metadata.name
    check_name(name, "gpu.metadata.name")
    prefix = f'gpu "{name}": '
    namespace = gpu.metadata.namespace
    if len(namespace) > NAMESPACE_MAX_CHARS:
        raise InvalidArgumentError(
            prefix + f"metadata.namespace is {len(namespace)} characters; at most {NAMESPACE_MAX_CHARS} are accepted"
        )
    if namespace and not _LABEL.fullmatch(namespace):
        raise InvalidArgumentError(
            prefix + f"metadata.namespace {truncate(namespace, SHOWN_BYTES)!r} is not a valid namespace: {_LABEL_RULE}"
        )
    if not gpu.spec.uuid:
        raise InvalidArgumentError(prefix + "spec.uuid is required")
    _check_bytes(prefix, "spec.uuid", gpu.spec.uuid, limits.max_uuid_bytes)
    check_status(name, gpu.status, limits)
    size = gpu.ByteSize()
    if size > limits.max_gpu_bytes:
        raise InvalidArgumentError(f'gpu "{name}" is {size} bytes; at most {limits.max_gpu_bytes} are accepted')


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
    _check_room_for_health(prefix, status, limits)


def _check_room_for_health(prefix: str, status: gpu_pb2.GpuStatus, limits: GpuLimits) -> None:
    """Refuse a status whose other conditions leave no room for the largest `Healthy` condition."""
    others = gpu_pb2.GpuStatus(conditions=[c for c in status.conditions if c.type != HEALTH_CONDITION])
    count = len(others.conditions)
    if count >= limits.max_conditions:
        raise InvalidArgumentError(
            prefix + f"status has {count} conditions of types other than {HEALTH_CONDITION}; "
            f"at most {limits.max_conditions - 1} are accepted (one place is kept for {HEALTH_CONDITION})"
        )
    size, most = others.ByteSize(), limits.max_status_bytes - health_reserve_bytes(limits)
    if size > most:
        raise InvalidArgumentError(
            prefix + f"status conditions of types other than {HEALTH_CONDITION} are {size} bytes; "
            f"at most {most} are accepted (the rest is kept for {HEALTH_CONDITION})"
        )


def _check_bytes(prefix: str, field: str, value: str, most: int) -> None:
    size = len(value.encode())
    if size > most:
        raise InvalidArgumentError(prefix + f"{field} is {size} bytes; at most {most} are accepted")
