"""The operator's word on XIDs and SXids, above NVIDIA's catalog (the policy file's `xids` section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gpuheal.domain.actions import Action, RecommendedAction


class XidPolicy(BaseModel):
    """The operator's word on XIDs and SXids, above the catalog's.

    As JSON: `{"overrides": {"79": "RESTART_BM", "74": "RESTART_BM"}, "sxid_overrides": {"12028": "NONE"}}`;
    actions by name or wire number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    overrides: dict[int, Action] = Field(default_factory=dict)
    sxid_overrides: dict[int, Action] = Field(default_factory=dict)
    fatal_sxid_action: Action = RecommendedAction.RESTART_VM
