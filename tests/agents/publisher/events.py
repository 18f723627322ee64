"""Health events as the detectors send them, for the publisher's tests."""

from __future__ import annotations

import uuid
from typing import Any

from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.health import Entity, HealthEvent, ProcessingStrategy

GPU_A = "GPU-6d6c2f1e-0000-4000-8000-00000000000a"
GPU_B = "GPU-6d6c2f1e-0000-4000-8000-00000000000b"


def fatal_xid(node: str, gpu: str = GPU_A, xid: int = 79, **fields: Any) -> HealthEvent:
    """What the kernel-log monitor reports for a fatal XID."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "node": node,
        "agent": "gpuheal-kmsg",
        "check_name": "SysLogsXIDError",
        "is_fatal": True,
        "is_healthy": False,
        "message": f"XID {xid} on {gpu}",
        "action": RecommendedAction.RESTART_BM,
        "error_codes": (str(xid),),
        "entities": (Entity(type="GPU_UUID", value=gpu),),
    }
    return HealthEvent(**{**values, **fields})


def non_fatal(node: str, gpu: str = GPU_A, **fields: Any) -> HealthEvent:
    """An application-level XID the catalog says needs no action."""
    return fatal_xid(node, gpu, xid=13, is_fatal=False, action=RecommendedAction.NONE, **fields)


def healthy(node: str, *gpus: str, **fields: Any) -> HealthEvent:
    """The kernel-log monitor saying the GPUs are fine again after a reboot (all when none is named)."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "node": node,
        "agent": "gpuheal-kmsg",
        "check_name": "SysLogsXIDError",
        "is_fatal": False,
        "is_healthy": True,
        "message": "GPUs healthy",
        "entities": tuple(Entity(type="GPU_UUID", value=gpu) for gpu in gpus),
    }
    return HealthEvent(**{**values, **fields})


def store_only(event: HealthEvent) -> HealthEvent:
    return event.model_copy(update={"strategy": ProcessingStrategy.STORE_ONLY})
