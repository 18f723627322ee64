"""ValidatingAdmissionPolicies in the simulated API server, checked against kube-apiserver's plugin.

Upstream: ``staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/validating/dispatcher.go`` (the
first denial wins; ``ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request:
<message>`` with the validation's reason and code, the message as the cause), ``validator.go``
(messageExpression, message, ``failed expression: <expr>``; ``failurePolicy`` on evaluation errors;
reason ``Invalid`` by default), ``.../policy/matching/matching.go`` and
``.../webhook/predicates/rules/rules.go`` (what a policy and a binding match),
``staging/src/k8s.io/apiserver/pkg/admission/errors.go`` (``NewForbidden``), and for the chart's own
policy ``test/e2e/auth/per_node_update.go`` with ``test/e2e/auth/e2edata/per_node_validatingadmissionpolicy*.yaml``
(a service account whose bound token names a node may write only that node).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuheal_sim.simulator import SimulatedCluster, service_account_username
from gpuheal_sim.simulator.simulation import Simulation
from tests.chart import access_manifests, service_account
from tests.simulator.conftest import fast_config, trusting

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
OWN, OTHER = "gpu-node-000", "gpu-node-001"


class Caller:
    def __init__(self, cluster: SimulatedCluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session

    async def __call__(
        self, token: str, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any, list[str]]:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
        data = json.dumps(body) if body is not None else None
        async with self.session.request(method, self.cluster.url + path, headers=headers, data=data) as response:
            return response.status, json.loads(await response.text()), response.headers.getall("Warning", [])


@pytest.fixture
async def chart_cluster(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    """A fleet enforcing the chart's RBAC and its agent policy."""
    config = fast_config(nodes=2, workloads=False, access_manifests=access_manifests())
    async with SimulatedCluster(config, state_dir=tmp_path) as running:
        yield running


@pytest.fixture
async def call(chart_cluster: SimulatedCluster) -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(chart_cluster))) as session:
        yield Caller(chart_cluster, session)


def condition(kind: str, status: str = "False", reason: str = "Test") -> dict[str, Any]:
    return {"status": {"conditions": [{"type": kind, "status": status, "reason": reason, "message": "m"}]}}


def conditions_of(cluster: SimulatedCluster, node: str) -> dict[str, dict[str, Any]]:
    obj = cluster.get_object("nodes", node)
    assert obj is not None
    return {c["type"]: c for c in obj["status"]["conditions"]}


POLICY = "gh-gpuheal-agent-own-node"
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "


async def test_an_agent_patching_another_nodes_status_is_refused_by_the_policy(
    call: Caller, chart_cluster: SimulatedCluster
) -> None:
    """RBAC lets every agent patch nodes/status; the policy refuses a node its token does not name."""
    agent = chart_cluster.service_account_token(*service_account("agent"), node=OWN)
    status, body, _ = await call(agent, "PATCH", f"/api/v1/nodes/{OTHER}/status", condition("GpuHealthy"), STRATEGIC)
    message = DENIED + f"this user running on node '{OWN}' may not modify node '{OTHER}'"
    assert status == 403
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'nodes "{OTHER}" is forbidden: {message}',
        "reason": "Forbidden",
        "details": {"name": OTHER, "kind": "nodes", "causes": [{"message": message}]},
        "code": 403,
    }
    assert conditions_of(chart_cluster, OTHER)["GpuHealthy"]["reason"] != "Test"


