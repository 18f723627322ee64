"""An injector agent on loopback over a driver GPU directory and a kernel log file in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuheal.tools.injector.agent import InjectorAgent, InjectorAgentSettings, running_agent
from gpuheal.tools.injector.auth import Token

TOKEN = "s3cret-injector-token"
# Azure's wider PCI domains, one of four hex digits and one of eight, and an ordinary one.
GPUS = {0: "0001:00:00.0", 1: "00000002:00:00.0", 2: "0000:3b:00.0"}


def write_gpu(root: Path, pci: str, information: str) -> None:
    (root / pci).mkdir(parents=True)
    (root / pci / "information").write_text(information)


def information(minor: int) -> str:
    return f"Model: \t\t NVIDIA H100 80GB HBM3\nBus Type: \t PCIe\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"


@dataclass
class RunningAgent:
    agent: InjectorAgent
    url: str
    kmsg: Path
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture
async def injector(tmp_path: Path) -> AsyncIterator[RunningAgent]:
    root = tmp_path / "gpus"
    for index, pci in GPUS.items():
        write_gpu(root, pci, information(index))
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    settings = InjectorAgentSettings(token=Token(TOKEN), port=0, kmsg=kmsg, gpus_root=root)
    async with running_agent(settings) as (agent, port), aiohttp.ClientSession() as session:
        yield RunningAgent(agent, f"http://127.0.0.1:{port}", kmsg, session)
