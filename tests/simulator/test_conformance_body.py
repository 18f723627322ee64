"""Request bodies the API server refuses before decoding them into an object.

Upstream: ``staging/src/k8s.io/apiserver/pkg/server/config.go`` (``MaxRequestBodyBytes`` =
3 MiB; ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go`` ``limitedReadBody`` answers a
bigger body 413 ``RequestEntityTooLarge``, ``Request entity too large: limit is 3145728``), and the
JSON decoder ``sigs.k8s.io/json`` (a fork of Go's ``encoding/json``, whose ``scanner.go`` refuses
nesting deeper than ``maxNestingDepth`` = 10000: ``invalid character '[' exceeded max depth``).
"""

from __future__ import annotations

import json

import pytest

from gpuheal_sim.simulator import SimulatedCluster

from .conformance import MERGE, call


def nested(depth: int, bracket: str = "[") -> str:
    """``depth`` levels of arrays, or of objects."""
    if bracket == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("bracket", ["[", "{"])
@pytest.mark.parametrize("depth", [10001, 5000, 101])
async def test_a_too_deeply_nested_body_is_400_not_500(cluster: SimulatedCluster, depth: int, bracket: str) -> None:
    """Deeper than Go's 10000 levels the API server refuses the body; the simulator refuses from
    101 levels (stricter, with the same error) rather than overflowing its recursive decoding."""
    raw = '{"metadata":{"annotations":{"x":"y"}},"spec":{"extra":' + nested(depth - 2, bracket) + "}}"
    for method, path, content_type in (
        ("PATCH", "/api/v1/nodes/gpu-node-000", MERGE),
        ("POST", "/api/v1/namespaces/default/pods", "application/json"),
        ("PUT", "/api/v1/nodes/gpu-node-000", "application/json"),
    ):
        reply = await call(cluster, method, path, raw=raw, content_type=content_type)
        assert reply.status == 400, (method, reply.body)
        assert reply.body["reason"] == "BadRequest"
        assert reply.body["message"].endswith(f"invalid character '{bracket}' exceeded max depth"), reply.body


async def test_a_body_nested_within_the_bound_is_decoded(cluster: SimulatedCluster) -> None:
    raw = json.dumps({"metadata": {"annotations": {"x": "[[[[" * 50}}, "spec": {"extra": json.loads(nested(90))}})
    reply = await call(cluster, "PATCH", "/api/v1/nodes/gpu-node-000", raw=raw, content_type=MERGE)
    assert reply.status == 200, reply.body
    assert reply.body["metadata"]["annotations"]["x"] == "[[[[" * 50


LIMIT = 3 * 1024 * 1024


async def test_a_body_over_three_mebibytes_is_413(cluster: SimulatedCluster) -> None:
    patch = json.dumps({"metadata": {"annotations": {"example.com/size": "limit"}}})
    at_limit = patch + " " * (LIMIT - len(patch))
    reply = await call(cluster, "PATCH", "/api/v1/nodes/gpu-node-000", raw=at_limit, content_type=MERGE)
    assert reply.status == 200, reply.body
    for method, path, content_type in (
        ("PATCH", "/api/v1/nodes/gpu-node-000", MERGE),
        ("POST", "/api/v1/namespaces/default/pods", "application/json"),
        ("PUT", "/api/v1/nodes/gpu-node-000", "application/json"),
    ):
        reply = await call(cluster, method, path, raw=at_limit + " ", content_type=content_type)
        assert (reply.status, reply.body) == (
            413,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Request entity too large: limit is 3145728",
                "reason": "RequestEntityTooLarge",
                "code": 413,
            },
        ), method
