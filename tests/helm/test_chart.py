"""The Helm chart, rendered offline by Helm's own engine and checked against Kubernetes' schemas."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from gpuheal.address import EVERY_ADDRESS, parse_listen_address
from gpuheal.agents.publisher.kubernetes import KubernetesReporter
from gpuheal.commands.worker import FLEET_FLAGS
from gpuheal.commands.worker import worker as worker_command
from gpuheal.domain.marks import QUARANTINE_TAINT_KEY
from gpuheal.domain.policy_document import PolicyDocument
from gpuheal.policyfile import parse_policy, read_policy
from gpuheal.protos.sockets import DEVICE_API_SOCKET, HEALTH_EVENTS_SOCKET
from gpuheal.tools.eventgen import settings_from as eventgen_settings
from tests import permissions
from tests.chart import CHART_DIR, DEMO_COPY, KUBE_VERSION, NAMESPACE, RELEASE, demo_copy_text, render
from tests.helm.validation import validate_strictly

TLS_SECRET = "temporal-client-tls"
API_KEY_SECRET = "temporal-api-key"
NEBIUS_SECRET = "nebius-sa"
REDFISH_SECRET = "bmc-credentials"
REDFISH_MAP = "redfish-systems"
REDFISH_CA = "bmc-ca"

ALL_PROVIDERS = "redfish,aws,azure,gcp,nebius,manual"
PROVIDER_ENV = {
    "GPUHEAL_AZURE_ENDPOINT",
    "GPUHEAL_GCE_ENDPOINT",
    "GPUHEAL_NEBIUS_CREDENTIALS_FILE",
    "GPUHEAL_REDFISH_CREDENTIALS_DIR",
    "GPUHEAL_REDFISH_MAP",
    "GPUHEAL_REDFISH_CA_BUNDLE",
}
AZURE_LABEL = "azure.workload.identity/use"

POLICY_EXAMPLE = CHART_DIR.parents[1] / "docs" / "policy.example.yaml"

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "kernel-log": {"agent": {"kernelLog": {"enabled": True}}},
    "fake-gpus": {"agent": {"fakeGpus": 4}},
    "agent-health": {"agent": {"healthPort": 9465}},
    "scraped": {"agent": {"healthPort": 9465}, "metrics": {"serviceMonitor": {"enabled": True}}},
    "secrets": {
        "temporal": {
            "tls": {"secretName": TLS_SECRET, "caKey": "ca.crt"},
            "apiKey": {"secretName": API_KEY_SECRET, "key": "token"},
        }
    },
    "providers": {
        "worker": {
            "providers": ["redfish", "nebius", "azure", "gcp"],
            "podLabels": {"team": "gpu"},
            "azure": {"workloadIdentity": True, "endpoint": "https://management.usgovcloudapi.net"},
            "gcp": {"endpoint": "https://compute.example.internal"},
            "nebius": {"credentialsSecret": NEBIUS_SECRET, "credentialsKey": "sa.json"},
            "redfish": {
                "credentialsSecret": REDFISH_SECRET,
                "systemMap": {"configMap": REDFISH_MAP},
                "caBundle": {"configMap": REDFISH_CA, "key": "bmc-ca.pem"},
            },
        }
    },
    "gpu-reset": {"agent": {"gpuReset": {"enabled": True, "nvidiaSmi": "/usr/bin/nvidia-smi"}}},
    "policy": {"policy": yaml.safe_load(POLICY_EXAMPLE.read_text())},
    "governor-apart": {"worker": {"governorApart": True}},
    "eventgen": {"eventgen": {"enabled": True, "rate": "0.067"}},
    "eventgen-profile": {"eventgen": {"enabled": True, "profile": "light"}},
    "everything-on": yaml.safe_load((Path(__file__).parent / "everything-on.yaml").read_text()),
}

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


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


def volumes_by_name(workload: Manifest) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}


def mounts_by_name(workload: Manifest) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container(workload).get("volumeMounts", [])}


def mounted(workload: Manifest, source: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one volume taking `source` ("secret" or "configMap") from the object `name`, and its mount."""
    field = "secretName" if source == "secret" else "name"
    found = [v for v in volumes_by_name(workload).values() if v.get(source, {}).get(field) == name]
    assert len(found) == 1, f"expected one {source} volume of {name}, got {found}"
    return found[0], mounts_by_name(workload)[found[0]["name"]]


