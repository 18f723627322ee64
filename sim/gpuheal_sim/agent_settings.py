"""The settings of an agent on a simulated node: a fake NVML, a kernel log file, the simulated driver."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from gpuheal.agents.agent import AgentSettings
from gpuheal.agents.kmsg.follow import KernelLogFormat


def simulated_agent_settings(node: str, home: Path, gpus: int, **settings: Any) -> AgentSettings:
    """An agent for a simulated node: a fake NVML, and an empty file in `home` as its kernel log.

    Everything the agent keeps (sockets, spool, boot ID) lives under `home`, the sockets unless a
    `socket_dir` is given (a unix socket path may not exceed 107 bytes, which a deep `home`
    does). The kernel log file is kept across runs, as a node's log file is, and read from where
    the agent left off (its start, the first time), so a line written right after the agent starts
    is never skipped, and none is read twice. (Emptying it at start would leave the saved position
    pointing into new lines: a line as long as the old one would pass unread.) GPU
    resets (unless `gpu_reset` says otherwise) are played by the kernel-log resetter
    (`gpuheal_sim.fake_driver`), which writes the driver's acknowledgement into that file.
    """
    home.mkdir(parents=True, exist_ok=True)
    kernel_log = home / "kmsg.log"
    kernel_log.touch()
    settings.setdefault("socket_dir", home / "run")
    return AgentSettings(
        node=node,
        spool_dir=home / "spool",
        kernel_log=kernel_log,
        kernel_log_format=KernelLogFormat.FILE,
        boot_id_path=home / "boot_id",
        fake_gpus=gpus,
        **{"gpu_reset": "kernel-log", "boot_check": timedelta(seconds=0.5), **settings},
    )
