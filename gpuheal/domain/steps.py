"""Payloads of the node activities: one request model and one result model per step.

The workflow decides, the activities act; these models are the whole conversation between them.
Which step takes which request and answers with which result is written once, in
gpuheal.domain.contracts.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.budgets import DisruptionBudget
from gpuheal.domain.diagnostics import DiagnosticsReport
from gpuheal.domain.gpu_check import GpuCheckReport
from gpuheal.domain.gpu_health import GpuHealthReport
from gpuheal.domain.gpu_reset import GpuResetReport
from gpuheal.domain.policy import DrainPolicy


class Step(StrEnum):
    """Activity names. Workflows call activities by name so they never import the code that does I/O."""

    QUARANTINE = "quarantine_node"
    DRAIN = "drain_node"
    REBOOT = "request_reboot"
    RESET_GPUS = "request_gpu_reset"
    WITHDRAW_GPU_RESET = "withdraw_gpu_reset"
    CHECK_GPUS = "request_gpu_check"
    COLLECT_DIAGNOSTICS = "request_diagnostics"
    DESCRIBE_MACHINE = "describe_machine"
    # Terminate the machine behind a node the repair did not fix (policy `repair.replace`).
    REPLACE = "replace_machine"
    OBSERVE = "observe_node"
    RELEASE = "release_node"
    WAIT_FOR_NODE = "wait_for_node"
    # The fleet governor's (gpuheal.domain.fleet).
    ASK_PERMIT = "ask_for_permit"
    COLLECT_PERMIT = "collect_permit"
    # The node read for its hold label, and unless held the ask and its grant, in one step.
    COLLECT_UNLESS_HELD = "collect_permit_unless_held"
    COUNT_GPU_NODES = "count_gpu_nodes"
    FIND_ENDED = "find_ended_holders"
    DELIVER_PERMITS = "deliver_permits"
    # A remediation gives its permit back (or withdraws its request) by a step (runs begun under 0.3.0).
    RETURN_PERMIT = "return_permit"
    # The remediations of a node and its GPUs before this one (gpuheal.domain.history).
    FIND_HISTORY = "find_earlier_remediations"
    # The policy of the worker's policy file, for a remediation started without one.
    CURRENT_POLICY = "current_policy"
    # A dry run's only read of the cluster: the node, the pods a drain would move, the provider.
    SURVEY = "survey_node"
    # The provider "auto" picks for a node, read before its reboot so the step's summary names it.
    NAME_PROVIDER = "name_reboot_provider"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuarantineRequest(_Payload):
    node: str
    # "<workflow id>/<run id>": which remediation holds the node (recorded in an annotation).
    holder: str
    reason: str


class NodeRef(_Payload):
    node: str


class NodeRecord(_Payload):
    """What quarantine found and recorded; it is what a later release restores."""

    node: str
    exists: bool
    # False when the node is labelled gpuheal.io/managed=false: nothing was touched.
    managed: bool
    cordoned_before: bool
    boot_id: str
    # The node's labels when quarantined: which pool it is in, for the policy's approval rule.
    labels: dict[str, str] = Field(default_factory=dict)


class NodeState(_Payload):
    """A read of the node as it is now."""

    node: str
    exists: bool
    ready: bool
    boot_id: str
    unschedulable: bool
    # None when the node carries no GpuHealthy condition.
    gpu_healthy: bool | None
    gpu_message: str = ""
    # The whole GpuHealthy condition: which boot and when it was reported (see gpuheal.domain.gpu_health).
    gpu_report: GpuHealthReport | None = None
    # The agent's last answer to a GPU reset order (the node's GpuReset condition), if any.
    gpu_reset: GpuResetReport | None = None
    # The agent's last answer to a GPU check order (the node's GpuCheck condition), if any.
    gpu_check: GpuCheckReport | None = None
    # The agent's last answer to a diagnostics order (the node's GpuDiagnostics condition), if any.
    diagnostics: DiagnosticsReport | None = None
    # Labelled gpuheal.io/hold=true: a remediation waits before it touches the node.
    held: bool = False


class PodRef(_Payload):
    namespace: str
    name: str


class DrainRequest(_Payload):
    node: str
    holder: str
    policy: DrainPolicy
    # The drain has run past `policy.delete_after`: DeleteAfterTimeout pods are deleted now.
    delete_overdue: bool = False


class BudgetHold(_Payload):
    """A pod a PodDisruptionBudget would not let go, and the budget as it was read then."""

    pod: PodRef
    budget: DisruptionBudget


class PodFailure(_Payload):
    """A pod the API server refused to evict or delete for another reason than its budget."""

    pod: PodRef
    error: str


class DrainProgress(_Payload):
    """The outcome of one drain pass: what left and what is still on the node."""

    evicted: int = 0
    deleted: int = 0
    # Pods a PodDisruptionBudget would not let go this pass (HTTP 429).
    blocked: tuple[PodRef, ...] = ()
    # The budgets that held blocked pods, where the 429 named one and it could be read.
    holds: tuple[BudgetHold, ...] = ()
    # Pods whose eviction or deletion failed with another error (a 500, a 403, ...) this pass.
    failed: tuple[PodFailure, ...] = ()
    # Pods still on the node: terminating, waiting to complete, blocked or failed.
    remaining: tuple[PodRef, ...] = ()
    # The node is no longer cordoned: somebody uncordoned it mid-drain.
    uncordoned: bool = False

    @property
    def done(self) -> bool:
        return not self.remaining


class _RepairRequest(_Payload):
    """A request of the repair, once per remediation run and round."""

    node: str
    holder: str
    # A person's retry of an escalated repair starts a new round: its requests are new ones, not the
    # earlier round's found again on the node.
    round: int = Field(default=0, ge=0)

    @property
    def request_id(self) -> str:
        """Which request this is, as recorded on the node: the holder, and the round after the first."""
        return self.holder if not self.round else f"{self.holder}#{self.round}"


class ReplaceRequest(_RepairRequest):
    """Terminate the machine behind a node this run holds cordoned, through `provider`."""

    provider: str
    # Asked again (a person's retry): the boot the terminated machine was on. A node on another boot
    # is a new machine under the old name (a recreated managed instance), never terminated.
    boot_id: str = ""


class RebootRequest(_RepairRequest):
    # A provider name, or "auto": the one that owns the node's providerID (or Redfish annotation).
    provider: str = "auto"
    # Ask for a graceful restart first (providers that have one; see RebootResult.graceful).
    graceful: bool = False


class RebootResult(_Payload):
    # The bootID the node had when the reboot was first requested; the node must come back with another.
    boot_id_before: str
    # False when an earlier attempt had already asked (recorded on the node) or the node has rebooted.
    requested_now: bool
    provider: str
    detail: str = ""
    # False for providers where a person performs the repair: the node need not report a new boot.
    expects_new_boot: bool = True
    # True when a graceful restart was asked for; a force restart may follow if it does not happen.
    graceful: bool = False
    # When the reboot was first requested, as recorded on the node (the worker's clock); GPU health
    # reported by a writer that names no boot must be later than this.
    requested_at: datetime | None = None


class MachineRequest(_Payload):
    node: str
    provider: str = "auto"


class NodeSurvey(_Payload):
    """What a dry run reads: the node, the pods a drain would move, and who would repair it."""

    node: str
    exists: bool
    managed: bool = True
    held: bool = False
    # Cordoned before gpuheal (as a release would find it): it stays cordoned afterwards.
    cordoned_before: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    # Whether a remediation would ask the fleet governor for a permit (the worker's fleet is governed).
    governed: bool = True
    # Not finished, not a DaemonSet's, not a mirror pod: what a drain would have to move (the first
    # MAX_SURVEYED_PODS of them), those already terminating, and how many there are in all.
    pods: tuple[PodRef, ...] = ()
    terminating: tuple[PodRef, ...] = ()
    pod_count: int = 0
    # The provider that would reboot it ("" when none would: `provider_problem` says why), its
    # providerID, and what the provider does: a graceful restart first; a reboot (False: a person);
    # terminating the machine for its group to replace (policy repair.replace).
    provider: str = ""
    provider_id: str = ""
    provider_problem: str = ""
    graceful: bool = False
    reboots: bool = True
    replaces: bool = False


# A node with thousands of pods must not make a payload over Temporal's limit.
MAX_SURVEYED_PODS = 100


class ProviderNamed(_Payload):
    """The provider a reboot request for the node would go to, and the machine it knows the node by;
    empty where none could be named (the node is gone, no provider owns it: the reboot step says why)."""

    provider: str = ""
    machine: str = ""


class MachineState(_Payload):
    """The provider's view of the machine behind a node, for the reason a person reads."""

    provider: str
    summary: str
    # The node's boot when it was read (a replacement's: the machine it terminated).
    boot_id: str = ""


