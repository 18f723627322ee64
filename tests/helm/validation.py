"""Every manifest the chart renders, validated strictly: Kubernetes' own kinds against the schemas of
kubernetes-validate (strict: no unknown field), the Prometheus operator's kinds against their CRDs'
OpenAPI v3 schemas (tests/helm/schemas/, copied from upstream, see the README there).

The API server prunes a custom object's undeclared fields silently rather than refusing them, so a
mistyped field would install fine and do nothing. These checks refuse it: every object schema here is
closed (no field it does not declare) unless the CRD keeps unknown fields on purpose
(x-kubernetes-preserve-unknown-fields), which is stricter than the server.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]

from tests.chart import KUBE_VERSION

SCHEMAS = Path(__file__).parent / "schemas"
OPERATOR_API_VERSION = "monitoring.coreos.com/v1"
OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")

Schema = dict[str, Any]


def crd_schema(kind: str) -> Schema:
    """The CRD's openAPIV3Schema as upstream publishes it."""
    schema: Schema = json.loads((SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text())
    return schema


def python_pattern(pattern: str) -> str:
    """A CRD's pattern (Go's RE2) for Python's re, which takes flags such as (?i) only at the start."""
    flags = re.match(r"\^(\(\?[a-z]+\))", pattern)
    return f"{flags.group(1)}^{pattern[flags.end() :]}" if flags else pattern


def closed(schema: Schema) -> Schema:
    """The schema with every object refusing the fields it does not declare (the server would prune them),
    its patterns in Python's dialect."""
    node = dict(schema)
    if "pattern" in node:
        node["pattern"] = python_pattern(node["pattern"])
    if "properties" in node:
        node["properties"] = {name: closed(sub) for name, sub in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = closed(node["additionalProperties"])
    if "items" in node:
        node["items"] = closed(node["items"])
    # Structural schemas declare every field outside anyOf/allOf/oneOf, so those are left as they are.
    open_on_purpose = node.get("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "additionalProperties" not in node and not open_on_purpose:
        node["additionalProperties"] = False
    return node


@functools.cache
def _operator_validator(kind: str) -> jsonschema.Draft4Validator:
    # OpenAPI 3.0's schema objects are draft 4's keywords (exclusiveMinimum a boolean, and so on).
    schema = closed(crd_schema(kind))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def validate_strictly(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError for any field of `doc` its kind's schema refuses or does not declare."""
    if doc["kind"] not in OPERATOR_KINDS:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        return
    if doc["apiVersion"] != OPERATOR_API_VERSION:
        raise jsonschema.ValidationError(f"{doc['kind']} is {OPERATOR_API_VERSION}, not {doc['apiVersion']}")
    # A CRD's schema says only that metadata is an object: the server checks it as every object's
    # ObjectMeta, which kubernetes-validate's strict schemas hold (a ConfigMap's is the same).
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, KUBE_VERSION, strict=True
    )
    _operator_validator(doc["kind"]).validate({**doc, "metadata": {}})
