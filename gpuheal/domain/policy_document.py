"""The policy file: one document for everything an operator decides about remediation.

`gpuheal worker --policy FILE` reads it (a ConfigMap in the chart) and the node agent reads its `xids`
section. Its sections are the models gpuheal already runs on: the XID overrides (`xids`), how nodes
are drained (`drain`), repaired and approved (`repair`), when a fault is a repeat offence (`loops`),
how long each step may take (`timeouts`), and the fleet's limits (`fleet`: the budget and the breaker;
absent, the worker's flags set them). Every field has a default, so an empty file is the defaults.

A document's version is a digest of its content, not of its text: comments, key order and layout
do not change it. Each remediation records the version it ran under.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.fleet import FleetPolicy
from gpuheal.domain.policy import RemediationPolicy
from gpuheal.domain.xid_policy import XidPolicy

# Hex digits of the digest kept in a version: enough that two policies of one cluster never share one.
_VERSION_DIGITS = 12


class PolicyDocument(RemediationPolicy):
    """The policy file's content: a remediation policy, with the XID overrides and the fleet's limits."""

    xids: XidPolicy = Field(default_factory=XidPolicy)
    # None: the worker's flags (`--max-remediations`, `--breaker-share`, …) set the fleet's limits.
    fleet: FleetPolicy | None = None

    def remediation(self) -> RemediationPolicy:
        """The part a remediation carries."""
        return RemediationPolicy(
            drain=self.drain, repair=self.repair, loops=self.loops, timeouts=self.timeouts, dry_run=self.dry_run
        )

    @property
    def version(self) -> str:
        """A digest of the content, the same for any file that says the same thing."""
        return policy_version(self)


class PolicySnapshot(BaseModel):
    """The policy a remediation runs under, with its version (the `current_policy` step's answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    policy: RemediationPolicy


class AgentPolicy(BaseModel):
    """The part of the policy file the node agent decides by: its `xids` section. The other sections
    are the worker's to check: a mistake in them must not stop the agents that watch the GPUs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    xids: XidPolicy = Field(default_factory=XidPolicy)

    @property
    def version(self) -> str:
        return policy_version(self)


def policy_version(policy: BaseModel) -> str:
    """The version of a policy: the first hex digits of the SHA-256 of the canonical JSON of what it
    sets apart from the defaults (so a field a later gpuheal adds, with its default, changes no version)."""
    canonical = json.dumps(
        policy.model_dump(exclude_defaults=True), sort_keys=True, separators=(",", ":"), default=_plain
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:_VERSION_DIGITS]


def _plain(value: object) -> object:
    """What JSON cannot say as it is: a set in sorted order (its own order changes from process to
    process), a duration in seconds."""
    if isinstance(value, set | frozenset):
        return sorted(json.dumps(member, sort_keys=True, default=_plain) for member in value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"a policy holds a {type(value).__name__}, which has no canonical form")
