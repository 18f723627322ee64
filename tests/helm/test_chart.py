"""The Helm chart, rendered offline by Helm's own engine and checked against Kubernetes' schemas."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from gpuheal.domain.marks import QUARANTINE_TAINT_KEY

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "gpuheal"
KUBE_VERSION = "1.33.0"
RELEASE = "gh"
NAMESPACE = "gpuheal-system"

TLS_SECRET = "temporal-client-tls"
API_KEY_SECRET = "temporal-api-key"

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "kernel-log": {"agent": {"kernelLog": {"enabled": True}}},
    "fake-gpus": {"agent": {"fakeGpus": 4}},
    "secrets": {
        "temporal": {
            "tls": {"secretName": TLS_SECRET, "caKey": "ca.crt"},
            "apiKey": {"secretName": API_KEY_SECRET, "key": "token"},
        }
    },
}

Manifest = dict[str, Any]
Rule = tuple[str, str, str]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[Manifest]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[Manifest] = []
    for text in rendered.values():
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc is not None)
    return docs


def one(docs: list[Manifest], kind: str, component: str) -> Manifest:
    found = [
        d for d in docs if d["kind"] == kind and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"expected one {kind} for {component}, got {len(found)}"
    return found[0]


def container(workload: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(workload: Manifest) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(workload).get("env", [])}


def rules(role: Manifest) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def follows(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def tolerates(tolerations: list[dict[str, Any]], key: str, value: str, effect: str) -> bool:
    """Kubernetes' toleration matching for one taint."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == key:
                return True
        elif t.get("key") == key and t.get("value", "") == value:
            return True
    return False


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_is_valid_kubernetes(chart: helm.Chart, scenario: str) -> None:
    values = SCENARIOS[scenario]
    chart.validate_schema(values)
    docs = render(chart, values)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Deployment", "DaemonSet"] + ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] * 2)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gpuheal"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_strict_validation_rejects_unknown_fields(chart: helm.Chart) -> None:
    deployment = copy.deepcopy(one(render(chart, {}), "Deployment", "worker"))
    container(deployment)["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_chart_lints_clean() -> None:
    report = helm.lint(CHART_DIR, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_worker_cluster_role_is_least_privilege(chart: helm.Chart) -> None:
    docs = render(chart, {})
    role = one(docs, "ClusterRole", "worker")
    assert rules(role) == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "nodes", "patch"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "pods/eviction", "create"),
    }
    binding = one(docs, "ClusterRoleBinding", "worker")
    account = one(docs, "ServiceAccount", "worker")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    deployment = one(docs, "Deployment", "worker")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_agent_cluster_role_is_least_privilege(chart: helm.Chart) -> None:
    docs = render(chart, {})
    role = one(docs, "ClusterRole", "agent")
    assert rules(role) == {
        ("", "nodes", "get"),
        ("", "nodes/status", "patch"),
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
    }
    binding = one(docs, "ClusterRoleBinding", "agent")
    account = one(docs, "ServiceAccount", "agent")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    daemonset = one(docs, "DaemonSet", "agent")
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_worker_runs_locked_down_and_exposes_metrics(chart: helm.Chart) -> None:
    deployment = one(render(chart, {}), "Deployment", "worker")
    c = container(deployment)
    assert c["command"] == ["gpuheal"]
    assert c["args"][0] == "worker"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc or sc["privileged"] is False
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert follows(c["args"], "--metrics-address") == "0.0.0.0:9464"
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in c["ports"]
    assert c["resources"]["requests"]["memory"] == "256Mi"
    env = env_of(deployment)
    assert env["TEMPORAL_ADDRESS"]["value"] == "temporal-frontend.temporal.svc:7233"
    assert env["TEMPORAL_NAMESPACE"]["value"] == "default"


def test_worker_takes_temporal_settings_and_resources_from_values(chart: helm.Chart) -> None:
    values = {
        "temporal": {"address": "t.example:7233", "namespace": "gpuheal"},
        "worker": {"resources": {"limits": {"cpu": "2"}}, "metricsPort": 9100},
    }
    deployment = one(render(chart, values), "Deployment", "worker")
    env = env_of(deployment)
    assert env["TEMPORAL_ADDRESS"]["value"] == "t.example:7233"
    assert env["TEMPORAL_NAMESPACE"]["value"] == "gpuheal"
    c = container(deployment)
    assert c["resources"]["limits"]["cpu"] == "2"
    assert follows(c["args"], "--metrics-address") == "0.0.0.0:9100"
    assert c["ports"][0]["containerPort"] == 9100


