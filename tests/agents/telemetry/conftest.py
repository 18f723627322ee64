"""Fixtures of the telemetry intake's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """Short enough for a unix socket (107 bytes); pytest's tmp_path may not be."""
    directory = Path(tempfile.mkdtemp(prefix="gh-tel-", dir="/tmp"))
    yield directory / "run" / "telemetry.sock"
    shutil.rmtree(directory, ignore_errors=True)
