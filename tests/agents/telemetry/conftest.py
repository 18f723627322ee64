"""Fixtures of the telemetry intake's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def socket_path(short_dir: Path) -> Path:
    return short_dir / "run" / "telemetry.sock"