def test_agent_defaults_are_unprivileged_without_kernel_log(chart: helm.Chart) -> None:
    daemonset = one(render(chart, {}), "DaemonSet", "agent")
    pod = daemonset["spec"]["template"]["spec"]
    c = container(daemonset)
    args: list[str] = c["args"]
    assert args[:3] == ["agent", "--node", "$(NODE_NAME)"]
    assert env_of(daemonset)["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert follows(args, "--kernel-log") == ""
    assert "--fake-gpus" not in args
    sc = c["securityContext"]
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod.get("hostPID", False) is False
    assert pod.get("hostNetwork", False) is False
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert "/dev/kmsg" not in host_paths.values()
    assert all(m["mountPath"] != "/dev/kmsg" for m in c["volumeMounts"])
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_agent_sockets_and_spool_live_on_the_host(chart: helm.Chart) -> None:
    daemonset = one(render(chart, {}), "DaemonSet", "agent")
    pod = daemonset["spec"]["template"]["spec"]
    c = container(daemonset)
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for flag, path in (("--socket-dir", "/var/run/gpuheal"), ("--spool-dir", "/var/lib/gpuheal/spool")):
        assert follows(c["args"], flag) == path
        names = [name for name, host_path in host_paths.items() if host_path == path]
        assert len(names) == 1, f"no hostPath volume for {path}"
        assert mounts[names[0]] == path


def test_agent_kernel_log_mounts_kmsg_read_only_with_only_cap_syslog(chart: helm.Chart) -> None:
    daemonset = one(render(chart, SCENARIOS["kernel-log"]), "DaemonSet", "agent")
    pod = daemonset["spec"]["template"]["spec"]
    c = container(daemonset)
    assert follows(c["args"], "--kernel-log") == "/dev/kmsg"
    assert follows(c["args"], "--kernel-log-format") == "kmsg"
    kmsg_volumes = [v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/dev/kmsg"]
    assert len(kmsg_volumes) == 1
    assert kmsg_volumes[0]["hostPath"]["type"] == "CharDevice"
    mounts = [m for m in c["volumeMounts"] if m["name"] == kmsg_volumes[0]["name"]]
    assert mounts == [{"name": kmsg_volumes[0]["name"], "mountPath": "/dev/kmsg", "readOnly": True}]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False


def test_agent_fake_gpus_skip_the_nvidia_runtime(chart: helm.Chart) -> None:
    for count in (4, 0):
        daemonset = one(render(chart, {"agent": {"fakeGpus": count}}), "DaemonSet", "agent")
        assert follows(container(daemonset)["args"], "--fake-gpus") == str(count)
        assert "runtimeClassName" not in daemonset["spec"]["template"]["spec"]
        assert "NVIDIA_VISIBLE_DEVICES" not in env_of(daemonset)


def test_agent_keeps_running_on_quarantined_nodes(chart: helm.Chart) -> None:
    daemonset = one(render(chart, {}), "DaemonSet", "agent")
    tolerations = daemonset["spec"]["template"]["spec"]["tolerations"]
    assert any(t.get("key") == QUARANTINE_TAINT_KEY for t in tolerations)
    assert tolerates(tolerations, QUARANTINE_TAINT_KEY, "", "NoSchedule")
    assert tolerates(tolerations, QUARANTINE_TAINT_KEY, "xid-79", "NoExecute")
    assert tolerates(tolerations, "example.com/maintenance", "true", "NoSchedule")
    assert not tolerates(tolerations, "example.com/maintenance", "true", "NoExecute")


def test_temporal_credentials_come_from_the_named_secrets(chart: helm.Chart) -> None:
    docs = render(chart, SCENARIOS["secrets"])
    for workload in (one(docs, "Deployment", "worker"), one(docs, "DaemonSet", "agent")):
        env = env_of(workload)
        assert env["TEMPORAL_API_KEY"] == {
            "name": "TEMPORAL_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": "token"}},
        }
        assert env["TEMPORAL_TLS"]["value"] == "true"
        secret_volumes = [v for v in workload["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        assert len(secret_volumes) == 1
        assert secret_volumes[0]["secret"]["secretName"] == TLS_SECRET
        mount = next(m for m in container(workload)["volumeMounts"] if m["name"] == secret_volumes[0]["name"])
        assert mount["readOnly"] is True
        for var, key in (
            ("TEMPORAL_TLS_CLIENT_CERT_PATH", "tls.crt"),
            ("TEMPORAL_TLS_CLIENT_KEY_PATH", "tls.key"),
            ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "ca.crt"),
        ):
            assert env[var]["value"] == f"{mount['mountPath']}/{key}"


def test_defaults_reference_no_credentials(chart: helm.Chart) -> None:
    docs = render(chart, {})
    for workload in (one(docs, "Deployment", "worker"), one(docs, "DaemonSet", "agent")):
        env = env_of(workload)
        assert not {"TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH"} & env.keys()
        assert all("secret" not in v for v in workload["spec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_secret_values_anywhere(chart: helm.Chart, scenario: str) -> None:
    docs = render(chart, SCENARIOS[scenario])
    assert all(d["kind"] != "Secret" for d in docs)
    sensitive = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|CERT_DATA")
    for workload in (one(docs, "Deployment", "worker"), one(docs, "DaemonSet", "agent")):
        for name, entry in env_of(workload).items():
            if sensitive.search(name) and not name.endswith("_PATH"):
                assert "value" not in entry, f"{name} carries a literal value"


def test_chart_sources_hold_no_literal_credentials(chart: helm.Chart) -> None:
    sources = {t["name"]: str(t["data"]) for t in chart.templates}
    sources["values.yaml"] = (CHART_DIR / "values.yaml").read_text()
    assert any(name.endswith("worker-deployment.yaml") for name in sources)
    forbidden = re.compile(
        r"-----BEGIN|kind:\s*Secret\b|(?i:password|token|apiKey|api_key)\s*:\s*[\"']?[A-Za-z0-9+/=_-]{8,}"
    )
    for name, text in sources.items():
        assert not forbidden.search(text), f"{name} looks like it holds a credential"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"agent": {"fakeGpus": "many"}}, "fakeGpus"),
        ({"agent": {"fakeGpus": 2000}}, "fakeGpus"),
        ({"agent": {"kernelLog": {"enabled": "yes"}}}, "kernelLog"),
        ({"temporal": {"tls": {"secretName": 7}}}, "secretName"),
        ({"worker": {"metricsPort": "9464"}}, "metricsPort"),
    ],
)
def test_bad_values_fail_naming_the_field(chart: helm.Chart, values: dict[str, Any], field: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=field):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmValuesError, match=field):
        chart.validate_schema(values)
