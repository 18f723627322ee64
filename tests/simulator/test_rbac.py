"""Authentication and RBAC in the simulated API server, checked against kube-apiserver's rules.

Upstream: ``plugin/pkg/auth/authorizer/rbac/rbac.go`` (``RuleAllows``) and its ``rbac_test.go``,
``pkg/apis/rbac/v1/evaluation_helpers.go`` (verb, group, resource, subresource, resourceName and
nonResourceURL matching), ``pkg/registry/rbac/validation/rule.go`` (bindings, subjects, resolution
errors), ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`` and its test (the
request's verb and attributes), ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go``
(``forbiddenMessage``) with ``staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`` (``NewForbidden``),
``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`` (discovery for authenticated users) and
``pkg/serviceaccount/claims.go`` (what a bound service-account token carries, and when it stops working).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuheal_sim.simulator import Access, SimulatedCluster, service_account_username
from gpuheal_sim.simulator.access import forbidden
from gpuheal_sim.simulator.auth import UserInfo
from gpuheal_sim.simulator.rbac import Authorizer
from gpuheal_sim.simulator.requestinfo import RequestInfo, request_info
from tests.simulator.conftest import fast_config, trusting

NS = "team"
ACCOUNTS = ("reader", "status-writer", "named", "ns-admin", "deleter", "aggregated", "dangling", "plain")


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, str]], ns: str = "") -> str:
    meta = f"  name: {name}\n" + (f"  namespace: {ns}\n" if ns else "")
    lines = "".join(f"  - {json.dumps(s)}\n" for s in subjects)
    return (
        f"apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n{meta}"
        f"roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {role_kind}, name: {role}}}\nsubjects:\n{lines}"
    )


def _sa(name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": NS}


MANIFESTS = "---\n".join(
    [
        *(f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {a}, namespace: {NS}}}\n" for a in ACCOUNTS),
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules:
  - {apiGroups: [""], resources: [nodes], verbs: [get, list]}
""",
        _binding("ClusterRoleBinding", "reader", "ClusterRole", "node-reader", [_sa("reader")]),
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: status-writer}
rules:
  - {apiGroups: [""], resources: ["*/status"], verbs: [patch]}
""",
        _binding("ClusterRoleBinding", "status-writer", "ClusterRole", "status-writer", [_sa("status-writer")]),
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: one-node}
rules:
  - {apiGroups: [""], resources: [nodes], resourceNames: [gpu-node-000], verbs: [get, list, watch]}
""",
        _binding("ClusterRoleBinding", "named", "ClusterRole", "one-node", [_sa("named")]),
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-everything}
rules:
  - {apiGroups: [""], resources: [pods], verbs: ["*"]}
""",
        # A RoleBinding's ServiceAccount subject without a namespace is in the binding's namespace.
        _binding(
            "RoleBinding",
            "ns-admin",
            "ClusterRole",
            "pod-everything",
            [{"kind": "ServiceAccount", "name": "ns-admin"}],
            NS,
        ),
        f"""apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-deleter, namespace: {NS}}}
rules:
  - {{apiGroups: [""], resources: [pods], verbs: [delete]}}
""",
        _binding("RoleBinding", "deleter", "Role", "pod-deleter", [_sa("deleter")], NS),
        f"""apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: event-writer, namespace: {NS}}}
rules:
  - {{apiGroups: [""], resources: [events], verbs: [create]}}
""",
        _binding(
            "RoleBinding",
            "every-account-here",
            "Role",
            "event-writer",
            [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"system:serviceaccounts:{NS}"}],
            NS,
        ),
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: budget-reader}
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: {example.com/aggregate-to-budget-reader: "true"}
rules: []
""",
        """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pdb-get
  labels: {example.com/aggregate-to-budget-reader: "true"}
rules:
  - {apiGroups: [policy], resources: [poddisruptionbudgets], verbs: [get]}
""",
        _binding("ClusterRoleBinding", "aggregated", "ClusterRole", "budget-reader", [_sa("aggregated")]),
        _binding("ClusterRoleBinding", "dangling", "ClusterRole", "missing", [_sa("dangling")]),
    ]
)


@pytest.fixture
async def rbac_cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    config = fast_config(nodes=2, workloads=False, access_manifests=MANIFESTS)
    async with SimulatedCluster(config, state_dir=tmp_path) as running:
        yield running


