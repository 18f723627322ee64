"""The marks gpuheal leaves on a node. Everything gpuheal owns carries the `gpuheal.io/` prefix."""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "gpuheal.io/"

# The NoSchedule taint that keeps new work off a quarantined node.
QUARANTINE_TAINT_KEY = f"{PREFIX}gpu-fault"

# A node labelled `gpuheal.io/managed=false` is never touched.
MANAGED_LABEL = f"{PREFIX}managed"
# A node labelled `gpuheal.io/hold=true` is not touched until the label goes: its remediation waits
# in OnHold before it asks for a permit (a person is working on the node, a job must finish first).
HOLD_LABEL = f"{PREFIX}hold"

# Which remediation holds the node; the workflow id.
REMEDIATION_ANNOTATION = f"{PREFIX}remediation"
# Whether the node was already cordoned when gpuheal arrived ("true"/"false"), so it stays that way.
CORDONED_BEFORE_ANNOTATION = f"{PREFIX}cordoned-before"
# The bootID seen when quarantining; the reboot must produce a different one.
BOOT_ID_ANNOTATION = f"{PREFIX}boot-id-before"
# The reboot request, durably recorded before the provider is called: a JSON object with the holder
# ("<workflow id>/<run id>"), the bootID and time (RFC 3339) of the request, the provider, whether it
# was graceful and whether the provider refused it (see gpuheal.activities.repair._RebootRecord).
REBOOT_REQUEST_ANNOTATION = f"{PREFIX}reboot-requested"
# A GPU reset order for the node's agent (see gpuheal.domain.gpu_reset).
GPU_RESET_REQUEST_ANNOTATION = f"{PREFIX}gpu-reset-request"
# A GPU check order for the node's agent (see gpuheal.domain.gpu_check).
GPU_CHECK_REQUEST_ANNOTATION = f"{PREFIX}gpu-check-request"
# A diagnostics collection order for the node's agent (see gpuheal.domain.diagnostics).
DIAGNOSTICS_REQUEST_ANNOTATION = f"{PREFIX}diagnostics-request"
# Why a remediation escalated to a person.
ESCALATION_ANNOTATION = f"{PREFIX}escalated"

ANNOTATIONS = (
    REMEDIATION_ANNOTATION,
    CORDONED_BEFORE_ANNOTATION,
    BOOT_ID_ANNOTATION,
    REBOOT_REQUEST_ANNOTATION,
    GPU_RESET_REQUEST_ANNOTATION,
    GPU_CHECK_REQUEST_ANNOTATION,
    DIAGNOSTICS_REQUEST_ANNOTATION,
    ESCALATION_ANNOTATION,
)

# On a bare-metal node: the URL of its Redfish ComputerSystem ("https://bmc/redfish/v1/Systems/1").
REDFISH_SYSTEM_ANNOTATION = f"{PREFIX}redfish-system"

# The node condition the agent maintains and the verify step reads.
GPU_HEALTHY_CONDITION = "GpuHealthy"

WORKFLOW_ID_PREFIX = "remediate-"


def workflow_id_for(node: str) -> str:
    """The one workflow id a node's remediation runs under."""
    return f"{WORKFLOW_ID_PREFIX}{node}"


def on_hold(labels: Mapping[str, str]) -> bool:
    """Whether a node with these labels is held back from remediation (HOLD_LABEL=true)."""
    return labels.get(HOLD_LABEL) == "true"
