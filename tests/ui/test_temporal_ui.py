"""The Temporal UI, in a real browser, shows what a remediation is about and where it stands.

A remediation on the simulated fleet waits for a person's approval (its policy asks for one). The
UI's list shows it with its phase; its detail page shows the static summary (node, XID, GPU, action),
the current details (the phases passed, the one it is in, what it waits for) and the summary of each
step in its history. Once approved it resolves: the page says so, and the list shows the run
Completed and Resolved.

Screenshots of each view are kept in the test's tmp dir; with GPUHEAL_UI_SCREENSHOTS set to a folder
they are written there instead. The README's come from one run of this test so:
`GPUHEAL_UI_SCREENSHOTS=docs .venv/bin/pytest tests/ui/test_temporal_ui.py`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import FrameLocator, Locator, Page, ViewportSize, expect

from gpuheal.control import remediations
from gpuheal.domain.actions import RecommendedAction
from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.phases import Phase
from gpuheal.domain.remediation import ApprovalSignal, RemediationStatus
from gpuheal_sim.demo.devserver import free_port, start_dev_server
from tests.integration.conftest import StackFactory, eventually, fast_policy, phase_of
from tests.ui.conftest import CHROMIUM

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian's chromium package; .ci/run installs it)"
)

NODE = "gpu-node-001"
NAMESPACE = "default"
# The list's columns as an operator sets them (its column chooser keeps them in the browser's storage):
# gpuheal's search attributes beside the run's status.
COLUMNS = ["Status", "Workflow ID", "GpuhealPhase", "GpuhealPhaseSince", "GpuhealAction", "GpuhealXid", "Start"]
# Wide enough for all of them.
LIST_VIEW = ViewportSize(width=1900, height=480)
DETAIL_VIEW = ViewportSize(width=1600, height=900)
WAIT = 60_000
# The user metadata tab renders each text (Markdown) in a frame of its own, in this order.
SUMMARY, DETAILS, CURRENT_DETAILS = range(3)
# A folder (relative to where pytest runs) that takes the screenshots in place of the test's tmp dir.
SCREENSHOTS = "GPUHEAL_UI_SCREENSHOTS"


def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if folder := os.environ.get(SCREENSHOTS):
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


async def choose_columns(page: Page) -> None:
    stored = json.dumps({NAMESPACE: [{"label": label} for label in COLUMNS]})
    await page.add_init_script(f"localStorage.setItem('namespace-workflow-table-columns', {json.dumps(stored)})")


def metadata(page: Page, section: int) -> FrameLocator:
    return page.frame_locator("iframe").nth(section)


@needs_chromium
@pytest.mark.timeout(300)
async def test_the_ui_shows_a_remediation_s_summary_phases_and_steps_while_it_waits_for_approval_and_once_resolved(
    make_stack: StackFactory, page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shots = screenshot_folder(tmp_path_factory)
    stack = await make_stack()
    gpu = stack.cluster.inject_fault(NODE, xid=79, gpu=0)["gpu"]["uuid"]
    fault = Fault(
        node=NODE,
        action=RecommendedAction.RESTART_BM,
        xid=79,
        gpu_uuids=(gpu,),
        message="GPU has fallen off the bus",
        source="gpuheal-agent/kmsg",
        event_id=str(uuid.uuid4()),
        detected_at=datetime.now(UTC),
    )
    client = stack.server.client
    handle = await remediations.report_fault(
        client, fault, fast_policy(require_approval=True), task_queue=stack.task_queue
    )

    async def awaiting_approval() -> bool:
        return await phase_of(handle) == Phase.AWAITING_APPROVAL.value

    await eventually(awaiting_approval, "AwaitingApproval", timeout=60)
    ui = stack.server.ui_url
    workflows = f"{ui}/namespaces/{NAMESPACE}/workflows"
    run = f"{workflows}/{workflow_id_for(NODE)}/{handle.result_run_id}"
    summary = f"{NODE} · XID 79 · {gpu[:12]}… → RESTART_BM"

    # The list: the run, with its phase.
    await choose_columns(page)
    await page.set_viewport_size(LIST_VIEW)
    row = await list_row(page, workflows)
    await expect(row).to_contain_text("AwaitingApproval", timeout=WAIT)
    await expect(row).to_contain_text("RESTART_BM")
    await page.screenshot(path=shots / "ui-list.png")
    await page.set_viewport_size(DETAIL_VIEW)

    # The detail page's user metadata: the static summary and details, and the current details.
    await page.goto(f"{run}/user-metadata")
    await expect(metadata(page, SUMMARY).get_by_text(summary)).to_be_visible(timeout=WAIT)
    await expect(metadata(page, DETAILS).get_by_text("First fault XID 79 at")).to_be_visible()
    current = metadata(page, CURRENT_DETAILS)
    await expect(current.get_by_text("✓ Drained —")).to_be_visible(timeout=WAIT)
    await expect(current.get_by_text("▶ AwaitingApproval — now, since")).to_be_visible()
    await expect(current.get_by_text("waiting for approval: gpuheal approve")).to_be_visible()
    await page.screenshot(path=shots / "ui-awaiting-approval.png")

    # The history: each step, local ones included, and the approval's timer say what they do.
    await page.goto(f"{run}/history")
    await page.get_by_role("button", name="Compact").click()
    for step in (f"cordon + taint {NODE}", f"drain pass on {NODE}", "a person's approval or rejection, for up to 1d"):
        await expect(page.get_by_text(step).first).to_be_visible(timeout=WAIT)
    await to_the_top(page.get_by_role("heading", name="Event History"))
    await page.screenshot(path=shots / "ui-history-awaiting-approval.png")

    await remediations.send_decision(
        client, NODE, ApprovalSignal(approver="alice", reason="rack 4 drained, reboot it"), approve=True
    )
    status: RemediationStatus = await handle.result()
    assert status.phase is Phase.RESOLVED, status.reason

    # Resolved: the timeline's reboot names the provider "auto" picked ...
    await page.goto(f"{run}/timeline")
    await expect(page.get_by_text("reboot via simulator (RESTART_BM)").first).to_be_visible(timeout=WAIT)
    await to_the_top(page.get_by_role("heading", name="Timeline"))
    await page.screenshot(path=shots / "ui-timeline-resolved.png")
    # ... and the details tell the whole run: every phase, who approved, the provider and its machine.
    await page.goto(f"{run}/user-metadata")
    await expect(page.get_by_text("Completed", exact=True)).to_be_visible(timeout=WAIT)
    current = metadata(page, CURRENT_DETAILS)
    await expect(current.get_by_text("■ Resolved at")).to_be_visible(timeout=WAIT)
    await expect(current.get_by_text("✓ AwaitingApproval —")).to_be_visible()
    await expect(current.get_by_text("approved by alice")).to_be_visible()
    await expect(current.get_by_text("provider simulator took the reboot request")).to_be_visible()
    await expect(current.get_by_text(f"sim://{NODE}")).to_be_visible()
    await page.screenshot(path=shots / "ui-resolved.png")

    # The list: the run completed, in its last phase.
    await page.set_viewport_size(LIST_VIEW)
    row = await list_row(page, workflows)
    await expect(row).to_contain_text("Completed", timeout=WAIT)
    await expect(row).to_contain_text(Phase.RESOLVED.value, timeout=WAIT)
    await expect(row).not_to_contain_text(Phase.AWAITING_APPROVAL.value)
    await page.screenshot(path=shots / "ui-list-resolved.png")


async def to_the_top(section: Locator) -> None:
    """Scroll the page so that `section` starts at the top: the screenshot shows the steps, not the input."""
    await section.evaluate("element => element.scrollIntoView({block: 'start'})")


async def list_row(page: Page, workflows: str) -> Locator:
    """The remediation's row in the UI's list of workflows (at `workflows`), once it shows."""
    await page.goto(workflows)
    row = page.get_by_role("row").filter(has_text=workflow_id_for(NODE))
    await expect(row).to_be_visible(timeout=WAIT)
    return row


async def test_the_ui_listens_on_the_port_asked_for_on_loopback_only() -> None:
    wanted = free_port()
    server = await start_dev_server(ui=True, ui_port=wanted)
    try:
        assert server.ui_url == f"http://127.0.0.1:{wanted}"
        assert listening_addresses(wanted) == {"127.0.0.1"}
    finally:
        await server.shutdown()


def listening_addresses(port: int) -> set[str]:
    """The IPv4 and IPv6 addresses a socket listens on at `port`, from the kernel's tables."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                packed = bytes.fromhex(address)
                # The kernel writes each 32-bit word in host (little-endian) order.
                words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found
