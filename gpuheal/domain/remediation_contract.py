"""The remediation workflow as its callers see it, held once for the workflow and its callers.

A detector (the node agent, `gpuheal report`, the tests) starts a node's remediation or joins the
running one by name, with signal-with-start: it needs these names and payload types, never the
workflow's code, so the node agent does not load the workflow module to report a fault.
"""

from __future__ import annotations

from gpuheal.domain.faults import Fault
from gpuheal.domain.marks import workflow_id_for
from gpuheal.domain.remediation import RemediationInput, RemediationStatus
from gpuheal.domain.workflow_contract import SignalContract, WorkflowContract

REMEDIATION = WorkflowContract("RemediationWorkflow", RemediationInput, RemediationStatus)
# One fault on the node; the first one arrives with the start (signal-with-start).
FAULT_SIGNAL = SignalContract("fault", Fault)
# The search attributes a detector sets when it starts a remediation, before the workflow runs.
NODE_ATTRIBUTE = "GpuhealNode"
PHASE_ATTRIBUTE = "GpuhealPhase"
# When the run entered its current phase (set by the workflow): "stuck in a phase" queries and alerts.
PHASE_SINCE_ATTRIBUTE = "GpuhealPhaseSince"

__all__ = [
    "FAULT_SIGNAL",
    "NODE_ATTRIBUTE",
    "PHASE_ATTRIBUTE",
    "PHASE_SINCE_ATTRIBUTE",
    "REMEDIATION",
    "SignalContract",
    "WorkflowContract",
    "workflow_id_for",
]