def follows(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def parsed_worker_args(args: list[str], policy: Path) -> dict[str, Any]:
    """The worker's parameters as its parser takes the rendered `args`, reading the policy file `policy`."""
    args = list(args)
    args[args.index("--policy") + 1] = str(policy)
    return dict(worker_command.make_context("worker", args[1:]).params)


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


def expected_kinds(values: dict[str, Any]) -> list[str]:
    """The kinds the chart renders for `values`: what each component brings."""
    deployments = 2 if values.get("worker", {}).get("governorApart") else 1
    kinds = (
        ["Deployment", "PodDisruptionBudget"] * deployments
        + ["DaemonSet", "Role", "RoleBinding", "ConfigMap"]
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 2
        + ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] * 2
        + ["Job", "ServiceAccount"]  # the search attributes' hook
    )
    if values.get("eventgen", {}).get("enabled"):
        kinds += ["DaemonSet", "ServiceAccount"] + ["ConfigMap"] * 3  # light, medium, heavy
    if values.get("metrics", {}).get("serviceMonitor", {}).get("enabled"):
        kinds += ["ServiceMonitor", "Service", "Service"]
    return sorted(kinds)


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"everything-on"}))
def test_every_manifest_is_valid_kubernetes(chart: helm.Chart, scenario: str) -> None:
    values = SCENARIOS[scenario]
    chart.validate_schema(values)
    docs = render(chart, values)
    assert sorted(d["kind"] for d in docs) == expected_kinds(values)
    for doc in docs:
        validate_strictly(doc)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gpuheal"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_strict_validation_rejects_unknown_fields(chart: helm.Chart) -> None:
    deployment = copy.deepcopy(one(render(chart, {}), "Deployment", "worker"))
    container(deployment)["securityContext"]["runAsNonRot"] = True
    with pytest.raises(jsonschema.ValidationError, match="runAsNonRot"):
        validate_strictly(deployment)


