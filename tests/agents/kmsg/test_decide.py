"""Decisions: the catalog's defaults, XID 154 by its message, SXid severity, and operator overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gpuheal.agents.kmsg.decide import XidPolicy, decide, load_xid_policy
from gpuheal.agents.kmsg.parser import EventKind, KernelEvent
from gpuheal.domain.actions import RecommendedAction as A
from tests.agents.kmsg.samples import parse_line


def _xid(code: int, message: str = "") -> KernelEvent:
    event = parse_line(f"NVRM: Xid (PCI:0000:3b:00): {code}, pid=1, name=a, {message}")
    assert event is not None
    return event


@pytest.mark.parametrize(
    ("xid", "action"),
    [
        (13, A.NONE),  # RESTART_APP: the application's problem
        (43, A.NONE),  # IGNORE
        (48, A.COMPONENT_RESET),  # WORKFLOW_XID_48
        (64, A.COMPONENT_RESET),  # RESET_GPU
        (74, A.CONTACT_SUPPORT),  # WORKFLOW_NVLINK_ERR: a bucket with no automatic remedy
        (95, A.COMPONENT_RESET),
        (119, A.COMPONENT_RESET),
        (4242, A.CONTACT_SUPPORT),  # not in the catalog
    ],
)
def test_catalog_defaults(xid: int, action: A) -> None:
    decision = decide(_xid(xid))
    assert decision.action is action
    assert decision.fatal is (action is not A.NONE)
    assert decision.source == "catalog"


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", A.COMPONENT_RESET),
        ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", A.RESTART_BM),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", A.COMPONENT_RESET),
        # Back to None: the GPU recovered, whatever it needed before.
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", A.NONE),
        ("GPU recovery action changed from 0x2 (Node Reboot Required) to 0x0 (None)", A.NONE),
        ("GPU Reset Required", A.COMPONENT_RESET),
        ("Node Reboot Required", A.RESTART_BM),
        ("None", A.NONE),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", A.CONTACT_SUPPORT),
    ],
)
def test_xid_154_follows_the_action_it_changed_to(message: str, action: A) -> None:
    assert decide(_xid(154, message)).action is action


def test_fallen_off_the_bus_is_xid_79_and_restarts_the_machine() -> None:
    for line in ("NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", "NVRM: Xid (PCI:0000:3b:00): 79, x"):
        event = parse_line(line)
        assert event is not None
        assert (event.kind, event.code, event.fallen_off_bus) == (EventKind.XID, 79, True)
        decision = decide(event)
        assert (decision.action, decision.fatal, decision.source) == (A.RESTART_BM, True, "catalog")


def test_a_failed_gpu_reset_calls_for_nothing_and_is_not_healthy_news() -> None:
    event = parse_line("NVRM: GPU 0000:3b:00.0: GPU reset did not complete")
    assert event is not None
    decision = decide(event, XidPolicy(overrides={0: A.RESTART_BM}))
    assert (decision.action, decision.fatal) == (A.NONE, False)


def test_sxid_severity() -> None:
    fatal = parse_line("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up")
    benign = parse_line("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress")
    assert fatal is not None
    assert benign is not None
    assert (decide(fatal).action, decide(fatal).fatal) == (A.RESTART_VM, True)
    assert (decide(benign).action, decide(benign).fatal) == (A.NONE, False)
    policy = XidPolicy(fatal_sxid_action=A.CONTACT_SUPPORT, sxid_overrides={12028: A.RESTART_VM})
    assert decide(fatal, policy).action is A.CONTACT_SUPPORT
    assert decide(benign, policy).action is A.RESTART_VM


def test_gpu_reset_is_healthy() -> None:
    event = parse_line("NVRM: GPU 0000:3b:00.0: GPU reset complete")
    assert event is not None
    decision = decide(event, XidPolicy(overrides={0: A.RESTART_BM}))
    assert (decision.action, decision.fatal) == (A.NONE, False)


def test_overrides_beat_the_catalog() -> None:
    # The seeds' clusters force 79 and 74 to a failing action; 13 may be silenced or raised.
    policy = XidPolicy(overrides={79: A.RESTART_BM, 74: A.RESTART_BM, 13: A.COMPONENT_RESET, 48: A.NONE})
    assert decide(_xid(74), policy).action is A.RESTART_BM
    assert decide(_xid(13), policy).action is A.COMPONENT_RESET
    silenced = decide(_xid(48), policy)
    assert (silenced.action, silenced.fatal, silenced.source) == (A.NONE, False, "policy")
    bus = parse_line("NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.")
    assert bus is not None
    assert decide(bus, XidPolicy(overrides={79: A.CONTACT_SUPPORT})).action is A.CONTACT_SUPPORT
    assert decide(_xid(64), policy).action is A.COMPONENT_RESET  # untouched XIDs keep the catalog's word


def test_policy_file_takes_names_or_numbers(tmp_path: Path) -> None:
    path = tmp_path / "xid-policy.json"
    path.write_text(json.dumps({"overrides": {"79": "RESTART_BM", "74": "restart_bm", "13": 2}}))
    policy = load_xid_policy(path)
    assert policy.overrides == {79: A.RESTART_BM, 74: A.RESTART_BM, 13: A.COMPONENT_RESET}
    path.write_text(json.dumps({"overrides": {"79": "REBOOT_PLEASE"}}))
    with pytest.raises(ValidationError):
        load_xid_policy(path)
    path.write_text(json.dumps({"overides": {}}))
    with pytest.raises(ValidationError):
        load_xid_policy(path)
