"""`gpuheal demo`, the README's main job, end to end as a new user runs it: from a deep checkout.

A unix socket path may not exceed 107 bytes, and a checkout can sit far deeper than that; the demo's
agents must still bind their sockets, and the remediation must end Resolved with exit status 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_the_demo_resolves_its_fault_from_a_checkout_150_characters_deep_and_again_on_its_kept_state(
    tmp_path: Path,
) -> None:
    # The demo keeps its state under the checkout (`.state/demo`, its default), as `make demo` runs it.
    checkout = tmp_path / "checkouts"
    checkout = checkout / ("d" * max(1, 150 - len(str(checkout)) - 1)) / "gpuheal"
    checkout.mkdir(parents=True)
    demo = ["demo", "--nodes", "2", "--gpus-per-node", "2", "--reboot-seconds", "0.5"]
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal", *demo],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=checkout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Resolved" in result.stdout
    # Run again on the state the first run kept, as a user runs `make demo` twice: the node's kernel
    # log and its agent's saved position in it must still agree, or the new line goes unread.
    again = subprocess.run(
        [sys.executable, "-m", "gpuheal", *demo], capture_output=True, text=True, timeout=300, check=False, cwd=checkout
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "back in service" in again.stdout
    # The agents' sockets are bound outside the deep checkout, within the 107-byte limit.
    [sockets] = re.findall(r"sockets under (\S+)/<node>", result.stdout)
    assert not sockets.startswith(str(tmp_path))
    assert len(f"{sockets}/gpu-node-000/device-api.sock") <= 107


@pytest.mark.timeout(300)
def test_under_load_every_node_s_generator_feeds_its_intake_while_the_fault_is_remediated(tmp_path: Path) -> None:
    demo = ["demo", "--nodes", "3", "--gpus-per-node", "2", "--reboot-seconds", "0.5", "--load", "heavy"]
    demo += ["--state-dir", str(tmp_path / "state")]
    result = subprocess.run(
        [sys.executable, "-m", "gpuheal", *demo], capture_output=True, text=True, timeout=300, check=False
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu-node-001 is back in service" in result.stdout
    assert "gpuheal-eventgen on 3 node(s) at 0.2 events/s each (0.60/s in all)" in result.stdout
    # The live view shows the intakes' rate while the remediation proceeds (its drain alone outlasts 2 s).
    live = result.stdout[: result.stdout.index("Remediation of gpu-node-001")]
    assert re.search(r"load\s+intake \d+\.\d\d events/s over the last \d+ s \(\d+ taken on 3 node", live), live
    # Each generator sends its first event at once; every event sent was taken by an intake.
    [(sent, taken, intakes)] = re.findall(r"load: (\d+) events sent, (\d+) taken by (\d+) intake", result.stdout)
    assert int(sent) == int(taken) >= 3 and intakes == "3"
    # The generators' events name the nodes' own GPUs: no agent warns of GPUs it does not have.
    assert "does not have" not in result.stdout + result.stderr
