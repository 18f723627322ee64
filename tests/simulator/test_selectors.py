"""Label and field selector parsing and matching."""

from __future__ import annotations

import pytest

from gpuheal_sim.simulator.errors import ApiError
from gpuheal_sim.simulator.resources import NODES, PODS
from gpuheal_sim.simulator.selectors import parse_field_selector, parse_label_selector, selector_from_object


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=trainer", {"app": "trainer"}, True),
        ("app==trainer", {"app": "other"}, False),
        ("app!=trainer", {}, True),
        ("app in (a, b),tier", {"app": "b", "tier": "x"}, True),
        ("app in (a, b),tier", {"app": "b"}, False),
        ("app notin (a,b)", {"app": "c"}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("!gpuheal.io/managed", {"gpuheal.io/managed": "false"}, False),
        ("gpuheal.io/managed", {"gpuheal.io/managed": "false"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selectors(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_bad_label_selector_is_400() -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector("a=b,,c")
    assert err.value.code == 400


def test_selector_objects() -> None:
    sel = selector_from_object(
        {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}
    )
    assert sel.matches({"app": "x", "tier": "web"})
    assert not sel.matches({"app": "x", "tier": "db"})
    assert not selector_from_object(None).matches({"app": "x"}), "a null selector selects nothing"
    assert selector_from_object({}).matches({"app": "x"}), "an empty selector selects everything"


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ml"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert parse_field_selector(PODS, "spec.nodeName=n1,status.phase!=Succeeded").matches(pod)
    assert not parse_field_selector(PODS, "metadata.namespace==batch").matches(pod)
    assert parse_field_selector(NODES, "spec.unschedulable=false").matches({"spec": {}})
    with pytest.raises(ApiError) as err:
        parse_field_selector(PODS, "spec.bogus=1")
    assert err.value.code == 400
    assert err.value.message == "field label not supported: spec.bogus"
