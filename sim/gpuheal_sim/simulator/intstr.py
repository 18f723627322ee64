"""Kubernetes' IntOrString quantities (``maxUnavailable``, ``minAvailable``) resolved against a total."""

from __future__ import annotations

from typing import Any


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """Resolve an IntOrString like ``2`` or ``"25%"`` against ``total`` (Kubernetes' rounding)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        scaled = pct * total
        if round_up:
            return -(-scaled // 100)
        return scaled // 100
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"invalid value {value!r}: an integer or a percentage is required")
