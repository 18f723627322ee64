"""The node agent reports faults by name (`gpuheal.control.report`): it never loads workflow code."""

from __future__ import annotations

import subprocess
import sys

LOADED_WORKFLOW_MODULES = (
    "import sys, gpuheal.agents.agent; print(sorted(m for m in sys.modules if m.startswith('gpuheal.workflows')))"
)


def test_the_node_agent_loads_no_workflow_code() -> None:
    result = subprocess.run([sys.executable, "-c", LOADED_WORKFLOW_MODULES], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
