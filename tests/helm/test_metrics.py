"""The chart's monitoring: the ServiceMonitor, the alerts (run through `promtool test rules` exactly as
the chart renders them) and the Grafana dashboard, all on the metric names agreed with the worker and
the agent."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.registry import CollectorRegistry

from gpuheal.activities import metrics as activity_metrics
from gpuheal.agents.device_api.server import DeviceApiServer
from gpuheal.agents.metrics import AgentMetrics, AgentState
from gpuheal.agents.publisher.metrics import SpoolCollector
from gpuheal.workflows import metrics as workflow_metrics
from tests.chart import CHART_DIR, NAMESPACE, RELEASE, render
from tests.helm.test_chart import SCENARIOS, chart, container, follows, one

__all__ = ["chart"]  # test_chart's fixture

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
ALERTS_TEST = Path(__file__).parent / "alerts_test.yaml"

ON: dict[str, Any] = {
    "agent": {"healthPort": 9465},
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}

# The worker's metrics are declared where they are recorded, through the Temporal runtime's meter
# (`meter.create_counter(NAME, …)`); the agent's are prometheus_client collectors.
WORKER_METRIC_MODULES = (workflow_metrics, activity_metrics)
# What the exporters serve a metric of each kind as (the worker's sets counters_total_suffix, as
# prometheus_client does): the names alerts and panels may query.
EXPOSED = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def worker_metric_kinds() -> dict[str, str]:
    """Each metric the worker's modules create, by name, with its kind, read from their source: the
    first argument of every `create_counter|gauge|histogram*` call, a module constant or a literal."""
    kinds: dict[str, str] = {}
    for module in WORKER_METRIC_MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method = node.func.attr
            if not method.startswith("create_"):
                continue
            first = node.args[0]
            name = getattr(module, first.id) if isinstance(first, ast.Name) else ast.literal_eval(first)
            kinds[name] = "histogram" if method.startswith("create_histogram") else method.removeprefix("create_")
    return kinds


def agent_metric_kinds(socket: Path) -> dict[str, str]:
    """Each metric the agent's collectors yield, by name, with its kind, collected as a scrape would."""
    registry = CollectorRegistry()
    AgentMetrics(registry)
    registry.register(AgentState(DeviceApiServer(socket), lambda: 0.0))
    registry.register(SpoolCollector(dict))
    return {metric.name: metric.type for metric in registry.collect()}


def exposed(kinds: dict[str, str]) -> set[str]:
    return {f"{name}{suffix}" for name, kind in kinds.items() for suffix in EXPOSED[kind]}


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names the worker and the agent serve, as their code declares them."""
    socket = tmp_path_factory.mktemp("agent") / "device-api.sock"
    return exposed(worker_metric_kinds()) | exposed(agent_metric_kinds(socket)) | {"up"}  # Prometheus' own


ALERTS = {
    "GpuhealBreakerTripped",
    "GpuhealRemediationEscalated",
    "GpuhealRemediationStuck",
    "GpuhealApprovalWaitingTooLong",
    "GpuhealAgentNotReporting",
    "GpuhealAgentNeverReported",
    "GpuhealAgentSpoolFilling",
}
# Grafana's own variables, replaced by a duration where promtool parses the dashboard's queries.
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers that are neither functions nor
    keywords, outside label matchers, grouping lists, ranges and strings."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    # An identifier not glued to a number (the "m" of 5m), and not called (a function).
    found = re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*+(?!\s*\()", bare)
    return {match.group() for match in found} - PROMQL_WORDS


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=60)


def rules_file(docs: list[dict[str, Any]], path: Path) -> Path:
    """The rendered PrometheusRule's groups as a Prometheus rules file."""
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    loaded: dict[str, Any] = json.loads(config_map["data"]["gpuheal.json"])
    return loaded


def test_monitoring_is_off_by_default(chart: helm.Chart) -> None:
    docs = render(chart, {})
    assert not [d for d in docs if d["kind"] in {"ServiceMonitor", "PrometheusRule", "Service"}]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]


def test_the_metric_name_parser_finds_the_names_and_only_them() -> None:
    expr = 'sum by (action) (increase(gpuheal_x_total{job="a b"}[15m])) / on (pod) up offset 5m > bool 0.8'
    assert metric_names(expr) == {"gpuheal_x_total", "up"}


def test_the_contract_is_read_from_each_module_that_declares_metrics(contract: set[str]) -> None:
    """Every module's metrics are found, as what the exporters serve: a renamed one leaves the contract."""
    worker = worker_metric_kinds()
    assert {
        workflow_metrics.ESCALATED: "counter",
        workflow_metrics.PHASE_DURATION: "histogram",
        activity_metrics.BREAKER_OPEN: "gauge",
        activity_metrics.REBOOTS: "counter",
        activity_metrics.RUNNING: "gauge",
    }.items() <= worker.items()
    assert {
        "gpuheal_remediations_escalated_total",
        "gpuheal_remediation_phase_duration_seconds_bucket",
        "gpuheal_remediations_running",
        "gpuheal_agent_intake_events_total",  # gpuheal.agents.metrics
        "gpuheal_agent_last_report_timestamp_seconds",
        "gpuheal_agent_spool_limit_bytes",  # gpuheal.agents.publisher.metrics
        "gpuheal_agent_spool_refused_total",
    } <= contract
    assert (
        "gpuheal_remediations_escalated" not in contract
        and "gpuheal_remediation_phase_duration_seconds" not in contract
    )


