"""`gpuheal injector agent` and `gpuheal injector api` refuse to start without a token, or on a bad address."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gpuheal_sim.demo.devserver import free_port
from tests.tools.injector.conftest import TOKEN, information, write_gpu


def gpuheal(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUHEAL_INJECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "gpuheal", *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize("command", [["agent"], ["api", "--agent-namespace", "gpuheal-system"]])
def test_a_server_without_a_token_refuses_to_start(command: list[str], tmp_path: Path) -> None:
    result = gpuheal("injector", *command, "--address", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no token: give --token-file" in result.stderr

    (tmp_path / "empty").write_text("\n")
    result = gpuheal("injector", *command, "--address", "127.0.0.1:0", "--token-file", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert f"the token file {tmp_path / 'empty'} is empty" in result.stderr


def test_a_bad_address_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken")
    result = gpuheal("injector", "agent", "--address", "::1:8083", "--token-file", str(tmp_path / "token"))
    assert result.returncode == 2
    assert "an IPv6 address goes in brackets" in result.stderr


async def test_the_agent_command_serves_until_sigterm(tmp_path: Path) -> None:
    write_gpu(tmp_path / "gpus", "0001:00:00.0", information(0))
    (tmp_path / "kmsg").touch()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuheal",
        "injector",
        "agent",
        "--address",
        f"127.0.0.1:{port}",
        "--kmsg",
        str(tmp_path / "kmsg"),
        "--gpus-root",
        str(tmp_path / "gpus"),
        env={**os.environ, "GPUHEAL_INJECTOR_TOKEN": TOKEN},
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/health") as response:
                        break
                await asyncio.sleep(0.05)
            body = {"fault_id": "cli", "xid_type": 79, "gpu_id": 0}
            async with session.post(
                f"http://127.0.0.1:{port}/inject-xid", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                assert response.status == 200
        assert (tmp_path / "kmsg").read_text().startswith("<3>NVRM: NVRM: Xid (PCI:0001:00:00.0): 79, ")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"tok\nen\n", "visible ASCII"),
        (b"tok\x7fen", "visible ASCII"),
        (b"tok en", "visible ASCII"),
        (b"t\xffoken", "is not UTF-8 text"),
    ],
)
@pytest.mark.parametrize("command", [["injector", "agent"], ["inject", "--node", "n", "--xid", "79"]])
def test_a_token_no_header_can_carry_is_a_usage_error_naming_the_file(
    tmp_path: Path, content: bytes, problem: str, command: list[str]
) -> None:
    (tmp_path / "token").write_bytes(content)
    result = gpuheal(*command, "--token-file", str(tmp_path / "token"))
    assert result.returncode == 2, result.stderr
    assert f"the token file {tmp_path / 'token'}" in result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
