"""Pure rules: how actions rank and parse, what the XID catalog says, which policies are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from gpuheal.domain.actions import RecommendedAction as A
from gpuheal.domain.actions import action_from_wire
from gpuheal.domain.catalog import action_for_xid, xid_catalog
from gpuheal.domain.faults import Fault
from gpuheal.domain.policy import DrainMode, DrainPolicy


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (A.COMPONENT_RESET, A.RESTART_BM, A.RESTART_BM),  # a GPU reset becomes a reboot
        (A.RESTART_BM, A.COMPONENT_RESET, A.RESTART_BM),  # never the other way round
        (A.RESTART_VM, A.RESTART_BM, A.RESTART_BM),
        (A.RESTART_BM, A.CONTACT_SUPPORT, A.CONTACT_SUPPORT),
        (A.NONE, A.COMPONENT_RESET, A.COMPONENT_RESET),
    ],
)
def test_escalation_only_raises(current: A, new: A, expected: A) -> None:
    assert current.escalate(new) is expected


def test_only_actions_no_provider_performs_need_a_person() -> None:
    assert {a for a in A if a.needs_person} == {
        A.REPLACE_VM,
        A.RUN_DCGMEUD,
        A.RUN_FIELDDIAG,
        A.CUSTOM,
        A.UNKNOWN,
        A.CONTACT_SUPPORT,
    }


def test_wire_numbers_map_to_actions_and_upstreams_remediate_to_the_default_repair() -> None:
    assert action_from_wire(24) is A.RESTART_BM
    assert action_from_wire(28) is A.RESTART_VM
    assert action_from_wire(42) is None


def test_actions_travel_by_name_and_arrive_by_name_or_number() -> None:
    fault = Fault(node="n", action="restart_bm")
    assert fault.action is A.RESTART_BM
    assert '"action":"RESTART_BM"' in fault.model_dump_json()
    assert Fault.model_validate_json('{"node": "n", "action": 2}').action is A.COMPONENT_RESET
    with pytest.raises(ValidationError, match="unknown recommended action 'REBOOT'"):
        Fault(node="n", action="REBOOT")


@pytest.mark.parametrize(
    ("xid", "expected"),
    [
        (79, A.RESTART_BM),  # fallen off the bus
        (48, A.COMPONENT_RESET),  # double-bit ECC: WORKFLOW_XID_48
        (95, A.COMPONENT_RESET),  # uncontained error: RESET_GPU
        (13, A.NONE),  # graphics exception: RESTART_APP
        (63, A.NONE),  # IGNORE
        (74, A.CONTACT_SUPPORT),  # NVLink: a workflow bucket with no default mapping
        (1, A.CONTACT_SUPPORT),
        (100_000, A.CONTACT_SUPPORT),  # not in the catalog
    ],
)
def test_catalog_buckets_map_to_actions(xid: int, expected: A) -> None:
    assert action_for_xid(xid) is expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("GPU Reset Required", A.COMPONENT_RESET),
        ("Drain and Reset", A.COMPONENT_RESET),
        ("Node Reboot Required", A.RESTART_BM),
        ("None", A.NONE),
        ("something new", A.CONTACT_SUPPORT),
    ],
)
def test_xid_154_is_decided_by_its_message(message: str, expected: A) -> None:
    assert action_for_xid(154, f"Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 to {message}") is (
        expected
    )


def test_the_shipped_catalog_is_whole() -> None:
    catalog = xid_catalog()
    assert len(catalog) == 161
    assert catalog[79].mnemonic == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"


def test_drain_policy_refuses_contradictions() -> None:
    with pytest.raises(ValidationError, match=r"delete_after must not exceed drain\.timeout"):
        DrainPolicy(timeout=timedelta(minutes=1), delete_after=timedelta(minutes=2))
    with pytest.raises(ValidationError, match="retry_initial must be positive"):
        DrainPolicy(retry_initial=timedelta(0))
    with pytest.raises(ValidationError, match="extra"):
        DrainPolicy.model_validate({"timeuot": "PT1M"})
    assert DrainPolicy(namespaces={"batch": DrainMode.ALLOW_COMPLETION}).mode_for("batch") is DrainMode.ALLOW_COMPLETION
    assert DrainPolicy().mode_for("ml") is DrainMode.IMMEDIATE
