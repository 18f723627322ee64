"""Remediation policy: how a node is drained and repaired.

Operators set it once for the worker (a YAML/JSON file or the defaults); every workflow carries the
policy it started with, so a policy change never alters a remediation already under way.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpuheal.domain.actions import Action, RecommendedAction
from gpuheal.domain.gpu_check import MAX_LEVEL as MAX_CHECK_LEVEL


class DrainMode(StrEnum):
    """How the pods of one namespace leave a quarantined node."""

    # Evict now through the Eviction API; PodDisruptionBudgets hold and 429s are retried.
    IMMEDIATE = "Immediate"
    # Leave the pods alone until they finish on their own (batch jobs).
    ALLOW_COMPLETION = "AllowCompletion"
    # Let the pods run for `delete_after`, then delete them whatever their budget says.
    DELETE_AFTER_TIMEOUT = "DeleteAfterTimeout"


class RepairStrategy(StrEnum):
    """How the faults of one action are repaired (`repair.strategies`)."""

    # Ask the node's agent to reset the named GPUs; a reboot when that does not bring them back.
    GPU_RESET = "gpu-reset"
    # Reboot through the node's provider.
    REBOOT = "reboot"
    # A person repairs (the manual provider): the remediation waits for their approval, which says the
    # repair is done, and then checks the GPUs.
    PERSON = "person"


# The provider that stands for a person's hands.
MANUAL_PROVIDER = "manual"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrainPolicy(_Strict):
    """Per-namespace drain modes and the durable waits between drain passes."""

    default_mode: DrainMode = DrainMode.IMMEDIATE
    namespaces: dict[str, DrainMode] = Field(default_factory=dict)
    # The whole drain must finish within this, or the remediation escalates to a person.
    timeout: timedelta = timedelta(minutes=30)
    # DeleteAfterTimeout pods are deleted once the drain has run this long.
    delete_after: timedelta = timedelta(minutes=10)
    # Waits between drain passes while pods remain (PDB 429s, terminating pods): exponential backoff.
    retry_initial: timedelta = timedelta(seconds=1)
    retry_max: timedelta = timedelta(seconds=30)
    # A pod held by a budget that can never allow a disruption escalates once the budget has said so
    # on every pass for this long: a status read while the disruption controller catches up with an
    # edit (or a transient SyncFailed) does not end the drain. (Above `timeout`, the timeout ends it.)
    never_allows_for: timedelta = timedelta(minutes=2)
    # How long one pass waits for the pods it evicted to be gone before a durable timer takes over.
    # Temporal timers fire with about a second of granularity; pods that exit promptly should not
    # cost one.
    settle: timedelta = timedelta(seconds=5)

    def mode_for(self, namespace: str) -> DrainMode:
        """The mode that applies to a namespace."""
        return self.namespaces.get(namespace, self.default_mode)

    @model_validator(mode="after")
    def _check_waits(self) -> DrainPolicy:
        if self.retry_initial <= timedelta(0) or self.retry_max < self.retry_initial:
            raise ValueError("drain.retry_initial must be positive and not above drain.retry_max")
        if self.delete_after > self.timeout:
            raise ValueError("drain.delete_after must not exceed drain.timeout")
        return self


class RepairPolicy(_Strict):
    """Who repairs the node and how long gpuheal waits for each step."""

    # "auto": the provider that owns the node's providerID (aws, azure, gcp, nebius, simulator) or
    # its Redfish annotation. A name forces that provider ("manual", "redfish", …).
    provider: str = "auto"
    # COMPONENT_RESET faults: ask the node's agent to reset the GPUs before rebooting. A failed or
    # unconfirmed reset falls back to a reboot.
    gpu_reset: bool = True
    # How the faults of each action named here are repaired, above the rule of `gpu_reset` (GPU
    # resets for COMPONENT_RESET, reboots for the rest): {"RESTART_BM": "person"} leaves power cycles
    # to a person, {"RESTART_VM": "gpu-reset"} tries a GPU reset first.
    strategies: dict[Action, RepairStrategy] = Field(default_factory=dict)
    gpu_reset_timeout: timedelta = timedelta(minutes=3)
    # Ask for a graceful restart first and force one if the node has not rebooted within this
    # (providers with a graceful restart, such as Redfish); None: force restart at once.
    graceful_timeout: timedelta | None = None
    # Ask a person before every repair, not only for faults no provider can fix.
    require_approval: bool = False
    # Ask a person before the repairs of these actions only (["RESTART_BM", "RESTART_VM"]: a GPU
    # reset runs by itself, a reboot waits for a person).
    approval_for: frozenset[Action] = frozenset()
    # Ask a person before every repair of a node whose labels include all of these (a node pool,
    # as a selector's matchLabels: {"pool": "h100-prod"}); empty: no pool asks.
    approval_node_selector: dict[str, str] = Field(default_factory=dict)
    # Escalate when nobody decided within this.
    approval_timeout: timedelta = timedelta(hours=24)
    # Approve on gpuheal's own behalf when nobody decided within this (shorter than approval_timeout);
    # never for a fault no provider can fix. None: wait for a person.
    auto_approve_after: timedelta | None = None
    node_ready_timeout: timedelta = timedelta(minutes=30)
    # After the node is back, how long the GPUs have to report healthy.
    verify_timeout: timedelta = timedelta(minutes=5)
    # Replace the machine instead of handing the node to a person when the repair did not hold: the
    # node did not come back from its reboot, its GPUs stayed unhealthy after it or failed their check,
    # or it is a repeat offender. The provider terminates the machine (EC2 TerminateInstances, GCE
    # instances.delete) and its group (an Auto Scaling group, Karpenter, a managed instance group)
    # launches another; only for providers that can, else a person is asked as without it. Where a
    # person approves this node's repairs, they approve the termination too.
    replace: bool = False
    # How long the node object may outlive its terminated machine before a person is asked.
    replace_timeout: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0))
    # How long one watch of a held node (gpuheal.io/hold=true) lasts before the next begins.
    hold_watch: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0))
    # How often an escalated remediation reads its node while it waits for a person: a node deleted,
    # or uncordoned by someone, meanwhile ends it.
    escalated_recheck: timedelta = Field(default=timedelta(minutes=30), gt=timedelta(0))

    def strategy_for(self, action: Action) -> RepairStrategy:
        """How a fault of `action` is repaired."""
        if action in self.strategies:
            return self.strategies[action]
        if action is RecommendedAction.COMPONENT_RESET and self.gpu_reset:
            return RepairStrategy.GPU_RESET
        return RepairStrategy.REBOOT

    def provider_for(self, action: Action) -> str:
        """The provider that repairs a fault of `action`: a person's for the actions left to one."""
        return MANUAL_PROVIDER if self.strategy_for(action) is RepairStrategy.PERSON else self.provider

    @model_validator(mode="after")
    def _check_strategies(self) -> RepairPolicy:
        for action, strategy in self.strategies.items():
            if not action.is_actionable:
                raise ValueError(f"repair.strategies: {action.name} calls for no repair")
            if strategy is RepairStrategy.GPU_RESET and action.needs_person:
                raise ValueError(f"repair.strategies: a GPU reset cannot repair {action.name}, which needs a person")
        return self

    @model_validator(mode="after")
    def _check_replace(self) -> RepairPolicy:
        if self.replace and self.provider == MANUAL_PROVIDER:
            raise ValueError("repair.replace: the manual provider has no machine to terminate; name a provider or auto")
        return self

    @model_validator(mode="after")
    def _check_approval_waits(self) -> RepairPolicy:
        if self.auto_approve_after is None:
            return self
        if not timedelta(0) < self.auto_approve_after < self.approval_timeout:
            raise ValueError("repair.auto_approve_after must be positive and shorter than repair.approval_timeout")
        if self.provider == MANUAL_PROVIDER:
            # With the manual provider an approval says a person has repaired the node.
            raise ValueError("repair.auto_approve_after cannot stand in for the person who repairs (provider manual)")
        return self


