"""The chart's fault injector: off by default; when on, a privileged agent on each GPU node writing
/dev/kmsg, a central API allowed to list pods in its namespace only, and a token Secret they share."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import pytest

from gpuheal.address import EVERY_ADDRESS, parse_listen_address
from gpuheal.commands.injector import injector as injector_command
from tests.chart import CHART_DIR, KUBE_VERSION, NAMESPACE, RELEASE, render
from tests.helm.test_chart import chart, container, follows, mounts_by_name, one, volumes_by_name
from tests.helm.validation import validate_strictly

__all__ = ["chart"]  # the module's chart fixture, shared with test_chart

ON: dict[str, Any] = {"injector": {"enabled": True}}
COMPONENTS = {"injector", "injector-agent", "injector-api"}
TOKEN_SECRET = f"{RELEASE}-gpuheal-injector-token"


def injector_docs(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        d for d in render(chart, values) if d["metadata"]["labels"].get("app.kubernetes.io/component") in COMPONENTS
    ]


def parses(command: str, args: list[str]) -> dict[str, Any]:
    """The parameters `gpuheal injector <command>` takes from `args` (a bad flag fails the test)."""
    assert args[:2] == ["injector", command]
    context = injector_command.commands[command].make_context(command, args[2:])
    return dict(context.params)


def test_the_injector_is_off_by_default(chart: helm.Chart) -> None:
    assert injector_docs(chart, {}) == []


def test_every_injector_manifest_is_valid_kubernetes_and_lints_clean(chart: helm.Chart) -> None:
    chart.validate_schema(ON)
    docs = injector_docs(chart, ON)
    assert sorted(d["kind"] for d in docs) == sorted(
        ["DaemonSet", "Deployment", "Service", "ServiceAccount", "ServiceAccount", "Role", "RoleBinding", "Secret"]
    )
    for doc in docs:
        validate_strictly(doc)
    report = helm.lint(CHART_DIR, ON, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []


def test_the_agent_is_privileged_writes_the_hosts_kmsg_and_reads_the_driver_through_its_own_proc(
    chart: helm.Chart,
) -> None:
    daemonset = one(render(chart, ON), "DaemonSet", "injector-agent")
    pod, c = daemonset["spec"]["template"]["spec"], container(daemonset)

    assert c["securityContext"]["privileged"] is True
    # No host namespaces: it writes the device itself, never through nsenter or a shell.
    assert not {"hostPID", "hostNetwork", "hostIPC"} & pod.keys()
    assert pod["automountServiceAccountToken"] is False
    assert c["command"] == ["gpuheal"]
    params = parses("agent", c["args"])
    volumes, mounts = volumes_by_name(daemonset), mounts_by_name(daemonset)
    assert volumes["kmsg"]["hostPath"] == {"path": "/dev/kmsg", "type": "CharDevice"}
    assert str(params["kmsg"]) == mounts["kmsg"]["mountPath"]
    # The driver's procfs entries are not namespaced: the privileged container's own /proc shows
    # them, and a driver reload is seen there, where a hostPath mount of them would go stale.
    assert str(params["gpus_root"]) == "/proc/driver/nvidia/gpus"
    assert set(volumes) == {"kmsg", "token"}
    assert not [mount for mount in mounts.values() if mount["mountPath"].startswith("/proc")]
    assert parse_listen_address(params["address"]) == (EVERY_ADDRESS, 8083)
    assert c["ports"] == [{"name": "http", "containerPort": 8083, "protocol": "TCP"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_the_api_may_only_list_pods_in_its_namespace(chart: helm.Chart) -> None:
    docs = render(chart, ON)
    role, binding = one(docs, "Role", "injector-api"), one(docs, "RoleBinding", "injector-api")
    account = one(docs, "ServiceAccount", "injector-api")
    deployment = one(docs, "Deployment", "injector-api")

    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert not [d for d in docs if d["kind"].startswith("Cluster") and "injector" in d["metadata"]["name"]]


def test_the_api_finds_the_agents_pods_by_their_labels_and_port(chart: helm.Chart) -> None:
    docs = render(chart, ON)
    api, agent = one(docs, "Deployment", "injector-api"), one(docs, "DaemonSet", "injector-agent")
    params = parses("api", container(api)["args"])

    assert params["agent_namespace"] == agent["metadata"]["namespace"]
    labels = agent["spec"]["template"]["metadata"]["labels"]
    wanted = dict(term.split("=") for term in params["agent_selector"].split(","))
    assert wanted.items() <= labels.items()
    assert wanted["app.kubernetes.io/instance"] == RELEASE, "another release's agents are not this API's"
    service = one(docs, "Service", "injector-api")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert parse_listen_address(params["address"]) == (EVERY_ADDRESS, 8080)


def test_the_seed_s_scripts_find_the_api_and_the_agents_by_their_names(chart: helm.Chart) -> None:
    # The seed's scripts call http://fault-injection-api.fault-injection-system:8080 and select the
    # agents with -l app=gpu-fault-injector-kernel: installed in that namespace with this value, they do.
    docs = render(chart, {"injector": {"enabled": True, "api": {"serviceName": "fault-injection-api"}}})

    service = one(docs, "Service", "injector-api")
    assert service["metadata"]["name"] == "fault-injection-api"
    assert service["spec"]["ports"][0]["port"] == 8080
    agent = one(docs, "DaemonSet", "injector-agent")
    assert agent["spec"]["template"]["metadata"]["labels"]["app"] == "gpu-fault-injector-kernel"
    assert "app" not in agent["spec"]["selector"]["matchLabels"], "a selector cannot change on upgrade"
    assert one(render(chart, ON), "Service", "injector-api")["metadata"]["name"] == f"{RELEASE}-gpuheal-injector-api"


@pytest.mark.parametrize(("kind", "component"), [("DaemonSet", "injector-agent"), ("Deployment", "injector-api")])
def test_both_are_probed_for_readiness_and_liveness_on_health(chart: helm.Chart, kind: str, component: str) -> None:
    c = container(one(render(chart, ON), kind, component))

    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe


def test_both_read_the_token_from_the_generated_secret(chart: helm.Chart) -> None:
    docs = render(chart, ON)
    [secret] = [d for d in docs if d["kind"] == "Secret"]

    assert secret["metadata"]["name"] == TOKEN_SECRET
    assert len(base64.b64decode(secret["data"]["token"])) == 48
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for workload in (one(docs, "DaemonSet", "injector-agent"), one(docs, "Deployment", "injector-api")):
        volume, mount = volumes_by_name(workload)["token"], mounts_by_name(workload)["token"]
        assert volume["secret"]["secretName"] == TOKEN_SECRET
        assert mount["readOnly"] is True
        token_file = follows(container(workload)["args"], "--token-file")
        assert token_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    # The API runs as a non-root user: the file's group lets it read the token.
    api = one(docs, "Deployment", "injector-api")
    assert api["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 65532
    assert volumes_by_name(api)["token"]["secret"]["defaultMode"] & 0o040


def test_an_existing_secret_replaces_the_generated_one(chart: helm.Chart) -> None:
    values = {"injector": {"enabled": True, "token": {"existingSecret": "my-token", "key": "injector"}}}
    docs = render(chart, values)

    assert all(d["kind"] != "Secret" for d in docs)
    for workload in (one(docs, "DaemonSet", "injector-agent"), one(docs, "Deployment", "injector-api")):
        assert volumes_by_name(workload)["token"]["secret"]["secretName"] == "my-token"
        assert volumes_by_name(workload)["token"]["secret"]["items"] == [{"key": "injector", "path": "token"}]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"injector": {"enabled": "yes"}}, "enabled"),
        ({"injector": {"agent": {"port": "8083"}}}, "port"),
        ({"injector": {"api": {"port": 0}}}, "port"),
        ({"injector": {"api": {"serviceName": "Fault_Injection"}}}, "serviceName"),
        ({"injector": {"token": {"existingSecret": "Not_A_Name"}}}, "existingSecret"),
        ({"injector": {"privileged": False}}, "privileged"),
    ],
)
def test_bad_injector_values_fail_naming_the_field(chart: helm.Chart, values: dict[str, Any], field: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=field):
        chart.validate_schema(values)
