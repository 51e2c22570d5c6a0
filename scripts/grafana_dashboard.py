#!/usr/bin/env python3
"""The Grafana dashboard (deploy/grafana/dashboards/fraud-detector.json), built with Grafana's own Python SDK.

    python scripts/grafana_dashboard.py            # writes the JSON
    python scripts/grafana_dashboard.py --check    # exit 1 when the committed JSON is not what this script makes

grafana-foundation-sdk gives typed builders of the dashboard schema (a misspelt option is an error here, not a
panel Grafana silently shows empty), so the panels are declared below, one entry each, and the JSON is generated;
``tests/test_monitoring_config.py`` checks that the committed file equals the output and that every query reads
metrics the worker exports. Edit this script, not the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards" / "fraud-detector.json"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioning's datasource uid


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False  # a table's: one value now, as a table


@dataclass(frozen=True)
class Panel:
    kind: str  # timeseries, stat, table
    title: str
    description: str
    grid: tuple[int, int, int, int]  # x, y, w, h
    queries: tuple[Query, ...]
    unit: str = ""
    color: str = ""  # a stat's fixed colour
    text_mode: str = ""  # a stat's: name or value
    colors_by_regexp: tuple[tuple[str, str], ...] = ()  # series name pattern, fixed colour
    thresholds: tuple[tuple[float, str], ...] = ()  # drawn as dashed lines on a time series
    extra: dict[str, Any] = field(default_factory=dict)


H = "Each worker's status from its health window (app/monitoring/health.py): healthy, degraded, stale or unhealthy."
PANELS = (
    Panel("stat", "Health status", H, (0, 0, 8, 4), (Query("fraud_health_status == 1", "{{instance}}: {{status}}"),),
          color="green", text_mode="name",
          colors_by_regexp=((".*: degraded", "yellow"), (".*: stale", "orange"), (".*: unhealthy", "red"))),
    Panel("stat", "Model version", "The model that scores, per worker.", (8, 0, 5, 4),
          (Query("fraud_model_info == 1", "{{version}}"),), color="blue", text_mode="name"),
    Panel("stat", "Workers up", "Workers Prometheus scrapes successfully.", (13, 0, 3, 4),
          (Query('sum(up{job="fraud-worker"})', "up"),), text_mode="value"),
    Panel("table", "Firing alerts", "Alert rules of deploy/prometheus/alerts.yml that fire now.", (16, 0, 8, 4),
          (Query('sum by (alertname, severity, instance) (ALERTS{alertstate="firing"})', instant=True),)),
    Panel("timeseries", "Throughput", "Input transactions by outcome, all workers.", (0, 4, 12, 8), (
        Query('sum(rate(fraud_transactions_total{outcome="scored"}[1m]))', "scored/s"),
        Query('sum(rate(fraud_transactions_total{outcome="dead_letter"}[1m]))', "dead-lettered/s"),
        Query("sum(rate(fraud_predicted_fraud_total[1m]))", "predicted fraud/s")), unit="ops"),
    Panel("timeseries", "Decision latency (receipt to committed prediction)",
          "Percentiles estimated from the histogram's buckets over 1 minute.", (12, 4, 12, 8), tuple(
              Query(f"histogram_quantile({q}, sum by (le) (rate(fraud_scoring_latency_seconds_bucket[1m])))",
                    f"p{q[2:].ljust(2, '0')}") for q in ("0.5", "0.95", "0.99")), unit="s"),
    Panel("timeseries", "Dead letters by code",
          "Messages sent to a dead-letter topic per second, by input topic and error code.",
          (0, 12, 8, 8), (Query("sum by (input, error) (rate(fraud_dead_letters_total[1m]))", "{{input}} {{error}}"),),
          unit="ops"),
    Panel("timeseries", "Consumer lag",
          "Input records not committed yet, per loop (last stable offset minus the next offset to process).",
          (8, 12, 8, 8),
          (Query("sum by (loop) (fraud_consumer_lag_records)", "{{loop}}"),), unit="short"),
    Panel("timeseries", "Terminal feed lag (feature freshness)",
          "How late a worker reads the other scorers' terminal log: its 1-hour terminal counts miss that gap.",
          (16, 12, 8, 8),
          (Query("max by (instance) (fraud_terminal_feed_lag_seconds)", "{{instance}}"),), unit="s"),
    Panel("timeseries", "State size", "Entries held in memory by the workers.",
          (0, 20, 8, 8), (Query("sum(fraud_customer_states)", "customer states"),
                          Query("max(fraud_terminal_states)", "terminal states (each worker holds all)"),
                          Query("sum(fraud_learning_entries)", "pending learning entries")), unit="short"),
    Panel("timeseries", "Labels learned", "Labels the current model has learned from.", (8, 20, 8, 8),
          (Query("max by (instance) (fraud_model_labels_learned)", "learned, {{instance}}"),), unit="short"),
    Panel("timeseries", "Labels by outcome", "Labels received, learned, expired or dead-lettered per second.",
          (16, 20, 8, 8),
          (Query("sum by (outcome) (rate(fraud_labels_total[5m]))", "{{outcome}}"),), unit="ops"),
    Panel("timeseries", "Decision batches",
          "Time to process and commit one partition's batch in one Kafka transaction.", (0, 28, 8, 8), (
        Query("histogram_quantile(0.99, sum by (le) (rate(fraud_decision_batch_seconds_bucket[1m])))",
              "p99 batch time"),
        Query("sum(rate(fraud_decision_batch_seconds_sum[1m])) / sum(rate(fraud_decision_batch_seconds_count[1m]))",
              "mean batch time")), unit="s"),
    Panel("timeseries", "Records per batch", "", (8, 28, 8, 8), (
        Query("sum(rate(fraud_decision_batch_records_sum[1m])) / sum(rate(fraud_decision_batch_records_count[1m]))",
              "mean"),), unit="short"),
    Panel("timeseries", "Late transactions and expiries", "",
          (16, 28, 8, 8), (Query("sum(rate(fraud_late_transactions_total[5m]))", "late transactions/s"),
                           Query("sum(rate(fraud_customers_expired_total[5m]))", "customers expired/s"),
                           Query("sum(rate(fraud_terminals_expired_total[5m]))", "terminals expired/s")), unit="ops"),
    Panel("timeseries", "Predicted fraud share and mean score", "",
          (0, 36, 12, 8), (
              Query('sum(rate(fraud_predicted_fraud_total[5m])) / sum(rate(fraud_transactions_total{outcome="scored"}'
                    "[5m]))", "share over the threshold"),
              Query("sum(rate(fraud_score_sum[5m])) / sum(rate(fraud_score_count[5m]))", "mean score")),
          unit="percentunit"),
    Panel("timeseries", "Model rolling quality (champion and challenger)",
          "Rolling quality on labelled transactions of the newest champion and challenger versions, from their "
          "snapshots.", (12, 36, 12, 8),
          (Query('max by (role, metric) (fraud_model_rolling_quality{metric=~"auc|ap|precision|recall"})',
                 "{{role}} {{metric}}"),), unit="none"),
    Panel("timeseries", "Trainer and model snapshots",
          "The trainer lease (one worker trains) and model snapshots refused before loading, by reason.",
          (0, 44, 12, 8), (Query("sum(fraud_trainer_active)", "workers training (lease held)"),
                           Query("sum by (reason) (increase(fraud_model_snapshots_refused_total[10m]))",
                                 "snapshots refused in 10 min: {{reason}}")), unit="short"),
    Panel("timeseries", "Analysts' rules: matches and decisions",
          "Share of the scored transactions each rule matched (active: deciding, shadow: recorded only), and the "
          "decisions by kind (the rules and the model).", (12, 44, 12, 8), (
              Query("sum by (rule, state) (rate(fraud_rule_matches_total[5m])) / on () group_left "
                    'sum(rate(fraud_transactions_total{outcome="scored"}[5m]))', "{{rule}} ({{state}})"),
              Query("sum by (decision) (rate(fraud_decisions_total[5m])) / on () group_left "
                    'sum(rate(fraud_transactions_total{outcome="scored"}[5m]))', "decision {{decision}}")),
          unit="percentunit"),
    # Drift (issue 19): without labels on every worker (app/monitoring/drift.py), with labels in the trainer.
    Panel("timeseries", "Drift: features (PSI against the reference)",
          "Population stability index of each feature's sampled window against the worker's reference: 0.1 warn, "
          "0.25 drift (FraudFeatureDrift). python -m app drift prints the table.", (0, 52, 12, 8),
          (Query('max by (feature) (fraud_drift_psi{feature!="fraud_probability"})', "{{feature}}"),),
          unit="none", thresholds=((0.1, "yellow"), (0.25, "red"))),
    Panel("timeseries", "Drift: score PSI and status",
          "The fraud score's PSI against the reference (FraudScoreDrift) and 1 while a worker's drift status is "
          "drift (its health degraded).", (12, 52, 12, 8),
          (Query('max by (instance) (fraud_drift_psi{feature="fraud_probability"})', "score PSI {{instance}}"),
           Query("max by (instance) (fraud_drift_detected)", "in drift {{instance}}")),
          unit="none", thresholds=((0.25, "red"),)),
    Panel("timeseries", "Drift: alert rate now and in the reference",
          "Share of sampled transactions at or over the threshold, in the current window and in the reference "
          "(FraudAlertRateJump: doubled and significant).", (0, 60, 12, 8),
          (Query("max by (instance, window) (fraud_drift_alert_rate)", "{{window}} {{instance}}"),),
          unit="percentunit"),
    Panel("timeseries", "Drift with labels: error detectors",
          "The trainer's ADWIN on each line's error |label - score|: 1 for a window of labels after its mean rose "
          "(FraudModelErrorRise); the error's mean beside it.", (12, 60, 12, 8),
          (Query('max by (role) (fraud_model_rolling_quality{metric="error_drift"})', "error rose: {{role}}"),
           Query('max by (role) (fraud_model_rolling_quality{metric="error"})', "mean error: {{role}}")),
          unit="none"),
)  # fmt: skip


def _target(query: Query, ref_id: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().ref_id(ref_id).datasource(DATASOURCE).expr(query.expr)
    target = target.legend_format(query.legend)
    if query.instant:
        target = target.format(prometheus_models.PromQueryFormat.TABLE).instant()
    return target


def _fixed(colour: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": colour}


def _panel(number: int, spec: Panel) -> Any:
    x, y, w, h = spec.grid
    builder: Any
    if spec.kind == "stat":
        builder = stat.Panel().reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        builder = builder.graph_mode(common_models.BigValueGraphMode.NONE)
        builder = builder.text_mode(common_models.BigValueTextMode(spec.text_mode))
        builder = builder.color_mode(common_models.BigValueColorMode.BACKGROUND if spec.color
                                     else common_models.BigValueColorMode.VALUE)  # fmt: skip
        if spec.color:
            builder = builder.color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.FIXED)
                                           .fixed_color(spec.color))  # fmt: skip
        for pattern, colour in spec.colors_by_regexp:
            builder = builder.override_by_regexp(
                pattern, [models.DynamicConfigValue(id_val="color", value=_fixed(colour))]
            )
    elif spec.kind == "table":
        builder = table.Panel().show_header(True)
    else:
        builder = timeseries.Panel()
        builder = builder.legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        builder = builder.tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI)
                                  .sort(common_models.SortOrder.NONE))  # fmt: skip
        if spec.thresholds:
            steps = [models.Threshold(value=None, color="green")]
            steps += [models.Threshold(value=value, color=colour) for value, colour in spec.thresholds]
            builder = builder.thresholds(dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE)
                                         .steps(steps))  # fmt: skip
            builder = builder.thresholds_style(common.GraphThresholdsStyleConfig()
                                               .mode(common_models.GraphTresholdsStyleMode.DASHED))  # fmt: skip
    builder = builder.id(number).title(spec.title).description(spec.description).datasource(DATASOURCE)
    builder = builder.grid_pos(models.GridPos(x=x, y=y, w=w, h=h))
    if spec.unit:
        builder = builder.unit(spec.unit)
    return builder.targets([_target(q, chr(ord("A") + i)) for i, q in enumerate(spec.queries)])


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("Fraud detector")
        .uid("fraud-detector")
        .description(
            "Workers of the streaming fraud detector: traffic, latency, dead letters, health, lag, state, "
            "learning, drift."
        )  # fmt: skip
        .tags(["fraud", "kafka"])
        .timezone("utc")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .refresh("10s")
        .time("now-30m", "now")
    )
    for number, spec in enumerate(PANELS, 1):
        board = board.with_panel(_panel(number, spec))
    data: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return data


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        same = OUT.read_text() == text
        print(f"{OUT.relative_to(ROOT)} {'is' if same else 'is NOT'} what scripts/grafana_dashboard.py makes")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(PANELS)} panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