async def test_an_agent_sets_its_own_nodes_gpu_conditions_and_nothing_else(
    call: Caller, chart_cluster: SimulatedCluster
) -> None:
    agent = chart_cluster.service_account_token(*service_account("agent"), node=OWN)
    path = f"/api/v1/nodes/{OWN}/status"
    for owned in ("GpuHealthy", "GpuReset", "GpuCheck", "GpuDiagnostics"):
        status, body, _ = await call(agent, "PATCH", path, condition(owned), STRATEGIC)
        assert status == 200, body
        assert conditions_of(chart_cluster, OWN)[owned]["reason"] == "Test"

    refused = {
        "the kubelet's Ready": (
            condition("Ready", "True"),
            "may change only the GpuHealthy, GpuReset, GpuCheck and GpuDiagnostics conditions",
        ),
        "the boot ID": ({"status": {"nodeInfo": {"bootID": "forged"}}}, "may not change the node's status other"),
        "the capacity": ({"status": {"capacity": {"nvidia.com/gpu": "16"}}}, "may not change the node's status other"),
    }
    before = chart_cluster.get_object("nodes", OWN)
    for what, (patch, reason) in refused.items():
        status, body, _ = await call(agent, "PATCH", path, patch, STRATEGIC)
        assert (status, body["reason"]) == (403, "Forbidden"), what
        assert body["message"].startswith(f'nodes "{OWN}" is forbidden: {DENIED}this user {reason}'), body["message"]
    after = chart_cluster.get_object("nodes", OWN)
    assert before is not None and after is not None
    assert after["status"]["nodeInfo"] == before["status"]["nodeInfo"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # The main resource is not the agent's at all: RBAC refuses it before admission.
    status, body, _ = await call(agent, "PATCH", f"/api/v1/nodes/{OWN}", {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert status == 403
    assert 'cannot patch resource "nodes" in API group' in body["message"]


async def test_an_agent_may_not_change_its_nodes_labels_or_annotations_through_status(
    call: Caller, chart_cluster: SimulatedCluster
) -> None:
    """``nodes/status`` keeps metadata changes (``pkg/registry/core/node/strategy.go``,
    ``nodeStatusStrategy.PrepareForUpdate`` resets only the spec), so RBAC's ``nodes/status`` alone
    would let an agent relabel its node; the chart's policy refuses any metadata change."""
    agent = chart_cluster.service_account_token(*service_account("agent"), node=OWN)
    path = f"/api/v1/nodes/{OWN}/status"
    before = chart_cluster.get_object("nodes", OWN)
    assert before is not None
    for what, patch in {
        "a label": {"metadata": {"labels": {"nvidia.com/gpu.present": "false"}}},
        "an annotation": {"metadata": {"annotations": {"example.com/x": "y"}}},
        "a label with a GPU condition": {**condition("GpuHealthy"), "metadata": {"labels": {"x": "y"}}},
    }.items():
        status, body, _ = await call(agent, "PATCH", path, patch, STRATEGIC)
        assert (status, body["reason"]) == (403, "Forbidden"), what
        assert body["message"] == (
            f'nodes "{OWN}" is forbidden: {DENIED}this user may not change the node\'s metadata '
            "(labels, annotations, owners, finalizers)"
        ), what
    after = chart_cluster.get_object("nodes", OWN)
    assert after is not None
    assert after["metadata"] == before["metadata"]
    # The GpuHealthy-only patch passes.
    status, body, _ = await call(agent, "PATCH", path, condition("GpuHealthy"), STRATEGIC)
    assert status == 200, body
    assert conditions_of(chart_cluster, OWN)["GpuHealthy"]["reason"] == "Test"
    # The same label through nodes/status by the admin does persist: the policy is what stops the agent.
    status, _, _ = await call(chart_cluster.token, "PATCH", path, {"metadata": {"labels": {"x": "y"}}}, STRATEGIC)
    assert status == 200
    labelled = chart_cluster.get_object("nodes", OWN)
    assert labelled is not None and labelled["metadata"]["labels"]["x"] == "y"


EVENTS_POLICY = "gh-gpuheal-agent-own-node-events"
EVENTS_DENIED = f"ValidatingAdmissionPolicy '{EVENTS_POLICY}' with binding '{EVENTS_POLICY}' denied request: "


def agent_event(name: str, kind: str, target: str, namespace: str = "default", host: str = OWN) -> dict[str, Any]:
    """An Event as gpuheal/agents/publisher/kubernetes.py record_event writes it."""
    involved: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "name": target, "uid": target}
    if kind != "Node":
        involved["namespace"] = namespace
    return {
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": "XidError",
        "message": "m",
        "type": "Warning",
        "source": {"component": "gpuheal-agent", "host": host},
        "count": 1,
        "reportingComponent": "gpuheal-agent",
        "reportingInstance": host,
    }


async def test_an_agent_records_events_only_about_its_own_node(call: Caller, chart_cluster: SimulatedCluster) -> None:
    """The chart grants Event creation in ``default`` only (a Role) and its policy, as the node
    policy does for nodes (``test/e2e/auth/e2edata/per_node_validatingadmissionpolicy.yaml``),
    confines the agent's Events to the node its token names. Upstream's Event validation
    (``pkg/apis/core/validation/events.go``) accepts them all, RBAC
    (``plugin/pkg/auth/authorizer/rbac/rbac.go``) only checks the namespace."""
    agent = chart_cluster.service_account_token(*service_account("agent"), node=OWN)
    path = "/api/v1/namespaces/default/events"
    status, body, _ = await call(agent, "POST", path, agent_event("own", "Node", OWN))
    assert status == 201, body

    status, body, _ = await call(agent, "POST", path, agent_event("other", "Node", OTHER, host=OTHER))
    message = (
        EVENTS_DENIED + f"this user running on node '{OWN}' may record Events only about that node, not Node '{OTHER}'"
    )
    assert (status, body["reason"], body["message"]) == (403, "Forbidden", f'events "other" is forbidden: {message}')

    status, body, _ = await call(agent, "POST", path, agent_event("pod", "Pod", "p"))
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"].endswith("may record Events only about that node, not Pod 'p'"), body["message"]

    status, body, _ = await call(agent, "POST", path, agent_event("forged", "Node", OWN, host=OTHER))
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"].endswith("may record Events only as that node (source.host, reportingInstance)")

    # Elsewhere RBAC refuses it before admission: the Role is in `default` only.
    elsewhere = "/api/v1/namespaces/kube-system/events"
    status, body, _ = await call(agent, "POST", elsewhere, agent_event("pod", "Pod", "p", namespace="kube-system"))
    assert status == 403
    assert 'cannot create resource "events" in API group "" in the namespace "kube-system"' in body["message"]

    unbound = chart_cluster.service_account_token(*service_account("agent"))
    status, body, _ = await call(unbound, "POST", path, agent_event("unbound", "Node", OWN))
    assert status == 403
    assert 'this user must have a "authentication.kubernetes.io/node-name" claim' in body["message"]
    assert chart_cluster.get_object("events", "own", "default") is not None
    assert chart_cluster.get_object("events", "other", "default") is None


async def test_an_agent_token_without_a_node_is_refused_and_others_are_not_bound_by_the_policy(
    call: Caller, chart_cluster: SimulatedCluster
) -> None:
    """Like the e2e test's token request without a pod: no node-name claim, no node writes. The
    policy's matchConditions pick only the agent's account: the admin may still set Ready."""
    unbound = chart_cluster.service_account_token(*service_account("agent"))
    status, body, _ = await call(unbound, "PATCH", f"/api/v1/nodes/{OWN}/status", condition("GpuHealthy"), STRATEGIC)
    assert status == 403
    assert 'this user must have a "authentication.kubernetes.io/node-name" claim' in body["message"]
    status, _, _ = await call(
        chart_cluster.token, "PATCH", f"/api/v1/nodes/{OWN}/status", condition("Ready", "True"), STRATEGIC
    )
    assert status == 200
    worker = chart_cluster.service_account_token(*service_account("worker"))
    status, _, _ = await call(worker, "PATCH", f"/api/v1/nodes/{OWN}", {"spec": {"unschedulable": True}}, MERGE)
    assert status == 200
    assert service_account_username(*service_account("agent")).startswith("system:serviceaccount:gpuheal-system:")


EVENT_POLICIES = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-bad-events}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [events]}
  variables:
    - {name: reason, expression: "object.reason"}
  validations:
    - expression: "variables.reason != 'Bad'"
      messageExpression: "'reason ' + variables.reason + ' is not allowed'"
    - expression: "variables.reason != 'Bad'"
      message: a second denial, never reported
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-bad-events-in-default}
spec:
  policyName: no-bad-events
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: default}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: broken}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: ["*"], apiVersions: ["*"], operations: ["*"], resources: ["*"]}
  matchConditions:
    - {name: only-failing, expression: "has(object.reason) && object.reason == 'Failing'"}
  validations:
    - expression: "object.no.such.field == 1"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: broken}