class Caller:
    def __init__(self, cluster: SimulatedCluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.tokens = {a: cluster.service_account_token(NS, a) for a in ACCOUNTS}

    async def __call__(
        self, who: str | None, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        if who == "admin":
            headers["Authorization"] = f"Bearer {self.cluster.token}"
        elif who is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        data = json.dumps(body) if body is not None else None
        async with self.session.request(method, self.cluster.url + path, headers=headers, data=data) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def call(rbac_cluster: SimulatedCluster) -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(rbac_cluster))) as session:
        yield Caller(rbac_cluster, session)


def user(account: str) -> str:
    return service_account_username(NS, account)


async def test_a_denied_request_gets_upstreams_403_body(call: Caller) -> None:
    """``forbiddenMessage`` wrapped by ``NewForbidden``: resource and name, the user, the verb, the
    combined resource/subresource, the API group and the scope; reason ``Forbidden``, details."""
    status, body = await call(
        "reader", "PATCH", "/api/v1/nodes/gpu-node-001/status", {"status": {}}, "application/merge-patch+json"
    )
    assert status == 403
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'nodes "gpu-node-001" is forbidden: User "{user("reader")}" cannot patch resource '
        '"nodes/status" in API group "" at the cluster scope',
        "reason": "Forbidden",
        "details": {"name": "gpu-node-001", "kind": "nodes"},
        "code": 403,
    }
    status, body = await call("reader", "GET", "/apis/policy/v1/namespaces/team/poddisruptionbudgets/budget")
    assert status == 403
    assert body["message"] == (
        f'poddisruptionbudgets.policy "budget" is forbidden: User "{user("reader")}" cannot get resource '
        '"poddisruptionbudgets" in API group "policy" in the namespace "team"'
    )
    assert body["details"] == {"name": "budget", "group": "policy", "kind": "poddisruptionbudgets"}
    status, body = await call("reader", "GET", "/api/v1/namespaces/team/pods")
    assert (status, body["message"], body["details"]) == (
        403,
        f'pods is forbidden: User "{user("reader")}" cannot list resource "pods" in API group "" in the namespace "team"',
        {"kind": "pods"},
    )


def test_a_denied_non_resource_request_names_the_path() -> None:
    """``forbiddenMessage`` for a non-resource request, and ``NewForbidden`` with an empty resource."""
    who = UserInfo("system:serviceaccount:team:plain", groups=("system:authenticated",))
    info = request_info("GET", "/metrics", {})
    decision = Authorizer().authorize(who, info)
    assert not decision.allowed
    assert forbidden(who, info, decision.reason).status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'forbidden: User "system:serviceaccount:team:plain" cannot get path "/metrics"',
        "reason": "Forbidden",
        "details": {},
        "code": 403,
    }


