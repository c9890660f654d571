"""Writes dashboards/inferstream.json, the Grafana dashboard of the compose stack.

    python compose/grafana/dashboard.py           # rewrite the JSON
    python compose/grafana/dashboard.py --check   # exit 1 when the JSON is not this script's output

The JSON is committed beside this script (Grafana provisions it as is); edit the panels
here, not in Grafana's UI. Every expression names metrics of docs/metrics.md only:
tests/unit/test_grafana_prometheus.py parses each one and checks its metrics and labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "inferstream.json"
#: The uid of the provisioned data source (provisioning/datasources/prometheus.yml).
DATASOURCE = {"type": "prometheus", "uid": "inferstream-prometheus"}
#: The model and version chosen in the dashboard's variables.
SERVED = 'model=~"$model", version=~"$version"'
RATE = "[$__rate_interval]"
JOBS = "serve|ingest|monitor|gateway"

Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def panel(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    **extra: Any,
) -> Panel:
    """A panel over (expression, legend) queries; its place is set by :func:`layout`."""
    body: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)],
    }
    body.update(extra)
    return body


def quantiles(metric: str, by: str, matchers: str = "") -> list[tuple[str, str]]:
    """p50, p95 and p99 of a histogram, per the ``by`` labels."""
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{matchers}}}{RATE})))",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def row(title: str) -> Panel:
    """A row heading the panels after it."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "panels": [],
    }


def serving() -> list[Panel]:
    """Throughput, latency and batch size per model and version."""
    return [
        row("Serving ($model $version)"),
        panel(
            "Predictions per second",
            "Rows run through each model version (inferstream_inference_count_total).",
            [
                (
                    f"sum by (model, version) (rate(inferstream_inference_count_total{{{SERVED}}}{RATE}))",
                    "{{model}} v{{version}}",
                )
            ],
            unit="ops",
        ),
        panel(
            "Requests by outcome",
            "Requests a worker is done with: success, or failure (dead-lettered).",
            [
                (
                    f"sum by (model, version, outcome) (rate(inferstream_inference_requests_total{{{SERVED}}}{RATE}))",
                    "{{model}} v{{version}} {{outcome}}",
                )
            ],
            unit="reqps",
        ),
        panel(
            "End-to-end latency",
            "Per request, from its event time to its prediction.",
            quantiles("inferstream_inference_request_seconds", "model, version", SERVED),
            unit="s",
        ),
        panel(
            "Queue and compute latency (p95)",
            "Queue: consumed to batch start, per request. Compute: the model's run on one batch.",
            [
                (query, f"{step} {legend}")
                for step in ("queue", "compute")
                for query, legend in quantiles(f"inferstream_inference_{step}_seconds", "model, version", SERVED)[1:2]
            ],
            unit="s",
        ),
        panel(
            "Model batch size",
            "Mean rows per model execution, and p95 of the records per consumed batch by stage.",
            [
                (
                    f"sum by (model, version) (rate(inferstream_inference_batch_size_sum{{{SERVED}}}{RATE}))"
                    f" / sum by (model, version) (rate(inferstream_inference_batch_size_count{{{SERVED}}}{RATE}))",
                    "mean {{model}} v{{version}}",
                ),
                *quantiles("inferstream_batch_size", "stage")[1:2],
            ],
        ),
        panel(
            "Executions per second",
            "Model executions (batches) per model version.",
            [
                (
                    f"sum by (model, version) (rate(inferstream_inference_exec_count_total{{{SERVED}}}{RATE}))",
                    "{{model}} v{{version}}",
                )
            ],
            unit="ops",
        ),
    ]