class GpuResetRequest(_RepairRequest):
    gpus: list[str]


class DiagnosticsRequest(_RepairRequest):
    """Have the node's agent collect and store a diagnostics bundle, once per run and round."""

    reason: str = ""

    @property
    def order_id(self) -> str:
        return f"{self.request_id}/diagnostics"


class GpuCheckRequest(_RepairRequest):
    """Have the node's agent check its GPUs at DCGM diagnostic `level`; `check` numbers the run's checks."""

    level: int
    check: int = Field(default=0, ge=0)

    @property
    def order_id(self) -> str:
        """The order's id: each check of a run is a new order (a person's resume checks again)."""
        return f"{self.request_id}/check-{self.check}"


class Outcome(StrEnum):
    """How a remediation leaves the node."""

    # Back in service: remove everything gpuheal added, uncordon unless cordoned before.
    RESOLVED = "Resolved"
    # A person takes over: the node stays cordoned and tainted, with the reason annotated.
    ESCALATED = "Escalated"
    # A person uncordoned it mid-way: remove gpuheal's marks, leave the cordon as the person set it.
    STOOD_DOWN = "StoodDown"
    # A person handed the escalated node back (resume, retry): gpuheal works on it again, so the
    # escalation's reason goes; cordon and taint stay.
    TAKEN_BACK = "TakenBack"


class ReleaseRequest(_Payload):
    node: str
    holder: str
    outcome: Outcome
    cordoned_before: bool
    reason: str = ""
