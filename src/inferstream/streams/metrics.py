"""The metric sets of the stream processors: the index sink, the inference-table sink, drift monitors.

Each is created once per registry (``metrics.part(IndexMetrics)``) and updated once
per flush or per closed window, never per record.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

from inferstream.metrics import BulkHistogram, Metrics
from inferstream.monitoring.stats import Score

#: Freshness buckets in seconds: a second to a day (an index rebuilt from a backfill lags hours).
_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class IndexMetrics:
    """Documents written to and deleted from the vector index, and how fresh they are."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg = metrics.namespace, metrics.registry
        self.indexed = Counter(
            "index_documents_indexed", "Documents written (inserted or replaced) and committed.", ["index"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.deleted = Counter(
            "index_documents_deleted", "Documents deleted (tombstones) and committed.", ["index"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.freshness = BulkHistogram(
            "index_freshness_seconds",
            "Per document written: from its event time to the index acknowledging the write.",
            ["index"],
            _FRESHNESS_BUCKETS,
            namespace=ns,
            registry=reg,
        )


class TableMetrics:
    """Rows and files the inference-table sink wrote."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg = metrics.namespace, metrics.registry
        self.rows = Counter(
            "table_rows_written",
            "Prediction rows written to Parquet files renamed into place (a columnar prediction counts its rows).",
            namespace=ns,
            registry=reg,
        )
        self.files = Counter("table_files_written", "Parquet files renamed into place.", namespace=ns, registry=reg)


#: ``drift_alert_state``: no drift in the last window; the last window drifted but no alert
#: is open (not enough drifted windows yet, or cooling down); an alert is open.
ALERT_OK, ALERT_PENDING, ALERT_ACTIVE = 0, 1, 2


class MonitorMetrics:
    """Drift per monitor and column, windows, alerts and the alert state."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg = metrics.namespace, metrics.registry
        self.score = Gauge(
            "drift_score", "The column's drift statistic in the monitor's last closed window.",
            ["monitor", "column", "method"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.threshold = Gauge(
            "drift_threshold", "The score at which the column counts as drifted.",
            ["monitor", "column", "method"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.column_drifted = Gauge(
            "drift_column_drifted", "1 when the column drifted in the last closed window, else 0.",
            ["monitor", "column"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.share = Gauge(
            "drift_share_ratio", "Share of the monitored columns that drifted in the last closed window.",
            ["monitor"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.windows = Counter(
            "drift_windows", "Windows closed, by whether the dataset drifted.", ["monitor", "drifted"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.alerts = Counter(
            "drift_alerts", "Alerts published, by status (drift, resolved).", ["monitor", "status"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.alert_state = Gauge(
            "drift_alert_state", "0: no drift; 1: the last window drifted, no alert open; 2: an alert is open.",
            ["monitor"], namespace=ns, registry=reg,
        )  # fmt: skip

    def window(self, monitor: str, scores: Mapping[str, Score | None], share: float, drifted: bool) -> None:
        """A closed window's scores and verdict."""
        for column, found in scores.items():
            if found is None:
                continue  # no usable values in this window: the last score stands
            self.score.labels(monitor, column, found.method).set(found.score)
            self.threshold.labels(monitor, column, found.method).set(found.threshold)
            self.column_drifted.labels(monitor, column).set(int(found.drifted))
        self.share.labels(monitor).set(share)
        self.windows.labels(monitor, "true" if drifted else "false").inc()

    def state(self, monitor: str, *, active: bool, drifted: bool) -> None:
        """The alert state after a window (or at start, from the restored state)."""
        self.alert_state.labels(monitor).set(ALERT_ACTIVE if active else ALERT_PENDING if drifted else ALERT_OK)


class QualityMetrics:
    """Quality per monitor, version and metric: realised, estimated (CBPE), labels seen, alerts."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg = metrics.namespace, metrics.registry
        self.value = Gauge(
            "quality_value", "The metric realised on the labels of the newest window with a verdict.",
            ["monitor", "version", "metric"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.estimate = Gauge(
            "quality_estimate", "The metric estimated from the probabilities (CBPE) in the newest closed window.",
            ["monitor", "version", "metric"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.labels_seen = Gauge(
            "quality_labels_seen", "Labelled predictions in the newest closed window, as of its last evaluation.",
            ["monitor", "version"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.evaluations = Counter(
            "quality_evaluations", "Window evaluations, by trigger (close: the first; labels: re-evaluated).",
            ["monitor", "trigger"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.alerts = Counter(
            "quality_alerts", "Quality alerts published, by status (degraded, resolved).", ["monitor", "status"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.alert_state = Gauge(
            "quality_alert_state", "1 while a quality alert of the monitor is open, else 0.", ["monitor"],
            namespace=ns, registry=reg,
        )  # fmt: skip
