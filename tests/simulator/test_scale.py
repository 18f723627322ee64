"""A 2,000-node fleet builds in one process and serves lists and per-node queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.aio import client

from gpuheal_sim.simulator import SimulatedCluster

from .conftest import aio_api, eventually, fast_config


async def test_two_thousand_node_fleet(tmp_path: Path) -> None:
    async with SimulatedCluster(fast_config(nodes=2000), state_dir=tmp_path) as cluster, await aio_api(cluster) as api:
        core: Any = client.CoreV1Api(api)
        nodes = await core.list_node()
        assert len(nodes.items) == 2000
        assert nodes.items[0].metadata.name == "gpu-node-0000" and nodes.items[-1].metadata.name == "gpu-node-1999"
        page = await core.list_node(limit=500)
        assert len(page.items) == 500 and page.metadata.remaining_item_count == 1500
        rest = await core.list_node(limit=2000, _continue=page.metadata._continue)
        assert rest.items[0].metadata.name == "gpu-node-0500" and len(rest.items) == 1500
        on_node = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-node-1234")
        kinds = sorted(p.metadata.owner_references[0].kind for p in on_node.items)
        assert kinds == ["DaemonSet", "Job", "Node", "ReplicaSet"]
        assert cluster.store.count("pods") == 7000
        policy: Any = client.PolicyV1Api(api)

        async def synced() -> Any:
            pdb = await policy.read_namespaced_pod_disruption_budget("trainer-pdb", "ml")
            return pdb if pdb.status.observed_generation == 1 else None

        pdb = await eventually(synced)
        assert (pdb.status.current_healthy, pdb.status.disruptions_allowed) == (2000, 1)
        status = await core.patch_node("gpu-node-1999", {"spec": {"unschedulable": True}})
        assert status.spec.unschedulable is True
