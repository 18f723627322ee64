"""The chart's other components: the worker's disruption budget and grace, the search attributes'
hook Job, the event generator's loads, the telemetry streamer, a ServiceAccount and exact RBAC per
component, the strict values schema and the version the image follows."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import helm_python as helm
import pytest
import yaml  # type: ignore[import-untyped]

from gpuheal.cli import main
from gpuheal.commands.search_attributes import search_attributes
from gpuheal.protos.sockets import TELEMETRY_SOCKET
from gpuheal.tools.telemetry.settings import settings_from as telemetry_settings
from gpuheal.worker import WorkerSettings
from tests.chart import CHART_DIR, KUBE_VERSION, NAMESPACE, ROOT, render
from tests.helm.test_chart import (
    SCENARIOS,
    chart,
    container,
    env_of,
    follows,
    mounted,
    one,
    parsed_worker_args,
    volumes_by_name,
)
from tests.helm.validation import validate_strictly

__all__ = ["chart"]  # test_chart's fixture

EVERYTHING = SCENARIOS["everything-on"]
TELEMETRY = {"telemetry": {"enabled": True, "csv": {"configMap": "dcgm-metrics", "file": "dcgm.csv"}}}


def test_the_kubelet_waits_longer_than_the_worker_drains(chart: helm.Chart, tmp_path: Path) -> None:
    """SIGTERM lets running activities finish for --graceful-shutdown-seconds; a kill before that
    would cut them off, so the pod's grace period must be longer."""
    (tmp_path / "policy.yaml").write_text("{}")
    default = WorkerSettings().graceful_shutdown
    for values in ({}, {"worker": {"gracefulShutdownSeconds": 300}}):
        deployment = one(render(chart, values), "Deployment", "worker")
        drain = parsed_worker_args(container(deployment)["args"], tmp_path / "policy.yaml")["graceful_shutdown"]
        period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period > drain.total_seconds()
        if not values:
            assert drain == default, "the chart's default is the worker's own"


def test_node_drains_take_one_worker_at_a_time(chart: helm.Chart) -> None:
    docs = render(chart, {"worker": {"governorApart": True, "replicas": 3}})
    for component in ("worker", "governor"):
        budget, deployment = one(docs, "PodDisruptionBudget", component), one(docs, "Deployment", component)
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert not [
        d
        for d in render(chart, {"worker": {"podDisruptionBudget": {"enabled": False}}})
        if d["kind"] == "PodDisruptionBudget"
    ]


def test_the_hook_job_registers_the_search_attributes_with_the_workers_temporal_settings(chart: helm.Chart) -> None:
    docs = render(chart, SCENARIOS["secrets"])
    job, worker = one(docs, "Job", "search-attributes"), one(docs, "Deployment", "worker")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    c = container(job)
    assert c["command"] == ["gpuheal"]
    [group, *rest] = c["args"]
    assert group == "search-attributes"
    search_attributes.commands[rest[0]].make_context(rest[0], rest[1:])  # a command it has
    temporal = {name: e for name, e in env_of(worker).items() if name.startswith("TEMPORAL_")}
    assert temporal.items() <= env_of(job).items() and "TEMPORAL_API_KEY" in temporal
    assert mounted(job, "secret", "temporal-client-tls")[1] == mounted(worker, "secret", "temporal-client-tls")[1]
    assert not [d for d in render(chart, {"searchAttributesJob": {"enabled": False}}) if d["kind"] == "Job"]


def test_the_agents_socket_users_share_its_group(chart: helm.Chart) -> None:
    """The agent's sockets (0660) and their directory (0750) get its group: each workload mounting
    them runs in that group, set explicitly rather than left to the image."""
    docs = render(chart, {**EVERYTHING, **TELEMETRY})
    agent = one(docs, "DaemonSet", "agent")
    sockets = volumes_by_name(agent)["sockets"]["hostPath"]["path"]
    group = agent["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]
    users = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "DaemonSet") and d is not agent
        for v in d["spec"]["template"]["spec"].get("volumes", [])
        if v.get("hostPath", {}).get("path") == sockets
    ]
    assert group == 0 and {u["metadata"]["labels"]["app.kubernetes.io/component"] for u in users} == {
        "eventgen",
        "telemetry",
    }
    for user in users:
        assert user["spec"]["template"]["spec"]["securityContext"]["runAsGroup"] == group


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_every_gpuheal_process_logs_in_the_chosen_format(chart: helm.Chart, log_format: str) -> None:
    [option] = [p for p in main.params if p.name == "log_format"]
    assert isinstance(option.type, click.Choice) and log_format in option.type.choices
    values = {**EVERYTHING, **TELEMETRY} if log_format == "plain" else {**EVERYTHING, "logFormat": log_format}
    gpuheal = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: c
        for d in render(chart, values)
        if d["kind"] in ("Deployment", "DaemonSet", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["command"] == ["gpuheal"]
    }
    assert set(gpuheal) == {"worker", "governor", "agent", "search-attributes", "injector-api", "injector-agent"}
    for component, c in gpuheal.items():
        env = {e["name"]: e for e in c["env"]}
        assert env[option.envvar]["value"] == log_format, component