def streams() -> list[Panel]:
    """Lag, dead letters and the per-stage reconciliation."""
    return [
        row("Kafka stages"),
        panel(
            "Consumer lag",
            "Messages behind the end of each partition, per consumer group.",
            [("max by (group, topic, partition) (inferstream_consumer_lag)", "{{group}} {{topic}}[{{partition}}]")],
        ),
        panel(
            "Dead letters",
            "Records sent to the dead-letter topic, by stage and error class.",
            [
                (
                    f"sum by (stage, error_class) (rate(inferstream_dead_letters_total{RATE}))",
                    "{{stage}} {{error_class}}",
                )
            ],
            unit="rps",
        ),
        panel(
            "Records in and out per stage",
            "Consumed records, and what each stage did with them (out, dead_letter, skipped, invalid).",
            [
                (f"sum by (stage) (rate(inferstream_records_in_total{RATE}))", "{{stage}} in"),
                (
                    f"sum by (stage, outcome) (rate(inferstream_records_handled_total{RATE}))",
                    "{{stage}} {{outcome}}",
                ),
                (f"sum by (stage) (rate(inferstream_records_out_total{RATE}))", "{{stage}} produced"),
            ],
            unit="rps",
        ),
        panel(
            "In flight per stage (in − handled)",
            "Reconciliation: consumed records not yet out, dead-lettered, skipped or invalid. "
            "It returns to 0 once nothing is in flight.",
            [
                (
                    "sum by (stage) (inferstream_records_in_total)"
                    " - sum by (stage) (inferstream_records_handled_total)",
                    "{{stage}}",
                )
            ],
        ),
        panel(
            "Step time per batch (p95)",
            "Time per batch in each step of a stage.",
            quantiles("inferstream_stage_seconds", "stage, step")[1:2],
            unit="s",
        ),
        panel(
            "Delivery errors",
            "Produced records the broker did not acknowledge.",
            [(f"sum by (topic, code) (rate(inferstream_delivery_errors_total{RATE}))", "{{topic}} {{code}}")],
            unit="rps",
        ),
    ]


def sinks() -> list[Panel]:
    """The vector index and the inference table."""
    return [
        row("Index and inference table"),
        panel(
            "Index freshness",
            "Per document: from its event time to the index acknowledging the write.",
            quantiles("inferstream_index_freshness_seconds", "index"),
            unit="s",
        ),
        panel(
            "Documents indexed and deleted",
            "Documents written and tombstones applied, committed.",
            [
                (f"sum by (index) (rate(inferstream_index_documents_indexed_total{RATE}))", "{{index}} indexed"),
                (f"sum by (index) (rate(inferstream_index_documents_deleted_total{RATE}))", "{{index}} deleted"),
            ],
            unit="ops",
        ),
        panel(
            "Inference table",
            "Prediction rows and Parquet files renamed into place.",
            [
                (f"sum(rate(inferstream_table_rows_written_total{RATE}))", "rows"),
                (f"sum(rate(inferstream_table_files_written_total{RATE}))", "files"),
            ],
            unit="ops",
            width=24,
        ),
    ]


_ALERT_STATES = [
    {"type": "value", "options": {"0": {"text": "no drift", "color": "green", "index": 0}}},
    {"type": "value", "options": {"1": {"text": "drifting", "color": "yellow", "index": 1}}},
    {"type": "value", "options": {"2": {"text": "alert open", "color": "red", "index": 2}}},
]
_DASHED = {
    "matcher": {"id": "byRegexp", "options": "/threshold/"},
    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
}


def drift() -> list[Panel]:
    """Scores against thresholds, and each monitor's alert state."""
    scores = panel(
        "Drift score per column",
        "Each column's drift statistic in the last closed window; dashed: the threshold at which it drifts.",
        [
            ("max by (monitor, column) (inferstream_drift_score)", "{{monitor}} {{column}}"),
            ("max by (monitor, column) (inferstream_drift_threshold)", "{{monitor}} {{column}} threshold"),
        ],
        width=24,
    )
    scores["fieldConfig"]["overrides"].append(_DASHED)
    state = panel(
        "Drift alert state",
        "0: no drift; 1: the last window drifted, no alert open yet; 2: an alert is open.",
        [("max by (monitor) (inferstream_drift_alert_state)", "{{monitor}}")],
        kind="state-timeline",
    )
    state["fieldConfig"]["defaults"]["mappings"] = _ALERT_STATES
    return [
        row("Drift"),
        scores,
        state,
        panel(
            "Drifted share of columns",
            "Share of the monitored columns that drifted in the last closed window.",
            [("max by (monitor) (inferstream_drift_share_ratio)", "{{monitor}}")],
            unit="percentunit",
        ),
        panel(
            "Drift alerts published",
            "Alerts published in the last hour, by status.",
            [("sum by (monitor, status) (increase(inferstream_drift_alerts_total[1h]))", "{{monitor}} {{status}}")],
        ),
        panel(
            "Windows closed",
            "Windows closed in the last hour, by whether the dataset drifted.",
            [("sum by (monitor, drifted) (increase(inferstream_drift_windows_total[1h]))", "{{monitor}} {{drifted}}")],
        ),
    ]


