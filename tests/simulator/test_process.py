"""``python -m gpuheal_sim.simulator`` as a process: the ready line, a working kubeconfig, clean SIGTERM."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the simulator printed nothing in time"
    return proc.stdout.readline()


def test_process_prints_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kube" / "config"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpuheal_sim.simulator",
            "--nodes",
            "3",
            "--gpus-per-node",
            "4",
            "--reboot-seconds",
            "0",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            _check_running_simulator(proc, kubeconfig)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _check_running_simulator(proc: subprocess.Popen[str], kubeconfig: Path) -> None:
    line = json.loads(_read_line(proc, 30))
    assert line["url"].startswith("https://127.0.0.1:")
    assert line["controlUrl"].startswith("http://127.0.0.1:")
    assert Path(line["kubeconfig"]) == kubeconfig and kubeconfig.exists()
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    core: Any = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes] == ["gpu-node-000", "gpu-node-001", "gpu-node-002"]
    assert nodes[0].status.capacity["nvidia.com/gpu"] == "4"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_invalid_configuration_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal_sim.simulator", "--nodes", "-1"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