def test_the_service_monitor_scrapes_the_workers_and_the_agents_on_the_pod_address(chart: helm.Chart) -> None:
    docs = render(chart, {**ON, "worker": {"governorApart": True}})
    monitor = one(docs, "ServiceMonitor", "metrics")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint["relabelings"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = {e["key"]: e["values"] for e in monitor["spec"]["selector"]["matchExpressions"]}
    assert selected["app.kubernetes.io/instance"] == [RELEASE]

    services = {s["metadata"]["labels"]["gpuheal.io/scrape-job"]: s for s in docs if s["kind"] == "Service"}
    # The alerts name the jobs; the ServiceMonitor takes `job` from this label.
    assert monitor["spec"]["jobLabel"] == "gpuheal.io/scrape-job"
    assert set(services) == set(selected["gpuheal.io/scrape-job"]) == {"gpuheal-worker", "gpuheal-agent"}
    workloads = {
        "gpuheal-worker": [one(docs, "Deployment", "worker"), one(docs, "Deployment", "governor")],
        "gpuheal-agent": [one(docs, "DaemonSet", "agent")],
    }
    for job, service in services.items():
        assert service["spec"]["clusterIP"] == "None", "Prometheus scrapes every pod, not one behind a VIP"
        [port] = service["spec"]["ports"]
        assert port["name"] == endpoint["port"]
        for workload in workloads[job]:
            assert service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
            c = container(workload)
            [target] = [p for p in c["ports"] if p["name"] == port["targetPort"]]
            assert target["containerPort"] == port["port"]
            # The worker's exporter binds dual-stack ([::]); the agent every address of each family (*).
            flag, host = ("--metrics-address", "[::]") if job == "gpuheal-worker" else ("--health-address", "*")
            assert follows(c["args"], flag) == f"{host}:{port['port']}"


def test_scraping_needs_the_agent_health_port(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"agent\.healthPort"):
        render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}})


def test_extra_labels_reach_the_operator_objects_and_the_dashboard_carries_the_sidecar_label(
    chart: helm.Chart,
) -> None:
    values = SCENARIOS["everything-on"]
    docs = render(chart, values)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(docs, kind, "metrics")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [config_map] = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    custom = render(
        chart, {"metrics": {"dashboard": {"enabled": True, "labels": {"dashboards": "gpu"}, "namespace": "monitoring"}}}
    )
    [config_map] = [d for d in custom if d["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["dashboards"] == "gpu"
    assert config_map["metadata"]["namespace"] == "monitoring"


def test_the_rendered_rules_are_the_file_and_alert_on_the_contract(chart: helm.Chart, contract: set[str]) -> None:
    [rule] = [d for d in render(chart, ON) if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((CHART_DIR / "files" / "alerts.yaml").read_text())
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {a["alert"] for a in alerts} == ALERTS and len(alerts) == len(ALERTS)
    for alert in alerts:
        assert metric_names(alert["expr"]) <= contract, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


@needs_promtool
def test_promtool_checks_the_rendered_rules_and_each_alert_fires_only_when_it_should(
    chart: helm.Chart, tmp_path: Path
) -> None:
    rules = rules_file(render(chart, ON), tmp_path / "rules.yaml")
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)

    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    tested = promtool("test", "rules", str(tmp_path / ALERTS_TEST.name))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a test that fires it.
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == ALERTS


@needs_promtool
def test_promtool_fails_the_tests_on_a_rule_that_never_fires(chart: helm.Chart, tmp_path: Path) -> None:
    """The test file really constrains the rules: a breaker alert that never fires fails it."""
    docs = render(chart, ON)
    rules = rules_file(docs, tmp_path / "rules.yaml")
    rules.write_text(rules.read_text().replace("(gpuheal_fleet_breaker_open) > 0", "(gpuheal_fleet_breaker_open) > 1"))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)

    tested = promtool("test", "rules", str(tmp_path / ALERTS_TEST.name))
    assert tested.returncode == 1 and "GpuhealBreakerTripped" in tested.stdout + tested.stderr


def test_the_dashboard_is_valid_and_every_panel_queries_the_contract(chart: helm.Chart, contract: set[str]) -> None:
    board = dashboard(render(chart, ON))
    assert board == json.loads((CHART_DIR / "files" / "dashboard.json").read_text())
    assert isinstance(board["schemaVersion"], int) and board["uid"] and board["title"]
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    read: set[str] = set()
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            names = metric_names(target["expr"])
            assert names and names <= contract, (panel["title"], names - contract)
            read |= names
    # What the issue asks the dashboard to show.
    for shown in (
        "gpuheal_agent_gpu_healthy",  # fleet state
        "gpuheal_remediations_running",  # remediations by phase
        "gpuheal_fault_to_service_seconds_bucket",  # MTTR
        "gpuheal_fleet_permits_held",  # budget
        "gpuheal_fleet_breaker_open",  # breaker
    ):
        assert shown in read


@needs_promtool
def test_every_dashboard_query_parses_as_promql(chart: helm.Chart, tmp_path: Path) -> None:
    """promtool cannot check PromQL alone: each query goes through it as a recording rule."""
    board = dashboard(render(chart, ON))
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    rules = [
        {"record": f"gpuheal:dashboard:{i}", "expr": GRAFANA_RANGES.sub("5m", expr)} for i, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout
    broken = path.read_text().replace("sum by (le)", "sum by (le", 1)
    path.write_text(broken)
    assert promtool("check", "rules", str(path)).returncode == 1, "a query that does not parse fails the check"
