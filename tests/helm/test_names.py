"""Resource names the API server takes however long the release's name, and distinct from each other.

The rules are Kubernetes' (k8s.io/apimachinery/pkg/util/validation/validation.go): IsDNS1123Label,
`[a-z0-9]([-a-z0-9]*[a-z0-9])?` of at most 63 characters, and for a Service's name IsDNS1035Label,
`[a-z]([-a-z0-9]*[a-z0-9])?`, also of at most 63. A Job's name is, further, its pods' `job-name`
label's value (at most 63); the chart keeps every name within a DNS label.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from tests.chart import render
from tests.helm.test_chart import SCENARIOS, chart

__all__ = ["chart"]  # test_chart's fixture

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_MAX = 63
LONGEST = "gpuheal-" + "n" * (LABEL_MAX - len("gpuheal-"))  # as long as fullnameOverride may be


def names_by_kind(values: dict[str, Any], chart: helm.Chart) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in render(chart, {**SCENARIOS["everything-on"], **values}):
        found.setdefault(doc["kind"], []).append(doc["metadata"]["name"])
    return found


@pytest.mark.parametrize(
    "values",
    [
        {"fullnameOverride": LONGEST},
        {"fullnameOverride": "a" * 33 + "-" + "b" * 29},  # a cut that lands on a hyphen
        {"nameOverride": "n" * 63},
        {},
    ],
)
def test_every_name_is_a_dns_label_the_api_server_takes(chart: helm.Chart, values: dict[str, Any]) -> None:
    for kind, names in names_by_kind(values, chart).items():
        rule = DNS1035_LABEL if kind == "Service" else DNS1123_LABEL
        for name in names:
            assert len(name) <= LABEL_MAX, f"{kind} {name} is {len(name)} characters"
            assert rule.fullmatch(name), f"{kind} {name} is not a {rule.pattern} label"
        assert len(set(names)) == len(names), f"two {kind}s share a name: {sorted(names)}"


def test_long_names_sharing_a_beginning_stay_apart(chart: helm.Chart) -> None:
    other = LONGEST[:-1] + "x"
    first, second = (
        names_by_kind({"fullnameOverride": LONGEST}, chart),
        names_by_kind({"fullnameOverride": other}, chart),
    )
    assert not set(first["Job"]) & set(second["Job"])
    assert not set(first["ClusterRole"]) & set(second["ClusterRole"])


def test_short_names_are_kept_whole(chart: helm.Chart) -> None:
    names = names_by_kind({"fullnameOverride": "gpuheal-prod"}, chart)
    assert "gpuheal-prod-search-attributes" in names["Job"]