class StepTimeouts(_Strict):
    """How long one activity attempt may take before Temporal retries it elsewhere.

    These bound how soon a remediation moves on after its worker dies mid-step.
    """

    # Reads and patches of the node.
    node_call: timedelta = timedelta(seconds=30)
    drain_pass: timedelta = timedelta(minutes=5)
    # A drain pass reports progress at least this often, or it is considered lost.
    drain_heartbeat: timedelta = timedelta(seconds=30)
    # One reboot request, following the provider's long-running operation to its end (an Azure
    # restart takes minutes); the attempt heartbeats, so a lost worker is noticed much sooner.
    reboot_call: timedelta = timedelta(minutes=15)
    reboot_heartbeat: timedelta = timedelta(seconds=30)
    # Provider calls that keep failing (throttled, unreachable) are retried this many times, with
    # backoff, before the remediation escalates with the provider's last error.
    provider_attempts: int = Field(default=8, ge=1)


class LoopPolicy(_Strict):
    """When a fault is a repeat offence, escalated to a person instead of repaired again."""

    # A node remediated this many times within `node_window` (0: no limit).
    max_per_node: int = Field(default=3, ge=0)
    node_window: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    # A GPU (by UUID or board serial) remediated within this that faults again (0: never).
    gpu_window: timedelta = Field(default=timedelta(days=7), ge=timedelta(0))

    @property
    def looks_back(self) -> timedelta:
        """How far back the history is read."""
        return max(self.node_window if self.max_per_node else timedelta(0), self.gpu_window)


class ValidationPolicy(_Strict):
    """The proof a repaired node gives before it goes back to service, beyond GPU health reported."""

    # The DCGM diagnostic level the node's agent runs (`dcgmi diag -r LEVEL`; a check of what NVML
    # reports where DCGM is absent): 1 takes seconds, 2 about two minutes, 3 about half an hour.
    # 0: no check. A node whose check fails stays out of service (replaced, under repair.replace).
    level: int = Field(default=0, ge=0, le=MAX_CHECK_LEVEL)
    # How long the agent has to answer; a node whose check is not answered in time goes to a person.
    timeout: timedelta = Field(default=timedelta(minutes=45), gt=timedelta(0))


class DiagnosticsPolicy(_Strict):
    """What is kept of a node's state before a repair wipes it."""

    # Before a reboot, have the node's agent collect a diagnostics bundle (nvidia-bug-report.sh, or an
    # NVML probe) and store it where the agent is configured to (`--diagnostics-to`); the repair log
    # says where. The reboot waits for it at most `timeout`, and goes ahead whatever the answer.
    collect: bool = False
    timeout: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))


class RemediationPolicy(_Strict):
    """Everything a remediation needs to decide, bundled so it travels with the workflow."""

    drain: DrainPolicy = Field(default_factory=DrainPolicy)
    repair: RepairPolicy = Field(default_factory=RepairPolicy)
    loops: LoopPolicy = Field(default_factory=LoopPolicy)
    timeouts: StepTimeouts = Field(default_factory=StepTimeouts)
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    diagnostics: DiagnosticsPolicy = Field(default_factory=DiagnosticsPolicy)
    # Say what the remediation would do (its status' plan) and do none of it: no write to the cluster,
    # no provider call, no permit; it ends in DryRun.
    dry_run: bool = False