spec: {policyName: broken, validationActions: [Deny]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: broken-but-ignored}
spec:
  failurePolicy: Ignore
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [events]}
  validations:
    - expression: "object.no.such.field == 1"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: broken-but-ignored}
spec: {policyName: broken-but-ignored, validationActions: [Deny]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: warn-only}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [events]}
  validations:
    - expression: "object.reason != 'Warned'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: warn-only}
spec: {policyName: warn-only, validationActions: [Warn]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: keep-events}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [events]}
  validations:
    - expression: "object == null && oldObject.reason != 'Keep'"
      message: events with reason Keep stay
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: keep-events}
spec: {policyName: keep-events, validationActions: [Deny]}
"""


@pytest.fixture
async def events_call(tmp_path: Path) -> AsyncIterator[tuple[Caller, SimulatedCluster]]:
    config = fast_config(nodes=1, workloads=False, access_manifests=EVENT_POLICIES)
    async with SimulatedCluster(config, state_dir=tmp_path) as cluster:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(cluster)))
        try:
            yield Caller(cluster, session), cluster
        finally:
            await session.close()


def event(name: str, reason: str, namespace: str = "default") -> dict[str, Any]:
    # An Event about a Node (cluster-scoped) may live only in `default`; elsewhere it is about a Pod
    # there (pkg/apis/core/validation/events.go, legacyValidateEvent).
    involved = {"kind": "Node", "name": "gpu-node-000"}
    if namespace != "default":
        involved = {"kind": "Pod", "name": "p", "namespace": namespace}
    return {
        "metadata": {"name": name},
        "involvedObject": involved,
        "reason": reason,
        "message": "admission",
    }


async def test_policy_evaluation_follows_the_validating_admission_plugin(
    events_call: tuple[Caller, SimulatedCluster],
) -> None:
    call, cluster = events_call
    admin = cluster.token
    create = "/api/v1/namespaces/{}/events"

    # The first failed validation is reported, with its messageExpression and the default reason Invalid.
    status, body, _ = await call(admin, "POST", create.format("default"), event("e1", "Bad"))
    message = "ValidatingAdmissionPolicy 'no-bad-events' with binding 'no-bad-events-in-default' denied request: reason Bad is not allowed"
    assert status == 422
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'events "e1" is forbidden: {message}',
        "reason": "Invalid",
        "details": {"name": "e1", "kind": "events", "causes": [{"message": message}]},
        "code": 422,
    }
    assert cluster.get_object("events", "e1", "default") is None

    # The binding's namespaceSelector leaves other namespaces alone.
    assert (await call(admin, "POST", create.format("kube-system"), event("e1", "Bad", "kube-system")))[0] == 201

    # An expression that fails to evaluate denies under failurePolicy Fail (reason Invalid) ...
    status, body, _ = await call(admin, "POST", create.format("default"), event("e2", "Failing"))
    assert status == 422
    assert body["message"].startswith(
        "events \"e2\" is forbidden: ValidatingAdmissionPolicy 'broken' with binding 'broken' denied request: "
        "expression 'object.no.such.field == 1' resulted in error: "
    )
    # ... and is ignored under Ignore (broken-but-ignored fails on every event).
    assert (await call(admin, "POST", create.format("default"), event("e3", "Fine")))[0] == 201

    # Warn: admitted, with the failure as a Warning header; no message given: the expression.
    status, _, warnings = await call(admin, "POST", create.format("default"), event("e4", "Warned"))
    assert status == 201
    assert warnings == [
        "299 - \"Validation failed for ValidatingAdmissionPolicy 'warn-only' with binding 'warn-only': "
        "failed expression: object.reason != 'Warned'\""
    ]

    # DELETE: object is null, oldObject the stored object.
    assert (await call(admin, "POST", create.format("default"), event("kept", "Keep")))[0] == 201
    status, body, _ = await call(admin, "DELETE", create.format("default") + "/kept")
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"].endswith("denied request: events with reason Keep stay")
    assert (await call(admin, "DELETE", create.format("default") + "/e3"))[0] == 200
    # A dry run is judged the same way.
    status, _, _ = await call(admin, "POST", create.format("default") + "?dryRun=All", event("e5", "Bad"))
    assert status == 422


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (
            "kind: ValidatingAdmissionPolicy\nmetadata: {name: p}\nspec:\n  matchConstraints: {resourceRules: [{apiGroups: ['*'], apiVersions: ['*'], operations: ['*'], resources: ['*']}]}\n  validations: [{expression: '1 +'}]",
            "compilation failed",
        ),
        (
            "kind: ValidatingAdmissionPolicy\nmetadata: {name: p}\nspec:\n  validations: [{expression: 'true'}]",
            "resourceRules is required",
        ),
        (
            "kind: ValidatingAdmissionPolicyBinding\nmetadata: {name: b}\nspec: {policyName: p, validationActions: [Deny, Warn]}",
            "validationActions",
        ),
        ("kind: ConfigMap\nmetadata: {name: c, namespace: default}", "loads only"),
    ],
)
def test_objects_the_api_server_would_reject_are_refused_at_load(manifest: str, error: str, tmp_path: Path) -> None:
    """Invalid policies and bindings are refused on creation, as API validation refuses them."""
    api_version = "apiVersion: v1\n" if "ConfigMap" in manifest else "apiVersion: admissionregistration.k8s.io/v1\n"
    with pytest.raises(ValueError, match=error):
        Simulation(fast_config(nodes=1, workloads=False, access_manifests=api_version + manifest))
