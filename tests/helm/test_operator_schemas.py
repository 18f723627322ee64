"""The strict validation of the Prometheus operator's kinds (tests/helm/validation.py): the chart's
ServiceMonitor and PrometheusRule pass their upstream CRDs' schemas, and a broken one is caught."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.chart import render
from tests.helm.test_chart import SCENARIOS, chart
from tests.helm.validation import OPERATOR_KINDS, SCHEMAS, crd_schema, validate_strictly

__all__ = ["chart"]  # test_chart's fixture

FieldPath = tuple[str | int, ...]


def rendered(chart: helm.Chart, kind: str) -> dict[str, Any]:
    [doc] = [d for d in render(chart, SCENARIOS["everything-on"]) if d["kind"] == kind]
    return doc


def parent(doc: dict[str, Any], path: FieldPath) -> Any:
    node: Any = doc
    for step in path[:-1]:
        node = node[step]
    return node


def test_the_schemas_are_upstreams_v1_crds_and_say_whence() -> None:
    for kind in OPERATOR_KINDS:
        schema = crd_schema(kind)
        assert "prometheus-operator/prometheus-operator at commit " in schema["$comment"]
        assert "Apache-2.0" in schema["$comment"]
        assert schema["properties"]["spec"]["type"] == "object"
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(
        f"{k.lower()}-monitoring-v1.json" for k in OPERATOR_KINDS
    )


@pytest.mark.parametrize("kind", OPERATOR_KINDS)
def test_the_charts_operator_objects_pass_their_crds(chart: helm.Chart, kind: str) -> None:
    validate_strictly(rendered(chart, kind))


@pytest.mark.parametrize(
    ("kind", "path", "value", "refusal"),
    [
        # Wrong types and values, which the API server refuses too.
        ("ServiceMonitor", ("spec", "endpoints", 0, "port"), 9465, "is not of type 'string'"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "30 seconds", "does not match"),
        ("ServiceMonitor", ("spec", "namespaceSelector", "matchNames"), "gpuheal-system", "is not of type 'array'"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "for"), 5, "is not of type 'string'"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "labels", "severity"), 1, "is not of type 'string'"),
        ("PrometheusRule", ("spec", "groups", 0, "partial_response_strategy"), "never", "does not match"),
        ("PrometheusRule", ("apiVersion",), "monitoring.coreos.com/v1beta1", "not monitoring.coreos.com/v1beta1"),
        # Mistyped fields, which the API server would prune silently: refused here.
        ("ServiceMonitor", ("spec", "selectr"), {}, "'selectr' was unexpected"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "annotation"), {}, "'annotation' was unexpected"),
        ("PrometheusRule", ("metadata", "lables"), {"a": "b"}, "'lables' was unexpected"),
    ],
)
def test_a_broken_operator_object_is_refused(
    chart: helm.Chart, kind: str, path: FieldPath, value: object, refusal: str
) -> None:
    doc = rendered(chart, kind)
    parent(doc, path)[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=refusal):
        validate_strictly(doc)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("ServiceMonitor", ("spec", "selector")), ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "expr"))],
)
def test_an_operator_object_missing_a_required_field_is_refused(chart: helm.Chart, kind: str, path: FieldPath) -> None:
    doc = rendered(chart, kind)
    del parent(doc, path)[path[-1]]
    with pytest.raises(jsonschema.ValidationError, match=f"'{path[-1]}' is a required property"):
        validate_strictly(doc)


def test_a_field_upstream_leaves_to_the_servers_pruning_is_refused_here(chart: helm.Chart) -> None:
    doc = rendered(chart, "ServiceMonitor")
    doc["spec"]["endpoints"][0]["intervall"] = "30s"
    # The CRD's own schema lets it through (the server would drop it, and scrape at the default).
    jsonschema.Draft4Validator(crd_schema("ServiceMonitor")).validate({**doc, "metadata": {}})
    with pytest.raises(jsonschema.ValidationError):
        validate_strictly(doc)


def test_go_pattern_flags_keep_their_meaning(chart: helm.Chart) -> None:
    # The CRD's ^(?i)(abort|warn)?$ is RE2's: case-insensitive, placed where Python's re refuses it.
    doc = rendered(chart, "PrometheusRule")
    doc["spec"]["groups"][0]["partial_response_strategy"] = "Abort"
    validate_strictly(doc)