@pytest.mark.parametrize(
    ("who", "method", "path", "status", "denied"),
    [
        # Verbs come from the method and the path (requestinfo.go): list and watch are not get.
        ("reader", "GET", "/api/v1/nodes/gpu-node-000", 200, None),
        ("reader", "GET", "/api/v1/nodes", 200, None),
        ("reader", "GET", "/api/v1/nodes?watch=true", 403, 'cannot watch resource "nodes"'),
        ("reader", "GET", "/api/v1/nodes?watch=false", 200, None),
        # A rule on "nodes" does not reach "nodes/status"; "*/status" does (ResourceMatches).
        ("reader", "PATCH", "/api/v1/nodes/gpu-node-000/status", 403, 'cannot patch resource "nodes/status"'),
        ("status-writer", "PATCH", "/api/v1/nodes/gpu-node-000/status", 200, None),
        ("status-writer", "PATCH", "/api/v1/nodes/gpu-node-000", 403, 'cannot patch resource "nodes"'),
        # resourceNames: a get of that name, or a list/watch selecting it by metadata.name.
        ("named", "GET", "/api/v1/nodes/gpu-node-000", 200, None),
        ("named", "GET", "/api/v1/nodes/gpu-node-001", 403, 'nodes "gpu-node-001" is forbidden'),
        ("named", "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dgpu-node-000", 200, None),
        ("named", "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dgpu-node-001", 403, "cannot list"),
        (
            "named",
            "GET",
            "/api/v1/nodes",
            403,
            'nodes is forbidden: User "system:serviceaccount:team:named" cannot list',
        ),
        # A RoleBinding grants in its namespace only, even when it binds a ClusterRole; "*" is every verb.
        ("ns-admin", "GET", "/api/v1/namespaces/team/pods", 200, None),
        ("ns-admin", "DELETE", "/api/v1/namespaces/team/pods", 200, None),
        ("ns-admin", "GET", "/api/v1/namespaces/default/pods", 403, 'in the namespace "default"'),
        ("ns-admin", "GET", "/api/v1/pods", 403, "at the cluster scope"),
        # DELETE on a collection is deletecollection, which "delete" does not grant.
        ("deleter", "DELETE", "/api/v1/namespaces/team/pods", 403, 'cannot deletecollection resource "pods"'),
        # Group subjects: every service account of the namespace.
        ("plain", "POST", "/api/v1/namespaces/team/events", 201, None),
        ("plain", "POST", "/api/v1/namespaces/default/events", 403, 'cannot create resource "events"'),
        # An aggregated ClusterRole carries the rules of the roles its selectors pick.
        ("aggregated", "GET", "/apis/policy/v1/namespaces/team/poddisruptionbudgets/none", 404, None),
        ("aggregated", "GET", "/apis/policy/v1/namespaces/team/poddisruptionbudgets", 403, "cannot list"),
        # A binding to a role that does not exist reports the resolution error.
        (
            "dangling",
            "GET",
            "/api/v1/nodes",
            403,
            'at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found',
        ),
        # Authorization comes before routing: a resource nobody serves is 403 to the unprivileged ...
        (
            "plain",
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            403,
            'in API group "rbac.authorization.k8s.io"',
        ),
        # ... and 404 to the admin (system:masters may do anything).
        ("admin", "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", 404, None),
        ("admin", "DELETE", "/api/v1/namespaces/team/events", 200, None),
        # Discovery, /version and the health checks: every authenticated user (system:discovery).
        ("plain", "GET", "/api", 200, None),
        ("plain", "GET", "/apis/policy/v1", 200, None),
        ("plain", "GET", "/version", 200, None),
        ("plain", "GET", "/readyz", 200, None),
    ],
)
async def test_rbac_allows_exactly_what_the_rules_say(
    call: Caller, who: str, method: str, path: str, status: int, denied: str | None
) -> None:
    body: Any = None
    content_type = "application/json"
    if method == "PATCH":
        body, content_type = {"metadata": {}}, "application/merge-patch+json"
    elif method == "POST":
        namespace = path.split("/")[4]
        body = {
            "metadata": {"name": f"e-{abs(hash(path)) % 10_000}"},
            # About an object of its own namespace: an Event about a Node may live only in `default`
            # (pkg/apis/core/validation/events.go).
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
            "reason": "Test",
            "message": "rbac",
        }
    if "watch=true" in path:
        path += "&timeoutSeconds=1"
    got, answer = await call(who, method, path, body, content_type)
    assert got == status, answer
    if denied is not None:
        assert answer["reason"] == "Forbidden"
        assert denied in answer["message"], answer["message"]


async def test_tokens_nobody_issued_are_401_and_anonymous_requests_reach_only_health_and_version(
    call: Caller,
) -> None:
    """An unknown bearer token is refused whatever the path; without credentials only the
    endpoints anonymous users may read (system:public-info-viewer) answer."""
    for path in ("/api/v1/nodes", "/api", "/version", "/healthz"):
        status, body = await call("not-a-token", "GET", path)
        assert (status, body["reason"]) == (401, "Unauthorized"), path
    assert (await call(None, "GET", "/api/v1/nodes"))[0] == 401
    assert (await call(None, "GET", "/version"))[0] == 200
    assert (await call(None, "GET", "/livez"))[0] == 200


async def test_each_authorized_request_is_recorded_per_user(call: Caller, rbac_cluster: SimulatedCluster) -> None:
    """What a component used, as the authorizer saw it: user, verb, group, resource/subresource."""
    await call(
        "status-writer", "PATCH", "/api/v1/nodes/gpu-node-000/status", {"status": {}}, "application/merge-patch+json"
    )
    await call("status-writer", "PATCH", "/api/v1/nodes/gpu-node-000", {"metadata": {}}, "application/merge-patch+json")
    await call("status-writer", "GET", "/api")
    assert rbac_cluster.accesses(user("status-writer")) == {
        Access(user("status-writer"), "patch", "", "nodes/status"),
        Access(user("status-writer"), "get", "", "", "/api"),
    }
    [denial] = [d for d in rbac_cluster.denials() if d.user == user("status-writer")]
    assert denial.info.combined_resource == "nodes"


