"""End to end through the fault injector: one fault id, from the central API's POST to the node back in service.

The central API runs as the chart's injector-api ServiceAccount and finds the injector agent's pod on
the node through the simulated cluster's Kubernetes API; the injector agent writes the XID line into
the node's simulated /dev/kmsg (a FIFO the simulator turns into kernel log records, as the kernel
would), the node's gpuheal agent reads that log, and the real worker remediates the node.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.tools.injector.api import InjectorApiSettings, running_api
from gpuheal.tools.injector.auth import Token, bearer
from gpuheal.tools.injector.client import inject_xid
from gpuheal_sim.injection import injector_on_node
from tests.chart import NAMESPACE, access_manifests, service_account
from tests.integration.conftest import StackFactory, run_started_after
from tests.integration.test_agent_remediation import FAULTY_GPU, node_agent
from tests.integration.test_remediation import NODE, gpuheal_marks

TOKEN = "integration-injector-token"


async def test_a_fault_injected_through_the_api_is_detected_and_remediated(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(workloads=False, access_manifests=access_manifests(injector=True))
    kubeconfig = stack.cluster.service_account_kubeconfig(*service_account("injector-api"), tmp_path / "api.kubeconfig")
    api_settings = InjectorApiSettings(token=Token(TOKEN), namespace=NAMESPACE, port=0, kubeconfig=kubeconfig)
    async with (
        node_agent(stack, tmp_path / "agent", stack.server.address) as (agent, kernel_log),
        injector_on_node(stack.cluster, NAMESPACE, NODE, 8, tmp_path / "injector", kernel_log, TOKEN),
        running_api(api_settings) as port,
    ):
        api = f"http://127.0.0.1:{port}"
        gpu = agent.nvml.device_info(FAULTY_GPU)
        posted = datetime.now(UTC)
        answer = await inject_xid(api, TOKEN, NODE, 79, FAULTY_GPU)
        fault_id = answer["fault_id"]
        status: RemediationStatus = await (await run_started_after(stack.server.client, NODE, posted)).result()
        fault = await listed_fault(api, fault_id)

    # The fault the API answered for is the line in the node's kernel log, naming the GPU's PCI address …
    assert (fault["node_name"], fault["xid"], fault["gpu"], fault["pci"]) == (NODE, 79, FAULTY_GPU, gpu.pci_bus_id)
    assert fault["line"].removeprefix("<3>") in kernel_log.read_text()
    # … and the remediation it started fixed that GPU's node.
    assert status.phase is Phase.RESOLVED, status.reason
    assert status.xids == [79]
    assert status.gpu_uuids == [gpu.uuid]
    assert stack.cluster.reboot_requests(NODE) == 1
    node = await stack.node(NODE)
    assert not node.spec.unschedulable
    assert gpuheal_marks(node) == set()


async def listed_fault(api: str, fault_id: str) -> dict[str, Any]:
    """The fault `fault_id` as the central API lists it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api}/api/v1/faults", params={"node": NODE}, headers=bearer(TOKEN)) as response,
    ):
        listed = await response.json()
    [fault] = [fault for fault in listed["faults"] if fault["fault_id"] == fault_id]
    return fault  # type: ignore[no-any-return]