def test_the_worker_counts_remediations_as_stuck_after_the_values_threshold(chart: helm.Chart, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("{}")
    for values, after in (
        ({}, WorkerSettings().stuck_after),
        ({"worker": {"stuckAfter": "90m"}}, timedelta(minutes=90)),
    ):
        args = container(one(render(chart, values), "Deployment", "worker"))["args"]
        assert parsed_worker_args(args, tmp_path / "policy.yaml")["stuck_after"] == after


def test_the_hook_job_gives_up_before_helms_default_timeout(chart: helm.Chart) -> None:
    """`helm install` waits 5 minutes for a hook by default: the Job's deadline ends it first."""
    job = one(render(chart, {}), "Job", "search-attributes")
    assert job["spec"]["activeDeadlineSeconds"] < 300


@pytest.mark.parametrize(("profile", "rate"), [("light", "0.02"), ("medium", "0.067"), ("heavy", "0.2")])
def test_the_event_generator_takes_the_seed_s_loads_from_their_config_maps(
    chart: helm.Chart, profile: str, rate: str
) -> None:
    docs = render(chart, {"eventgen": {"enabled": True, "profile": profile}})
    maps = {
        d["metadata"]["name"].rsplit("-", 1)[1]: d["data"]
        for d in docs
        if d["metadata"]["name"].startswith("gh-gpuheal-eventgen-")
    }
    assert maps == {"light": {"EVENT_RATE": "0.02"}, "medium": {"EVENT_RATE": "0.067"}, "heavy": {"EVENT_RATE": "0.2"}}
    eventgen = one(docs, "DaemonSet", "eventgen")
    [source] = container(eventgen)["envFrom"]
    assert maps[source["configMapRef"]["name"].rsplit("-", 1)[1]] == {"EVENT_RATE": rate}
    assert "EVENT_RATE" not in env_of(eventgen)


def test_a_rate_and_a_profile_together_are_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"eventgen\.rate and eventgen\.profile"):
        render(chart, {"eventgen": {"enabled": True, "rate": "1", "profile": "heavy"}})


def test_the_telemetry_streamer_streams_the_mounted_csv_to_the_agent_on_its_node(chart: helm.Chart) -> None:
    assert not [
        d for d in render(chart, {}) if d["metadata"]["labels"].get("app.kubernetes.io/component") == "telemetry"
    ]
    docs = render(chart, TELEMETRY)
    telemetry, agent = one(docs, "Deployment", "telemetry"), one(docs, "DaemonSet", "agent")
    c = container(telemetry)
    assert c["command"] == ["gpuheal-telemetry"]
    settings = telemetry_settings(c["args"], {})
    assert settings.socket == Path(follows(container(agent)["args"], "--socket-dir")) / TELEMETRY_SOCKET
    volume, mount = mounted(telemetry, "configMap", "dcgm-metrics")
    assert settings.csv_path == Path(mount["mountPath"]) / "dcgm.csv" and mount["readOnly"] is True
    assert volume["configMap"]["items"] == [{"key": "dcgm.csv", "path": "dcgm.csv"}]
    assert (settings.loop, settings.queue_buffer, settings.queue_workers) == (True, 1000, 10)
    assert env_of(telemetry)["INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    pod, agent_pod = telemetry["spec"]["template"]["spec"], agent["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == agent_pod["nodeSelector"], "only where an agent's socket is"
    claim = {"telemetry": {"enabled": True, "csv": {"volume": {"persistentVolumeClaim": {"claimName": "dcgm"}}}}}
    from_claim = volumes_by_name(one(render(chart, claim), "Deployment", "telemetry"))["csv"]
    assert from_claim == {"name": "csv", "persistentVolumeClaim": {"claimName": "dcgm"}}
    with pytest.raises(helm.HelmRenderError, match=r"telemetry\.csv"):
        render(chart, {"telemetry": {"enabled": True}})


def test_everything_on_renders_every_component_as_valid_kubernetes(chart: helm.Chart) -> None:
    chart.validate_schema(EVERYTHING)
    docs = render(chart, EVERYTHING)
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in docs}
    assert {
        "worker", "governor", "agent", "eventgen", "telemetry", "injector-agent", "injector-api", "search-attributes", "metrics",
    } <= components  # fmt: skip
    for doc in docs:
        validate_strictly(doc)


