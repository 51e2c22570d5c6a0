"""Alert rules, the Grafana dashboard and the compose monitoring config, checked with promtool and the registry.

A renamed metric, a PromQL typo or an alert without a test fails here, so it fails CI before it fails on call.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, start_http_server

from app.metrics import TRAINER_REGISTRY  # importing app.metrics registers every metric of the app

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fraud-detector.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "fraud-detector.yml"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus makes itself, not the worker: scrape health and the alerts' own state.
PROMETHEUS_SERIES = {"up", "ALERTS"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}  # fmt: skip
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: run scripts/install_system_packages.sh (Debian package prometheus)"
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def exported_names() -> set[str]:
    """Every series name ``/metrics`` can carry, from the registries' families and their types' suffixes: the
    worker's and its trainer process's (appended to the worker's ``/metrics``)."""
    names = set()
    for family in [*REGISTRY.collect(), *TRAINER_REGISTRY.collect()]:
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, keywords, labels and durations left out).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x="y"}[5m])) / on (i) group_left b > 0.5 and up == 0'))
    ['a_bucket', 'b', 'up']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, quantile labels
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        if name.lower() in PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function call
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(name)
    return names


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - exported_names() - PROMETHEUS_SERIES


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


# ---- alert rules ---------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    output = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_alert_rules_unit_tests_pass_and_exercise_every_alert_firing_and_not() -> None:
    run_promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_promtool_rule_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests catch a changed threshold: the same tests against rules whose lag limit went up fail."""
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace("fraud_consumer_lag_records) > 10000",
                                                                   "fraud_consumer_lag_records) > 50000"))  # fmt: skip
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run([promtool(), "test", "rules", ALERT_TESTS.name], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and "FraudConsumerLagHigh" in result.stdout + result.stderr


def test_every_alert_has_severity_duration_and_annotations() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_alert_exprs_read_only_exported_metrics() -> None:
    for rule in alert_rules():
        assert metric_names(rule["expr"]), rule["alert"]
        assert unknown_names(rule["expr"]) == set(), rule["alert"]


# ---- compose and Prometheus config ---------------------------------------------------------------------------


def test_compose_prometheus_loads_the_rules_and_its_config_passes_promtool(tmp_path: Path) -> None:
    compose = load_yaml(COMPOSE)["services"]
    mounts = dict(v.removesuffix(":ro").split(":", 1)[::-1] for v in compose["prometheus"]["volumes"])
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"], "Prometheus loads no rules"
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).resolve() == ALERTS  # the container path is the mounted alerts.yml
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    config["rule_files"] = [str(ALERTS)]  # the same config as the container sees it, with host paths
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run_promtool("check", "config", str(tmp_path / "prometheus.yml"))


def test_compose_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    mounts = {v.split(":")[1]: (ROOT / v.split(":")[0]).resolve() for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == DATASOURCES.parent.parent
    dashboards_dir = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts[dashboards_dir] == DASHBOARD.parent
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    used = {target["datasource"]["uid"] for _, target in dashboard_targets()}
    assert used == {datasource["uid"]}


# ---- dashboard -------------------------------------------------------------------------------------------------


def test_dashboard_has_grafana_schema_fields() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel["type"] in {"stat", "timeseries", "table", "gauge", "bargauge"}, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh") and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_shows_what_an_operator_needs() -> None:
    exprs = " ".join(target["expr"] for _, target in dashboard_targets())
    for metric in ("fraud_transactions_total", "fraud_scoring_latency_seconds_bucket", "fraud_dead_letters_total",
                   "fraud_health_status", "fraud_model_info", "fraud_terminal_feed_lag_seconds",
                   "fraud_consumer_lag_records", "fraud_customer_states", "fraud_terminal_states",
                   "fraud_learning_entries", "fraud_model_labels_learned"):  # fmt: skip
        assert metric in exprs, metric
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(fraud_scoring_latency_seconds_bucket" in exprs


def test_dashboard_exprs_read_only_exported_metrics() -> None:
    for title, target in dashboard_targets():
        assert metric_names(target["expr"]), title
        assert unknown_names(target["expr"]) == set(), f"{title}: {target['expr']}"


def test_the_committed_dashboard_is_what_its_generator_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON is built with grafana-foundation-sdk by ``scripts/grafana_dashboard.py``: edited by hand, it fails."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    generator = importlib.import_module("grafana_dashboard")
    assert DASHBOARD.read_text() == generator.render(), "run python scripts/grafana_dashboard.py"
    changed = json.loads(generator.render())
    changed["panels"][0]["title"] = "Health"
    assert json.dumps(changed, indent=2, sort_keys=True) + "\n" != DASHBOARD.read_text()


def test_the_drift_panels_query_the_drift_metrics() -> None:
    """Without labels (every worker's PSI, status and alert rates) and with them (the trainer's error detectors)."""
    drift = [(title, target["expr"]) for title, target in dashboard_targets() if title.startswith("Drift")]
    exprs = " ".join(expr for _, expr in drift)
    for metric in ("fraud_drift_psi", "fraud_drift_detected", "fraud_drift_alert_rate", "fraud_model_rolling_quality"):
        assert metric in exprs, metric
    assert 'metric="error_drift"' in exprs and 'feature="fraud_probability"' in exprs
    assert all(unknown_names(expr) == set() for _, expr in drift), drift


def test_a_renamed_metric_is_caught() -> None:
    assert unknown_names('sum(rate(fraud_transactions_total{outcome="scored"}[1m]))') == set()
    assert unknown_names("sum(rate(fraud_transaction_total[1m]))") == {"fraud_transaction_total"}
    assert unknown_names("fraud_scoring_latency_ms_bucket") == {"fraud_scoring_latency_ms_bucket"}


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query as a recording rule: ``promtool check rules`` parses it (a syntax error fails here)."""
    rules = [{"record": f"dashboard:query_{i}", "expr": target["expr"]} for i, (_, target) in
             enumerate(dashboard_targets())]  # fmt: skip
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in output


@pytest.mark.parametrize("expr", ["sum(rate(fraud_transactions_total[1m])", "histogram_quantile(0.99 fraud_score)"])
def test_promql_check_rejects_a_syntax_error(tmp_path: Path, expr: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"record": "bad:query", "expr": expr}]}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, timeout=60)
    assert result.returncode != 0


# ---- the demo's Prometheus -------------------------------------------------------------------------------------


def test_the_demo_prometheus_scrapes_metrics_and_loads_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scripts/prometheus_local.py`` as ``make demo`` uses it, against this process's registry served over HTTP."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    prometheus_local = importlib.import_module("prometheus_local")
    local_processes = importlib.import_module("local_processes")
    port = local_processes.free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    started = prometheus_local.start([f"127.0.0.1:{port}"], tmp_path / "prometheus", interval_s=1)
    assert started is not None, "no prometheus binary: run scripts/install_system_packages.sh (package prometheus)"
    process, url = started
    try:
        run_promtool("check", "config", str(tmp_path / "prometheus" / "prometheus.yml"))
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith("targets {'up': 1}"):
            time.sleep(0.5)
            line = prometheus_local.status_line(url)
        assert line.startswith(f"targets {{'up': 1}}, {len(alert_rules())} alert rules loaded"), line
        scraped = prometheus_local.api(url, "/api/v1/query?query=fraud_decision_batch_seconds_count")["result"]
        assert scraped and scraped[0]["metric"]["job"] == prometheus_local.JOB
    finally:
        local_processes.stop_process(process)
        server.shutdown()
        thread.join(5)
    assert process.returncode == 0
