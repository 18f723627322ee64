"""PodDisruptionBudget specs the API server refuses, with its 422 messages.

Upstream: ``pkg/apis/policy/validation/validation.go`` (``ValidatePodDisruptionBudgetSpec``:
minAvailable and maxUnavailable not both, each a non-negative integer or a percentage of at most
100%, the selector, the unhealthyPodEvictionPolicy), ``pkg/apis/apps/validation/validation.go``
(``ValidatePositiveIntOrPercent``, ``IsNotMoreThan100Percent``),
``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go``
(``ValidateLabelSelector``, ``ValidateLabelSelectorRequirement``) and
``staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go`` (an IntOrString is printed
with its ``String()``).
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuheal_sim.simulator import SimulatedCluster

from .conformance import MERGE, call

PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
PERCENT = (
    "a valid percent string must be a numeric string followed by an ending '%' "
    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
)


def pdb(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"matchLabels": {"app": "x"}})
    return {"metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "causes"),
    [
        ({"minAvailable": -1}, [("spec.minAvailable", "Invalid value: -1: must be greater than or equal to 0")]),
        ({"maxUnavailable": "150%"}, [("spec.maxUnavailable", "Invalid value: 150%: must not be greater than 100%")]),
        ({"minAvailable": "half"}, [("spec.minAvailable", f"Invalid value: half: {PERCENT}")]),
        ({"maxUnavailable": "5"}, [("spec.maxUnavailable", f"Invalid value: 5: {PERCENT}")]),
        (
            {"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"},
            [
                (
                    "spec.unhealthyPodEvictionPolicy",
                    'Unsupported value: "Never": supported values: "AlwaysAllow", "IfHealthyBudget"',
                )
            ],
        ),
        (
            {
                "minAvailable": 1,
                "selector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In"},
                        {"key": "app", "operator": "Exists", "values": ["x"]},
                        {"key": "app", "operator": "Near", "values": ["x"]},
                    ]
                },
            },
            [
                (
                    "spec.selector.matchExpressions[0].values",
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                ("spec.selector.matchExpressions[2].operator", 'Invalid value: "Near": not a valid selector operator'),
            ],
        ),
    ],
)
async def test_invalid_budget_specs_are_422(
    cluster: SimulatedCluster, spec: dict[str, Any], causes: list[tuple[str, str]]
) -> None:
    reply = await call(cluster, "POST", PDBS, pdb("bad", **spec))
    assert reply.status == 422, reply.body
    assert reply.body["reason"] == "Invalid"
    assert [(c["field"], c["message"]) for c in reply.body["details"]["causes"]] == causes
    joined = ", ".join(f"{f}: {m}" for f, m in causes)
    assert reply.body["message"] == 'PodDisruptionBudget.policy "bad" is invalid: ' + (
        f"[{joined}]" if len(causes) > 1 else joined
    )


async def test_valid_budgets_pass_and_an_update_is_validated_too(cluster: SimulatedCluster) -> None:
    for name, spec in (("zero", {"maxUnavailable": 0}), ("all", {"minAvailable": "100%"})):
        reply = await call(cluster, "POST", PDBS, pdb(name, **spec))
        assert reply.status == 201, reply.body
    reply = await call(cluster, "PATCH", f"{PDBS}/zero", {"spec": {"maxUnavailable": "101%"}}, content_type=MERGE)
    assert reply.status == 422, reply.body
    assert reply.body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 101%: must not be greater than 100%",
            "field": "spec.maxUnavailable",
        }
    ]