def test_each_component_has_its_own_account_with_exactly_its_rbac(chart: helm.Chart) -> None:
    docs = render(chart, EVERYTHING)
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    granted: dict[str, list[tuple[str, str, Any]]] = {name: [] for name in accounts}
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in {"Role", "ClusterRole"}}
    for binding in (d for d in docs if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            assert subject["namespace"] == NAMESPACE
            granted[subject["name"]].append((role["kind"], role["metadata"].get("namespace", ""), role["rules"]))
    by_component = {
        a["metadata"]["labels"]["app.kubernetes.io/component"]: granted[name] for name, a in accounts.items()
    }
    nodes, node_status = ["nodes"], ["nodes/status"]
    assert by_component == {
        "worker": [
            ("ClusterRole", "", [
                {"apiGroups": [""], "resources": nodes, "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get"]},
            ])
        ],
        "agent": [
            ("ClusterRole", "", [
                {"apiGroups": [""], "resources": nodes, "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": node_status, "verbs": ["patch"]},
            ]),
            ("Role", "default", [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]),
        ],
        "injector-api": [("Role", NAMESPACE, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])],
        "injector-agent": [],
        "eventgen": [],
        "telemetry": [],
        "search-attributes": [],
    }  # fmt: skip
    # Every workload runs as its component's account (the governor as the workers'), never as the
    # namespace's default, which others may grant rights to; those that never call the Kubernetes API
    # get no token at all.
    tokenless = {"injector-agent", "eventgen", "telemetry", "search-attributes"}
    workloads = [d for d in docs if d["kind"] in {"Deployment", "DaemonSet", "Job"}]
    for workload in workloads:
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = workload["spec"]["template"]["spec"]
        account = accounts.get(pod.get("serviceAccountName", "default"))
        assert account is not None, f"{workload['metadata']['name']} runs as no account of the chart's"
        owner = account["metadata"]["labels"]["app.kubernetes.io/component"]
        assert owner == {"governor": "worker"}.get(component, component)
        if component in tokenless:
            assert account["automountServiceAccountToken"] is False
            assert pod["automountServiceAccountToken"] is False
    assert tokenless <= {w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads}


@pytest.mark.parametrize(
    ("values", "typo"),
    [
        ({"wroker": {"replicas": 2}}, "wroker"),
        ({"worker": {"replica": 2}}, "replica"),
        ({"agent": {"healthport": 9465}}, "healthport"),
        ({"image": {"tags": "1.0"}}, "tags"),
        ({"temporal": {"adress": "t:7233"}}, "adress"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"metrics": {"dashbaord": {"enabled": True}}}, "dashbaord"),
        ({"telemetry": {"csv": {"configmap": "x"}}}, "configmap"),
        ({"searchAttributesJob": {"enable": False}}, "enable"),
        ({"worker": {"podDisruptionBudget": {"minAvailable": 1}}}, "minAvailable"),
    ],
)
def test_a_mistyped_key_is_refused_by_helms_render(chart: helm.Chart, values: dict[str, Any], typo: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=typo):
        chart.render(values, name="gh", namespace=NAMESPACE)


def test_every_default_value_is_in_the_schema(chart: helm.Chart) -> None:
    """The schema names every key values.yaml sets (so none is refused as a typo, and none escapes it)."""
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        if "properties" not in node:
            return
        for key, value in values.items():
            assert key in node["properties"], f"{path}{key} is not in values.schema.json"
            if isinstance(value, dict):
                walk(value, node["properties"][key], f"{path}{key}.")

    walk(defaults, schema, "")


def test_the_chart_and_its_image_follow_the_package_version(chart: helm.Chart) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert meta["version"] == meta["appVersion"] == version
    for workload in ("Deployment", "DaemonSet"):
        image = container(one(render(chart, {}), workload, "worker" if workload == "Deployment" else "agent"))["image"]
        assert image == f"ghcr.io/gpuheal/gpuheal:{version}"
    pinned = container(one(render(chart, {"image": {"tag": "0.0.9"}}), "Deployment", "worker"))["image"]
    assert pinned.endswith(":0.0.9")


def test_the_notes_say_what_to_do_next(chart: helm.Chart) -> None:
    notes = chart.render(EVERYTHING, name="gh", namespace=NAMESPACE, is_install=True)["gpuheal/templates/NOTES.txt"]
    for step in (
        "kubectl -n gpuheal-system get pods",
        "gpuheal list",
        "gpuheal approve NODE",
        "ServiceMonitor",
        "Temporal UI",
    ):
        assert step in notes, step


def test_everything_on_lints_clean() -> None:
    report = helm.lint(CHART_DIR, EVERYTHING, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