async def test_a_bound_token_carries_its_node_and_pod_and_dies_with_them(
    call: Caller, rbac_cluster: SimulatedCluster
) -> None:
    """claims.go: a token bound to a pod names the pod and its node (``authentication.kubernetes.io/
    pod-name``, ``pod-uid``, ``node-name``, ``node-uid``) and a ``credential-id``; it is invalid once
    the pod (or node) it is bound to is gone."""
    pod = {
        "metadata": {"name": "agent-x"},
        "spec": {
            "nodeName": "gpu-node-000",
            "serviceAccountName": "reader",
            "containers": [{"name": "c", "image": "i"}],
        },
    }
    assert (await call("admin", "POST", f"/api/v1/namespaces/{NS}/pods", pod))[0] == 201
    pod_uid = rbac_cluster.get_object("pods", "agent-x", NS)["metadata"]["uid"]  # type: ignore[index]
    node_uid = rbac_cluster.get_object("nodes", "gpu-node-000")["metadata"]["uid"]  # type: ignore[index]
    token = rbac_cluster.service_account_token(NS, "reader", pod="agent-x")
    who = rbac_cluster.simulation.access.authenticator.authenticate(f"Bearer {token}", "/api/v1/nodes")
    assert who.name == user("reader")
    assert who.groups == ("system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated")
    assert who.uid == rbac_cluster.simulation.access.authenticator.service_accounts[(NS, "reader")]
    assert {k: v for k, v in who.extra.items() if k != "authentication.kubernetes.io/credential-id"} == {
        "authentication.kubernetes.io/node-name": ("gpu-node-000",),
        "authentication.kubernetes.io/node-uid": (node_uid,),
        "authentication.kubernetes.io/pod-name": ("agent-x",),
        "authentication.kubernetes.io/pod-uid": (pod_uid,),
    }
    assert who.extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    assert (await call(token, "GET", "/api/v1/nodes"))[0] == 200
    assert (await call("admin", "DELETE", f"/api/v1/namespaces/{NS}/pods/agent-x?gracePeriodSeconds=0"))[0] == 200
    assert (await call(token, "GET", "/api/v1/nodes"))[0] == 401

    node_token = rbac_cluster.service_account_token(NS, "reader", node="gpu-node-001")
    assert (await call(node_token, "GET", "/api/v1/nodes"))[0] == 200
    assert (await call("admin", "DELETE", "/api/v1/nodes/gpu-node-001"))[0] == 200
    assert (await call(node_token, "GET", "/api/v1/nodes"))[0] == 401
    with pytest.raises(KeyError, match="serviceaccounts"):
        rbac_cluster.service_account_token(NS, "nobody")


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "/api/v1/namespaces", RequestInfo(True, "/api/v1/namespaces", "list", "", "v1", "", "namespaces")),
        (
            "GET",
            "/api/v1/namespaces/other",
            RequestInfo(True, "/api/v1/namespaces/other", "get", "", "v1", "other", "namespaces", "", "other"),
        ),
        ("GET", "/api/v1/pods?watch=1", RequestInfo(True, "/api/v1/pods", "watch", "", "v1", "", "pods")),
        ("GET", "/api/v1/pods?watch=0", RequestInfo(True, "/api/v1/pods", "list", "", "v1", "", "pods")),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods",
            RequestInfo(True, "/api/v1/watch/namespaces/other/pods", "watch", "", "v1", "other", "pods"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/status",
            RequestInfo(
                True, "/api/v1/namespaces/other/status", "update", "", "v1", "other", "namespaces", "status", "other"
            ),
        ),
        ("DELETE", "/api/v1/nodes", RequestInfo(True, "/api/v1/nodes", "deletecollection", "", "v1", "", "nodes")),
        (
            "POST",
            "/api/v1/namespaces/ml/pods/p/eviction",
            RequestInfo(
                True, "/api/v1/namespaces/ml/pods/p/eviction", "create", "", "v1", "ml", "pods", "eviction", "p"
            ),
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/ml/deployments?fieldSelector=metadata.name%3Dweb&watch=true",
            RequestInfo(
                True, "/apis/apps/v1/namespaces/ml/deployments", "watch", "apps", "v1", "ml", "deployments", "", "web"
            ),
        ),
        ("GET", "/apis/policy/v1", RequestInfo(False, "/apis/policy/v1", "get")),
        ("GET", "/api", RequestInfo(False, "/api", "get")),
        ("HEAD", "/healthz", RequestInfo(False, "/healthz", "head")),
    ],
)
def test_request_attributes_follow_requestinfo(method: str, url: str, expected: RequestInfo) -> None:
    """Cases from requestinfo_test.go (TestGetAPIRequestInfo, TestGetNonAPIRequestInfo, TestSelectorParsing)."""
    path, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&")) if query else {}
    params = {k: v.replace("%3D", "=") for k, v in params.items()}
    assert request_info(method, path, params) == expected