def test_chart_lints_clean() -> None:
    report = helm.lint(CHART_DIR, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_worker_cluster_role_grants_exactly_what_the_worker_uses(chart: helm.Chart) -> None:
    """No more and no fewer than the requests tests/permissions.py lists for the worker."""
    docs = render(chart, {})
    role = one(docs, "ClusterRole", "worker")
    assert permissions.granted(role) == permissions.WORKER
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


def test_agent_cluster_role_grants_exactly_what_the_agent_uses(chart: helm.Chart) -> None:
    """No more and no fewer than the requests tests/permissions.py lists for the agent."""
    docs = render(chart, {})
    role = one(docs, "ClusterRole", "agent")
    assert permissions.granted(role) == permissions.AGENT_CLUSTER_WIDE
    binding = one(docs, "ClusterRoleBinding", "agent")
    account = one(docs, "ServiceAccount", "agent")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    subjects = [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    assert binding["subjects"] == subjects
    # Events only in the namespace the agent records them in (KubernetesReporter's, which the agent keeps).
    reporter_namespace = inspect.signature(KubernetesReporter).parameters["namespace"].default
    assert reporter_namespace == permissions.AGENT_EVENTS_NAMESPACE
    events_role = one(docs, "Role", "agent")
    assert events_role["metadata"]["namespace"] == permissions.AGENT_EVENTS_NAMESPACE
    assert permissions.granted(events_role) == permissions.AGENT_IN_EVENTS_NAMESPACE
    events_binding = one(docs, "RoleBinding", "agent")
    assert events_binding["metadata"]["namespace"] == permissions.AGENT_EVENTS_NAMESPACE
    assert events_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": events_role["metadata"]["name"],
    }
    assert events_binding["subjects"] == subjects
    daemonset = one(docs, "DaemonSet", "agent")
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_worker_runs_locked_down_and_exposes_metrics(chart: helm.Chart, tmp_path: Path) -> None:
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
    # Not scraped: loopback only, and no port to reach.
    assert follows(c["args"], "--metrics-address") == "127.0.0.1:9464"
    assert "ports" not in c
    assert c["resources"]["requests"]["memory"] == "256Mi"
    scraped = container(one(render(chart, SCENARIOS["scraped"]), "Deployment", "worker"))
    # Scraped: every address of the pod, IPv4 and IPv6 (the exporter's [::] is dual-stack), in the form the worker takes.
    assert follows(scraped["args"], "--metrics-address") == "[::]:9464"
    (tmp_path / "policy.yaml").write_text("{}")
    assert parsed_worker_args(scraped["args"], tmp_path / "policy.yaml")["metrics_address"] == "[::]:9464"
    assert scraped["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    env = env_of(deployment)
    assert env["TEMPORAL_ADDRESS"]["value"] == "temporal-frontend.temporal.svc:7233"
    assert env["TEMPORAL_NAMESPACE"]["value"] == "default"


def test_worker_takes_temporal_settings_and_resources_from_values(chart: helm.Chart) -> None:
    values = {
        "temporal": {"address": "t.example:7233", "namespace": "gpuheal"},
        "worker": {"resources": {"limits": {"cpu": "2"}}, "metricsPort": 9100},
        **SCENARIOS["scraped"],
    }
    deployment = one(render(chart, values), "Deployment", "worker")
    env = env_of(deployment)
    assert env["TEMPORAL_ADDRESS"]["value"] == "t.example:7233"
    assert env["TEMPORAL_NAMESPACE"]["value"] == "gpuheal"
    c = container(deployment)
    assert c["resources"]["limits"]["cpu"] == "2"
    assert follows(c["args"], "--metrics-address") == "[::]:9100"
    assert c["ports"][0]["containerPort"] == 9100


def test_worker_takes_the_fleet_limits_from_values_and_the_flags_parse(chart: helm.Chart, tmp_path: Path) -> None:
    """The chart's defaults are the worker's own; set values reach its flags, which its parser takes."""
    defaults = container(one(render(chart, {}), "Deployment", "worker"))["args"]
    fleet = {
        "maxRemediations": 1000000,
        "maxRemediatingPercent": 2.5,
        "groupLabel": "topology.kubernetes.io/rack",
        "maxPerGroup": 2,
        "breaker": {"share": 0.05, "atLeast": 20, "windowSeconds": 7200},
    }
    docs = render(chart, {"worker": {"fleet": fleet}})
    args = container(one(docs, "Deployment", "worker"))["args"]

    assert [follows(defaults, flag) for flag in ("--max-remediations", "--max-remediating-percent")] == ["10", "10"]
    assert "--budget-group-label" not in defaults
    assert [follows(defaults, f"--breaker-{name}") for name in ("share", "at-least", "window-seconds")] == [
        "0.2",
        "5",
        "3600",
    ]
    assert follows(args, "--max-remediations") == "1000000"
    assert follows(args, "--max-remediating-percent") == "2.5"
    assert follows(args, "--budget-group-label") == "topology.kubernetes.io/rack"
    assert follows(args, "--max-per-group") == "2"
    assert [follows(args, f"--breaker-{name}") for name in ("share", "at-least", "window-seconds")] == [
        "0.05",
        "20",
        "7200",
    ]
    # The flags parse as the worker's, with the policy file the ConfigMap holds where --policy names it.
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    (tmp_path / "policy.yaml").write_text(config_map["data"]["policy.yaml"])
    args[args.index("--policy") + 1] = str(tmp_path / "policy.yaml")
    parsed = worker_command.make_context("worker", args[1:])
    assert (parsed.params["max_concurrent"], parsed.params["group_label"]) == (1000000, "topology.kubernetes.io/rack")
    assert (parsed.params["share"], parsed.params["window"]) == (0.05, timedelta(hours=2))


def test_the_governor_can_run_in_a_deployment_of_its_own(chart: helm.Chart, tmp_path: Path) -> None:
    """Both pods run the same worker with the same flags and account; each polls its own queue."""
    alone = [d for d in render(chart, {}) if d["kind"] == "Deployment" and "--role" in str(d)]
    assert alone == [], "by default one worker Deployment polls both queues"

    docs = render(chart, {"worker": {"governorApart": True, "replicas": 3}})
    worker, governor = one(docs, "Deployment", "worker"), one(docs, "Deployment", "governor")

    assert (worker["spec"]["replicas"], governor["spec"]["replicas"]) == (3, 1)
    worker_args, governor_args = container(worker)["args"], container(governor)["args"]
    assert (follows(worker_args, "--role"), follows(governor_args, "--role")) == ("remediations", "governor")
    unrolled = [arg for arg in governor_args if arg != "governor"]
    assert unrolled == [arg for arg in worker_args if arg != "remediations"], "the same flags otherwise"
    assert governor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "governor"
    specs = [d["spec"]["template"]["spec"] for d in (worker, governor)]
    assert specs[0]["serviceAccountName"] == specs[1]["serviceAccountName"]
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    (tmp_path / "policy.yaml").write_text(config_map["data"]["policy.yaml"])
    governor_args[governor_args.index("--policy") + 1] = str(tmp_path / "policy.yaml")
    assert worker_command.make_context("worker", governor_args[1:]).params["role"].value == "governor"
    for doc in (worker, governor):
        validate_strictly(doc)


@pytest.mark.parametrize(
    "values",
    [
        {"eventgen": {"enabled": True, "rate": "0.2"}},
        # A socket directory of one's own, and the rate as `--set eventgen.rate=0.2` gives it: a number.
        {"eventgen": {"enabled": True, "rate": 0.2}, "agent": {"socketDir": "/run/gpuheal-sockets"}},
    ],
)
def test_the_event_generator_runs_beside_each_agent_only_when_enabled(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    assert not [
        d for d in render(chart, {}) if d["metadata"]["labels"].get("app.kubernetes.io/component") == "eventgen"
    ]

    docs = render(chart, values)
    eventgen, agent = one(docs, "DaemonSet", "eventgen"), one(docs, "DaemonSet", "agent")
    c = container(eventgen)
    env = env_of(eventgen)

    assert c["command"] == ["gpuheal-eventgen"]
    settings = eventgen_settings(c["args"], {"NODE_NAME": "n1", "EVENT_RATE": env["EVENT_RATE"]["value"]})
    # It sends where the agent on its node takes health events.
    assert settings.socket == Path(follows(container(agent)["args"], "--socket-dir")) / HEALTH_EVENTS_SOCKET
    assert settings.rate == 0.2
    # It asks the agent's Device API, in the same mounted directory, for the GPUs its events name.
    assert settings.device_api == settings.socket.with_name(DEVICE_API_SOCKET) and not settings.gpu_uuids
    assert settings.interval == timedelta(seconds=15) and settings.background is False
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    pod = eventgen["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsGroup"] == 0
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert (
        volumes_by_name(eventgen)["sockets"]["hostPath"]["path"]
        == volumes_by_name(agent)["sockets"]["hostPath"]["path"]
    )
    assert Path(mounts_by_name(eventgen)["sockets"]["mountPath"]) == settings.socket.parent
    assert pod.get("nodeSelector") == agent["spec"]["template"]["spec"].get("nodeSelector")
    assert pod.get("tolerations") == agent["spec"]["template"]["spec"].get("tolerations")
    background = container(
        one(render(chart, {"eventgen": {"enabled": True, "background": True}}), "DaemonSet", "eventgen")
    )
    assert eventgen_settings(background["args"], {"NODE_NAME": "n1"}).background is True
    assert "EVENT_RATE" not in env_of(one(render(chart, {"eventgen": {"enabled": True}}), "DaemonSet", "eventgen"))


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


def test_agent_health_endpoint_is_off_by_default_and_the_readiness_probe_when_on(chart: helm.Chart) -> None:
    c = container(one(render(chart, {}), "DaemonSet", "agent"))
    assert "--health-address" not in c["args"]
    assert "readinessProbe" not in c and "ports" not in c
    assert follows(c["args"], "--spool-max-mib") == "64"

    c = container(one(render(chart, {"agent": {"healthPort": 9465, "spoolMaxMiB": 16}}), "DaemonSet", "agent"))
    assert parse_listen_address(follows(c["args"], "--health-address")) == (EVERY_ADDRESS, 9465)
    assert follows(c["args"], "--spool-max-mib") == "16"
    assert c["ports"] == [{"name": "health", "containerPort": 9465, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_agent_gets_its_shutdown_grace_and_a_margin_before_it_is_killed(chart: helm.Chart) -> None:
    """Faults held in memory are delivered or written during the grace: the kubelet must wait longer."""
    for values, grace, period in (({}, "15", 30), ({"agent": {"shutdownGraceSeconds": 45}}, "45", 60)):
        daemonset = one(render(chart, values), "DaemonSet", "agent")
        assert follows(container(daemonset)["args"], "--shutdown-grace-seconds") == grace
        assert daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == period


@pytest.mark.parametrize(
    ("priority_class", "expected"),
    [(None, "system-node-critical"), ("gpu-node-agents", "gpu-node-agents"), ("", None)],
)
def test_agent_priority_class_is_a_value(chart: helm.Chart, priority_class: str | None, expected: str | None) -> None:
    """system-node-critical by default; GKE refuses it outside kube-system without a quota, so it can change."""
    values = {} if priority_class is None else {"agent": {"priorityClassName": priority_class}}
    pod = one(render(chart, values), "DaemonSet", "agent")["spec"]["template"]["spec"]
    assert pod.get("priorityClassName") == expected


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


TLS_PATHS = ("TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH")


@pytest.mark.parametrize(
    ("tls", "files"),
    [
        # A private CA with an API key: the Secret holds the CA bundle only.
        ({"certKey": "", "keyKey": "", "caKey": "ca.crt"}, {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "ca.crt"}),
        # A client certificate with the system roots.
        ({}, {"TEMPORAL_TLS_CLIENT_CERT_PATH": "tls.crt", "TEMPORAL_TLS_CLIENT_KEY_PATH": "tls.key"}),
    ],
)
def test_temporal_tls_names_and_projects_only_the_files_the_secret_holds(
    chart: helm.Chart, tls: dict[str, str], files: dict[str, str]
) -> None:
    docs = render(chart, {"temporal": {"tls": {"secretName": TLS_SECRET, **tls}}})
    for workload in (
        one(docs, "Deployment", "worker"),
        one(docs, "DaemonSet", "agent"),
        one(docs, "Job", "search-attributes"),
    ):
        volume, mount = mounted(workload, "secret", TLS_SECRET)
        # Only the named keys are projected: a key the Secret lacks fails the mount, not the process.
        assert sorted(volume["secret"]["items"], key=lambda i: i["key"]) == [
            {"key": key, "path": key} for key in sorted(files.values())
        ]
        env = env_of(workload)
        assert {var: env[var]["value"] for var in TLS_PATHS if var in env} == {
            var: f"{mount['mountPath']}/{key}" for var, key in files.items()
        }
        assert env["TEMPORAL_TLS"]["value"] == "true"


@pytest.mark.parametrize(
    ("tls", "complaint"),
    [
        ({"keyKey": ""}, r"certKey and temporal\.tls\.keyKey"),
        ({"certKey": ""}, r"certKey and temporal\.tls\.keyKey"),
        ({"certKey": "", "keyKey": ""}, "provides no file"),
    ],
)
def test_temporal_tls_refuses_half_a_client_certificate_or_no_file(
    chart: helm.Chart, tls: dict[str, str], complaint: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=complaint):
        render(chart, {"temporal": {"tls": {"secretName": TLS_SECRET, **tls}}})


def test_defaults_reference_no_credentials(chart: helm.Chart) -> None:
    docs = render(chart, {})
    for workload in (one(docs, "Deployment", "worker"), one(docs, "DaemonSet", "agent")):
        env = env_of(workload)
        assert not {"TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH"} & env.keys()
        assert all("secret" not in v for v in workload["spec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_secret_values_anywhere(chart: helm.Chart, scenario: str) -> None:
    docs = render(chart, SCENARIOS[scenario])
    # The fault injector's generated token (everything-on) is the one Secret the chart may make.
    assert all(
        d["kind"] != "Secret" or d["metadata"]["labels"]["app.kubernetes.io/component"] == "injector" for d in docs
    )
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
    # The one Secret the chart makes is the fault injector's token: generated at install or kept from
    # the cluster, never written in the source.
    token_template = sources.pop("templates/injector-token.yaml")
    assert "randAlphaNum" in token_template and "lookup" in token_template
    assert not forbidden.search(token_template.replace("kind: Secret", ""))
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
        ({"worker": {"providers": ["aws", "vmware"]}}, "providers"),
        ({"worker": {"providers": []}}, "providers"),
        ({"worker": {"providers": ["aws", "aws"]}}, "providers"),
        ({"worker": {"providers": "aws"}}, "providers"),
        ({"worker": {"providers": None}}, "providers"),
        ({"worker": {"podLabels": {"tier": 1}}}, "podLabels"),
        ({"worker": {"azure": {"workloadIdentity": "true"}}}, "workloadIdentity"),
        ({"worker": {"azure": {"endpoint": "http://management.azure.com"}}}, "endpoint"),
        ({"worker": {"nebius": {"credentialsKey": "../etc/passwd"}}}, "credentialsKey"),
        ({"worker": {"redfish": {"credentialSecret": "bmc"}}}, "credentialSecret"),
        ({"worker": {"redfish": {"systemMap": {"configMap": "Not_A_Name"}}}}, "configMap"),
        ({"worker": {"fleet": {"maxRemediations": 0}}}, "maxRemediations"),
        ({"worker": {"fleet": {"maxRemediation": 3}}}, "maxRemediation"),
        ({"worker": {"fleet": {"groupLabel": "rack id"}}}, "groupLabel"),
        ({"worker": {"fleet": {"breaker": {"share": 1.5}}}}, "share"),
        ({"worker": {"fleet": {"breaker": {"windowSeconds": 0}}}}, "windowSeconds"),
        ({"agent": {"gpuReset": {"enabled": "yes"}}}, "enabled"),
        ({"agent": {"gpuReset": {"nvidiaSmi": ""}}}, "nvidiaSmi"),
        ({"agent": {"diagnostics": {"to": "bundles"}}}, "to"),
        ({"agent": {"diagnostics": {"to": "/"}}}, "to"),
        ({"agent": {"diagnostics": {"to": "/etc"}}}, "to"),
        ({"agent": {"diagnostics": {"to": "/var/lib/../../etc"}}}, "to"),
        ({"agent": {"diagnostics": {"to": "/var/lib/kubelet/pods/../.."}}}, "to"),
        ({"agent": {"diagnostics": {"to": "s3://"}}}, "to"),
        ({"agent": {"diagnostics": {"collector": "sosreport"}}}, "collector"),
        ({"agent": {"gpuCheck": {"mode": "always"}}}, "mode"),
        ({"agent": {"healthPort": 70000}}, "healthPort"),
        ({"agent": {"spoolMaxMiB": 0}}, "spoolMaxMiB"),
        ({"agent": {"shutdownGraceSeconds": -1}}, "shutdownGraceSeconds"),
        ({"eventgen": {"rate": "fast"}}, "rate"),
        ({"eventgen": {"rate": -0.2}}, "rate"),
        ({"eventgen": {"interval": "15"}}, "interval"),
        ({"eventgen": {"enable": True}}, "enable"),
    ],
)
def test_bad_values_fail_naming_the_field(chart: helm.Chart, values: dict[str, Any], field: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=field):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmValuesError, match=field):
        chart.validate_schema(values)


def test_worker_enables_every_provider_by_default_with_no_provider_wiring(chart: helm.Chart) -> None:
    deployment = one(render(chart, {}), "Deployment", "worker")
    assert follows(container(deployment)["args"], "--providers") == ALL_PROVIDERS
    assert not PROVIDER_ENV & env_of(deployment).keys()
    assert list(volumes_by_name(deployment)) == ["tmp", "policy"]
    assert list(mounts_by_name(deployment)) == ["tmp", "policy"]
    assert AZURE_LABEL not in deployment["spec"]["template"]["metadata"]["labels"]


def test_worker_providers_can_be_narrowed(chart: helm.Chart) -> None:
    values = {"worker": {"providers": ["nebius", "manual"]}}
    chart.validate_schema(values)
    deployment = one(render(chart, values), "Deployment", "worker")
    args: list[str] = container(deployment)["args"]
    assert args.count("--providers") == 1
    assert follows(args, "--providers") == "nebius,manual"


def test_worker_pod_labels_add_to_the_chart_labels_without_displacing_them(chart: helm.Chart) -> None:
    values = {"worker": {"podLabels": {"team": "gpu", "app.kubernetes.io/component": "other"}}}
    deployment = one(render(chart, values), "Deployment", "worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "gpu"
    assert labels["app.kubernetes.io/component"] == "worker"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert "team" not in selector


def test_worker_azure_workload_identity_and_cloud_endpoints(chart: helm.Chart) -> None:
    values = copy.deepcopy(SCENARIOS["providers"])
    client_id = "00000000-0000-0000-0000-000000000000"
    values["worker"]["serviceAccount"] = {"annotations": {"azure.workload.identity/client-id": client_id}}
    docs = render(chart, values)
    deployment = one(docs, "Deployment", "worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[AZURE_LABEL] == "true"
    assert labels["team"] == "gpu"
    assert AZURE_LABEL not in deployment["spec"]["selector"]["matchLabels"]
    assert AZURE_LABEL not in deployment["metadata"]["labels"]
    account = one(docs, "ServiceAccount", "worker")
    assert account["metadata"]["annotations"] == {"azure.workload.identity/client-id": client_id}
    env = env_of(deployment)
    assert env["GPUHEAL_AZURE_ENDPOINT"] == {
        "name": "GPUHEAL_AZURE_ENDPOINT",
        "value": "https://management.usgovcloudapi.net",
    }
    assert env["GPUHEAL_GCE_ENDPOINT"] == {"name": "GPUHEAL_GCE_ENDPOINT", "value": "https://compute.example.internal"}
    assert follows(container(deployment)["args"], "--providers") == "redfish,nebius,azure,gcp"


def test_worker_nebius_credentials_come_from_the_named_secret(chart: helm.Chart) -> None:
    deployment = one(render(chart, SCENARIOS["providers"]), "Deployment", "worker")
    volume, mount = mounted(deployment, "secret", NEBIUS_SECRET)
    assert volume["secret"]["items"] == [{"key": "sa.json", "path": "sa.json"}]
    assert mount == {"name": volume["name"], "mountPath": "/etc/gpuheal/nebius", "readOnly": True}
    assert env_of(deployment)["GPUHEAL_NEBIUS_CREDENTIALS_FILE"]["value"] == "/etc/gpuheal/nebius/sa.json"


def test_worker_redfish_credentials_map_and_ca_come_from_the_named_objects(chart: helm.Chart) -> None:
    deployment = one(render(chart, SCENARIOS["providers"]), "Deployment", "worker")
    env = env_of(deployment)
    credentials, credentials_mount = mounted(deployment, "secret", REDFISH_SECRET)
    # The whole Secret: per-BMC keys (`<host>.username`) sit beside `username` and `password`.
    assert "items" not in credentials["secret"]
    assert credentials_mount["readOnly"] is True
    assert credentials_mount["mountPath"] == "/etc/gpuheal/redfish"
    assert env["GPUHEAL_REDFISH_CREDENTIALS_DIR"]["value"] == "/etc/gpuheal/redfish"
    for name, key, path, var in (
        (REDFISH_MAP, "map.json", "/etc/gpuheal/redfish-map", "GPUHEAL_REDFISH_MAP"),
        (REDFISH_CA, "bmc-ca.pem", "/etc/gpuheal/redfish-ca", "GPUHEAL_REDFISH_CA_BUNDLE"),
    ):
        volume, mount = mounted(deployment, "configMap", name)
        assert volume["configMap"]["items"] == [{"key": key, "path": key}]
        assert mount == {"name": volume["name"], "mountPath": path, "readOnly": True}
        assert env[var]["value"] == f"{path}/{key}"


@pytest.mark.parametrize("scenario", ["providers", "secrets"])
def test_worker_can_read_its_secret_files(chart: helm.Chart, scenario: str) -> None:
    """Kubelet leaves Secret files owned by root and gives them the pod's fsGroup, a group the
    worker's process belongs to: the non-root worker reads them through the group bits."""
    deployment = one(render(chart, SCENARIOS[scenario]), "Deployment", "worker")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] != 0
    assert pod["fsGroup"] == 65532
    secrets = [v["secret"] for v in volumes_by_name(deployment).values() if "secret" in v]
    assert secrets
    for secret in secrets:
        mode = secret["defaultMode"]
        # Group-readable as rendered (kubelet would OR in 0440 with an fsGroup anyway; not counted on).
        assert mode & 0o040, f"{secret['secretName']} files are not group-readable: {mode:o}"
        assert not mode & 0o007, f"{secret['secretName']} files are readable by everyone: {mode:o}"


def test_agent_gpu_reset_is_off_and_unprivileged_by_default(chart: helm.Chart) -> None:
    daemonset = one(render(chart, {}), "DaemonSet", "agent")
    c = container(daemonset)
    assert follows(c["args"], "--gpu-reset") == "off"
    assert "--nvidia-smi" not in c["args"]
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_agent_gpu_reset_runs_privileged_on_the_nvidia_runtime(chart: helm.Chart) -> None:
    daemonset = one(render(chart, SCENARIOS["gpu-reset"]), "DaemonSet", "agent")
    c = container(daemonset)
    assert follows(c["args"], "--gpu-reset") == "nvidia-smi"
    assert follows(c["args"], "--nvidia-smi") == "/usr/bin/nvidia-smi"
    assert "--fake-gpus" not in c["args"]
    assert c["securityContext"]["privileged"] is True
    assert "allowPrivilegeEscalation" not in c["securityContext"]
    assert daemonset["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert "utility" in env_of(daemonset)["NVIDIA_DRIVER_CAPABILITIES"]["value"].split(",")


def test_agent_diagnostics_to_a_node_directory_mounts_it_and_to_s3_mounts_nothing(chart: helm.Chart) -> None:
    def agent_of(to: str) -> tuple[dict[str, Any], dict[str, Any]]:
        daemonset = one(
            render(chart, {"agent": {"diagnostics": {"to": to, "collector": "nvml"}}}), "DaemonSet", "agent"
        )
        pod = daemonset["spec"]["template"]["spec"]
        return pod, pod["containers"][0]

    pod, container = agent_of("/var/lib/gpuheal/bundles")
    args = container["args"]
    assert args[args.index("--diagnostics-to") + 1] == "/var/lib/gpuheal-diagnostics", "a fixed path inside"
    assert args[args.index("--diagnostics") + 1] == "nvml"
    assert {"name": "diagnostics", "mountPath": "/var/lib/gpuheal-diagnostics"} in container["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "diagnostics"]
    assert volume["hostPath"] == {"path": "/var/lib/gpuheal/bundles", "type": "DirectoryOrCreate"}

    pod, container = agent_of("s3://fleet-bundles/eu")
    assert container["args"][container["args"].index("--diagnostics-to") + 1] == "s3://fleet-bundles/eu"
    assert "diagnostics" not in [v["name"] for v in pod["volumes"]]
    _, container = agent_of("")
    assert "--diagnostics-to" not in container["args"], "off unless a place is given"


def test_agent_gpu_reset_refuses_fake_gpus(chart: helm.Chart) -> None:
    values = {"agent": {"gpuReset": {"enabled": True}, "fakeGpus": 2}}
    with pytest.raises(helm.HelmRenderError, match=r"agent\.gpuReset\.enabled.*agent\.fakeGpus"):
        render(chart, values)


def test_agent_node_policy_binds_the_agent_to_its_own_node(chart: helm.Chart) -> None:
    """The policy and its binding: the agent's writes to nodes, denied (not warned) with 403s.

    Modelled on upstream's test/e2e/auth/e2edata/per_node_validatingadmissionpolicy*.yaml.
    """
    docs = render(chart, {})
    node_policy = [d for d in docs if not d["metadata"]["name"].endswith("-events")]
    policy = one(node_policy, "ValidatingAdmissionPolicy", "agent")
    binding = one(node_policy, "ValidatingAdmissionPolicyBinding", "agent")
    account = one(docs, "ServiceAccount", "agent")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["nodes", "nodes/*"],
        }
    ]
    username = f"system:serviceaccount:{NAMESPACE}:{account['metadata']['name']}"
    assert spec["matchConditions"] == [
        {"name": "is-the-agent", "expression": f"request.userInfo.username == '{username}'"}
    ]
    assert "authentication.kubernetes.io/node-name" in spec["variables"][0]["expression"]
    assert {v["reason"] for v in spec["validations"]} == {"Forbidden"}
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_agent_events_policy_binds_the_agents_events_to_its_own_node(chart: helm.Chart) -> None:
    """The second policy: the agent's Events (its Role lets it create any in their namespace) must
    be about the node its token names, denied with 403s."""
    docs = render(chart, {})
    events_policy = [d for d in docs if d["metadata"]["name"].endswith("-agent-own-node-events")]
    policy = one(events_policy, "ValidatingAdmissionPolicy", "agent")
    binding = one(events_policy, "ValidatingAdmissionPolicyBinding", "agent")
    account = one(docs, "ServiceAccount", "agent")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["events"]}
    ]
    username = f"system:serviceaccount:{NAMESPACE}:{account['metadata']['name']}"
    assert spec["matchConditions"] == [
        {"name": "is-the-agent", "expression": f"request.userInfo.username == '{username}'"}
    ]
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert f"request.namespace == '{permissions.AGENT_EVENTS_NAMESPACE}'" in expressions
    assert "variables.kind == 'Node' && variables.target == variables.nodeName" in expressions
    assert {v["reason"] for v in spec["validations"]} == {"Forbidden"}
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_agent_node_policy_is_left_out_with_the_agent(chart: helm.Chart) -> None:
    docs = render(chart, {"agent": {"enabled": False}})
    assert not [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy") or d["kind"].startswith("Role")]


def test_the_demo_copy_of_the_chart_access_objects_is_current() -> None:
    """sim/gpuheal_sim/demo/chart-access.yaml is what the chart renders (`python -m tests.chart` rewrites it)."""
    assert DEMO_COPY.read_text() == demo_copy_text(), "run `.venv/bin/python -m tests.chart`"


def policy_file_of(docs: list[Manifest]) -> tuple[str, PolicyDocument]:
    """The policy ConfigMap's name, and the document its file holds as the worker reads it."""
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    return config_map["metadata"]["name"], parse_policy(config_map["data"]["policy.yaml"].encode(), "policy.yaml")


def test_the_policy_value_reaches_the_worker_and_the_agent_as_a_file_they_accept(chart: helm.Chart) -> None:
    docs = render(chart, SCENARIOS["policy"])
    name, document = policy_file_of(docs)

    # Helm rewrites the YAML (key order, quoted XID keys): the content, and so the version, is the same.
    assert document.version == read_policy(POLICY_EXAMPLE).version
    for component in ("worker", "agent"):
        workload = one(docs, "Deployment" if component == "worker" else "DaemonSet", component)
        volume, mount = mounted(workload, "configMap", name)
        assert mount["readOnly"] is True and "subPath" not in mount  # a subPath mount never sees an edit
        assert follows(container(workload)["args"], "--policy") == f"{mount['mountPath']}/policy.yaml"
        assert "items" not in volume["configMap"]
    # Its fleet section sets the limits: no flag would contradict it (the worker refuses both).
    worker_args = container(one(docs, "Deployment", "worker"))["args"]
    fleet_flags = {param.opts[0] for param in worker_command.params if param.name in FLEET_FLAGS}
    assert len(fleet_flags) == len(FLEET_FLAGS)
    assert fleet_flags.isdisjoint(worker_args)


def test_without_a_policy_value_the_file_is_the_defaults_and_the_flags_set_the_fleet(chart: helm.Chart) -> None:
    docs = render(chart, {})
    _, document = policy_file_of(docs)

    assert document == PolicyDocument()
    assert follows(container(one(docs, "Deployment", "worker"))["args"], "--max-remediations") == "10"
