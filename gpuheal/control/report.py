"""Reporting a fault: signal-with-start of the node's `remediate-<node>` workflow, by name.

It starts the node's remediation, or joins the one already running. That makes reporting idempotent
per node and needs no lookup first, which keeps a fault storm to one round trip per fault. It goes by
the names and payload types in `gpuheal.domain.remediation_contract`, never by the workflow class, so
the node agent reports faults without loading workflow code.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from gpuheal.control.connection import DEFAULT_TASK_QUEUE
from gpuheal.domain.faults import Fault
from gpuheal.domain.phases import Phase
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.policy_document import policy_version
from gpuheal.domain.remediation import RemediationStatus
from gpuheal.domain.remediation_contract import (
    FAULT_SIGNAL,
    NODE_ATTRIBUTE,
    PHASE_ATTRIBUTE,
    REMEDIATION,
    workflow_id_for,
)
from gpuheal.domain.ui_text import start_details, start_summary

# Set at the start, so visibility lists the remediation before its first workflow task runs.
_NODE = SearchAttributeKey.for_keyword(NODE_ATTRIBUTE)
_PHASE = SearchAttributeKey.for_keyword(PHASE_ATTRIBUTE)


async def report_fault(
    client: Client, fault: Fault, policy: RemediationPolicy | None = None, task_queue: str = DEFAULT_TASK_QUEUE
) -> WorkflowHandle[Any, RemediationStatus]:
    """Start the node's remediation with this fault, or add the fault to the running one.

    Without a policy, the remediation runs under the policy in force on the worker when it begins. A
    run this starts carries the fault in its static summary and details, which the Temporal UI shows;
    a fault that joins a running one leaves them as they are."""
    version = policy_version(policy) if policy is not None else ""
    return await client.start_workflow(
        REMEDIATION.name,
        REMEDIATION.input(node=fault.node, policy=policy, policy_version=version),
        id=workflow_id_for(fault.node),
        task_queue=task_queue,
        result_type=REMEDIATION.result,
        start_signal=FAULT_SIGNAL.name,
        start_signal_args=FAULT_SIGNAL.args(fault),
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(_NODE, fault.node), SearchAttributePair(_PHASE, Phase.DETECTED.value)]
        ),
        static_summary=start_summary(fault),
        static_details=start_details(fault, version),
    )