def gateway() -> list[Panel]:
    """Requests by route and status, latency, stream clients."""
    return [
        row("Gateway"),
        panel(
            "Requests by route and status",
            "HTTP requests answered, by route template and status.",
            [(f"sum by (route, status) (rate(inferstream_gateway_requests_total{RATE}))", "{{route}} {{status}}")],
            unit="reqps",
        ),
        panel(
            "Latency by route (p95)",
            "Time to answer a request (streams: until the stream opened).",
            quantiles("inferstream_gateway_request_seconds", "route")[1:2],
            unit="s",
        ),
        panel(
            "Prediction stream",
            "Clients reading the stream, predictions sent, clients dropped for falling behind.",
            [
                ("sum(inferstream_gateway_stream_clients)", "clients"),
                (f"sum(rate(inferstream_gateway_stream_sent_total{RATE}))", "sent/s"),
                (f"sum(rate(inferstream_gateway_stream_dropped_total{RATE}))", "dropped/s"),
            ],
            width=24,
        ),
    ]


def processes() -> list[Panel]:
    """Scrape targets, the autoscale supervisor and the firing alerts."""
    up = panel(
        "Processes up",
        "Each scraped process: 1 when its last scrape answered.",
        [(f'up{{job=~"{JOBS}"}}', "{{job}} {{instance}}")],
        kind="state-timeline",
    )
    up["fieldConfig"]["defaults"]["mappings"] = [
        {"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0}}},
        {"type": "value", "options": {"1": {"text": "up", "color": "green", "index": 1}}},
    ]
    alerts: Panel = {
        "type": "alertlist",
        "title": "Firing and pending alerts",
        "description": "The rules of compose/prometheus/rules.yml that fire or are pending.",
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "maxItems": 20,
            "sortOrder": 1,
            "dashboardAlerts": False,
            "alertName": "",
            "alertInstanceLabelFilter": "",
            "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True},
        },
    }
    return [
        row("Processes"),
        up,
        alerts,
        panel(
            "Supervisor replicas and lag",
            "Worker copies of each autoscaled group, and the requests the group has not committed.",
            [
                ("sum by (group) (inferstream_supervisor_replicas)", "{{group}} replicas"),
                ("sum by (group) (inferstream_supervisor_lag)", "{{group}} lag"),
            ],
            width=24,
        ),
    ]


def layout(panels: list[Panel]) -> list[Panel]:
    """Number the panels and place them left to right, top to bottom, rows across the page."""
    x = y = height = 0
    for number, item in enumerate(panels, start=1):
        grid = item["gridPos"]
        if x + grid["w"] > 24 or item["type"] == "row":
            x, y, height = 0, y + height, 0
        grid["x"], grid["y"] = x, y
        x, height = x + grid["w"], max(height, grid["h"])
        item["id"] = number
    return panels


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
        "regex": "",
    }


def build() -> dict[str, Any]:
    """The dashboard, as Grafana's JSON model."""
    return {
        "uid": "inferstream",
        "title": "inferstream",
        "description": "Serving, Kafka stages, sinks, drift and the gateway of an inferstream stack (docs/metrics.md).",
        "tags": ["inferstream"],
        "timezone": "browser",
        "schemaVersion": 41,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {
            "list": [
                {
                    "name": "Drift alerts",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'sum by (monitor) (increase(inferstream_drift_alerts_total{status="drift"}[2m])) > 0',
                    "step": "1m",
                    "titleFormat": "drift alert",
                    "textFormat": "{{monitor}}",
                }
            ]
        },
        "templating": {
            "list": [
                _variable("model", "label_values(inferstream_inference_count_total, model)"),
                _variable("version", 'label_values(inferstream_inference_count_total{model=~"$model"}, version)'),
            ]
        },
        "panels": layout([*serving(), *streams(), *sinks(), *drift(), *gateway(), *processes()]),
    }


def render() -> str:
    """The JSON text written to :data:`OUTPUT`."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the dashboard, or with ``--check`` say whether the committed one is current."""
    if "--check" in argv:
        current = OUTPUT.read_text() == render()
        print(f"{OUTPUT} is {'current' if current else 'stale: run python compose/grafana/dashboard.py'}")
        return 0 if current else 1
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
