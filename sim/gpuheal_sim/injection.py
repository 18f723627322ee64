"""The XID fault injector on simulated nodes: a /dev/kmsg, the driver's GPU directory, the agent's pod.

A simulated node's kernel log is a file its gpuheal agent follows (`kmsg.log`, see
`gpuheal_sim.agent_settings`). `SimulatedKmsg` stands in for the node's /dev/kmsg: a FIFO the
injector opens and writes, read by a task that does what the kernel's `devkmsg_write` does with
each write and appends the record to that file as /dev/kmsg would read it back:

- a leading `<N>` is the priority: level `N & 7`, facility `N >> 3`, where facility 0 (the kernel's
  own) becomes 1 (user), as for every user-space writer; without it the level is the default (4);
- the record reads back as `PRI,SEQ,USEC,-;text` with `PRI = facility * 8 + level` (the injector's
  `<3>` reads back as `11,...`), the text's control characters and backslashes escaped `\\xNN`;
- a write longer than the kernel's limit (976 bytes) is refused, logged and counted, and nothing
  is recorded.

A FIFO keeps no write boundaries, so each newline-ended line counts as one write: the injector
writes one line per write(2), so the two are the same. `driver_gpu_tree` writes the
`/proc/driver/nvidia/gpus/<pci>/information` files of a node's fake GPUs (the PCI addresses and
minors of `gpuheal_sim.fake_nvml`), so the injector and the node's agent name the same GPU.
`place_agent_pod` puts the injector agent's pod into the simulated cluster, Running on its node at a
preset IP and port, so the central API finds it through the Kubernetes API as it would in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gpuheal.tools.injector.agent import InjectorAgent, InjectorAgentSettings, running_agent
from gpuheal.tools.injector.auth import Token
from gpuheal.tools.injector.kmsg import MAX_RECORD
from gpuheal_sim.fake_nvml import fake_gpu_info
from gpuheal_sim.simulator import SimulatedCluster

log = logging.getLogger(__name__)

# What devkmsg_write gives a record without a `<N>` prefix, and every user-space writer's facility.
DEFAULT_LEVEL = 4
USER_FACILITY = 1
INJECTOR_LABELS = {"app.kubernetes.io/name": "gpuheal", "app.kubernetes.io/component": "injector-agent"}


def kmsg_record(write: bytes, sequence: int, usec: int) -> str:
    """The /dev/kmsg record (`PRI,SEQ,USEC,-;text`) the kernel makes of one write; ValueError if it refuses it."""
    if len(write) > MAX_RECORD:
        raise ValueError(f"a write of {len(write)} bytes is over the kernel's {MAX_RECORD}")
    text = write.removesuffix(b"\n")
    level, facility = DEFAULT_LEVEL, USER_FACILITY
    if text.startswith(b"<"):
        end = text.find(b">")
        digits = text[1:end]
        # As devkmsg_write's simple_strtoul: digits up to the `>`, none at all being 0.
        if end > 0 and (digits.isdigit() or not digits):
            value = int(digits or b"0")
            level = value & 7
            facility = value >> 3 or USER_FACILITY
            text = text[end + 1 :]
    return f"{facility * 8 + level},{sequence},{usec},-;{_escape(text)}\n"


def _escape(text: bytes) -> str:
    # As /dev/kmsg's reader prints a record: control bytes, non-ASCII and backslashes as \xNN.
    return "".join(chr(b) if 32 <= b < 127 and b != 0x5C else f"\\x{b:02x}" for b in text)


class SimulatedKmsg:
    """A FIFO at `path` standing for /dev/kmsg; what is written to it lands in `kernel_log` as records.

    `records` counts the records written, `refused` the writes refused. Use it as an async context
    manager: the FIFO is made and read while the block runs, and removed afterwards.
    """

    def __init__(self, path: Path, kernel_log: Path) -> None:
        self.path = path
        self.kernel_log = kernel_log
        self.records = 0
        self.refused = 0
        self._sequence = 0
        self._buffer = b""
        self._fd: int | None = None

    async def __aenter__(self) -> SimulatedKmsg:
        os.mkfifo(self.path, 0o600)
        # Read and write: the FIFO always has a reader (a writer never gets ENXIO) and never reads EOF.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISFIFO(self.path.lstat().st_mode):
                self.path.unlink()

    def _readable(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(BlockingIOError):
            self._buffer += os.read(self._fd, 65536)
        *writes, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_RECORD:  # a write that never ends: refused whole, as the kernel would
            writes.append(self._buffer)
            self._buffer = b""
        records = []
        for write in writes:
            try:
                records.append(kmsg_record(write + b"\n", self._sequence + 1, int(time.monotonic() * 1e6)))
            except ValueError as error:  # refused before it is stored: it takes no sequence number
                self.refused += 1
                log.warning("simulated /dev/kmsg refused a write: %s", error)
            else:
                self._sequence += 1
        if records:
            # One append of whole lines: the agent's follower never sees half a record.
            with self.kernel_log.open("a", encoding="utf-8") as handle:
                handle.write("".join(records))
            self.records += len(records)


def driver_gpu_tree(root: Path, node: str, gpus: int) -> Path:
    """Write `root/<pci>/information` for the fake GPUs of `node`, as the NVIDIA driver lists them; `root`."""
    for index in range(gpus):
        info = fake_gpu_info(node, index)
        directory = root / info.pci_bus_id
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "information").write_text(
            f"Model: \t\t {info.name}\nGPU UUID: \t {info.uuid}\nBus Location: \t {info.pci_bus_id}\n"
            f"Device Minor: \t {info.minor_number}\nGPU Excluded:\t No\n"
        )
    return root


def agent_pod(namespace: str, node: str, ip: str, port: int) -> dict[str, Any]:
    """The injector agent's pod on `node`, as its DaemonSet makes it, its status preset to `ip`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"injector-agent-{node}",
            "namespace": namespace,
            "labels": dict(INJECTOR_LABELS),
            # A DaemonSet's pod, so a drain leaves it on its node (the DaemonSet object itself is not simulated).
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "injector-agent",
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"injector-agent/{namespace}")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "injector",
                    "image": "ghcr.io/gpuheal/gpuheal:sim",
                    "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                }
            ],
        },
        # The kubelet keeps a preset IP when it starts the pod: every simulated agent listens on loopback.
        "status": {"phase": "Pending", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


async def place_agent_pod(
    cluster: SimulatedCluster, namespace: str, node: str, port: int, ip: str = "127.0.0.1", timeout: float = 30.0
) -> None:
    """Put the injector agent's pod on `node` into the cluster and wait until its kubelet runs it."""
    pod = agent_pod(namespace, node, ip, port)
    cluster.call(lambda: cluster.simulation.registry.create_object("pods", pod))
    name = pod["metadata"]["name"]
    deadline = asyncio.get_running_loop().time() + timeout
    while (cluster.get_object("pods", name, namespace) or {}).get("status", {}).get("phase") != "Running":
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the injector agent's pod on {node} did not start within {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def injector_on_node(
    cluster: SimulatedCluster, namespace: str, node: str, gpus: int, home: Path, kernel_log: Path, token: str
) -> AsyncIterator[InjectorAgent]:
    """The injector agent of a simulated node while the block runs: its /dev/kmsg (a FIFO in `home`
    writing into the node's `kernel_log`), its driver GPU directory, and its Running pod in `cluster`."""
    settings = InjectorAgentSettings(
        token=Token(token), port=0, kmsg=home / "kmsg", gpus_root=driver_gpu_tree(home / "gpus", node, gpus)
    )
    async with SimulatedKmsg(settings.kmsg, kernel_log), running_agent(settings) as (agent, port):
        await place_agent_pod(cluster, namespace, node, port)
        yield agent
