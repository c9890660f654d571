"""A quality monitor: reads the inference table joined with its labels, judges windows, publishes alerts.

Every ``poll_s``: read the model's rows not final yet (``read_table`` joins the label
table on read), decode them once (:mod:`inferstream.monitoring.quality_rows`), evaluate
the windows whose predictions or labels changed (:mod:`inferstream.monitoring.quality`),
update the metrics, and for each alert transition not yet published: an evidently
report, the alert on the alerts topic (acknowledged before going on), the webhook; then
the status file. Why the tables and not a stream of its own: see the quality module.

``QualityMonitor(settings, spec).run()`` blocks until ``stop()``; run it in a thread to
embed a monitor in another program. ``step()`` is one round, for tests and benchmarks.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.producer import Producer
from inferstream.errors import ConfigError
from inferstream.metrics import Metrics
from inferstream.monitoring.alerts import WebhookSender
from inferstream.monitoring.quality import Evaluation, QualityEvaluator, Status
from inferstream.monitoring.quality_alerts import make_quality_alert
from inferstream.monitoring.quality_read import load_reference, read_rows
from inferstream.monitoring.quality_report import write_quality_report
from inferstream.monitoring.quality_rows import Rows
from inferstream.monitoring.reports import monitor_state_dir, read_status, reports_dir, write_status
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.table import table_dir
from inferstream.schemas.records import DriftAlert
from inferstream.streams.alert_publish import publish_alert
from inferstream.streams.metrics import QualityMetrics

log = logging.getLogger("inferstream.monitoring")

_RECENT = 200


@dataclass
class QualityStats:
    """Counts since start."""

    rounds: int = 0
    rows: int = 0  # predictions read, summed over rounds
    labelled_rows: int = 0  # of them labelled, summed over rounds
    evaluations: int = 0
    reevaluations: int = 0
    alerts: int = 0
    resolved: int = 0
    reports: int = 0
    bad_records: int = 0  # predictions without the predicted output, in the last round


class QualityMonitor:
    """Watches one model's labelled predictions until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        spec: MonitorSpec,
        *,
        metrics: Metrics | None = None,
        reports: bool = True,
        webhook_transport: httpx.BaseTransport | None = None,
        table_root: Path | None = None,
    ) -> None:
        if spec.quality is None:
            raise ConfigError(f"monitor {spec.name} is a drift monitor: run it with DriftMonitor")
        self.settings = settings
        self.spec = spec
        self.quality = spec.quality
        self.root = table_root or table_dir(settings)
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        self._metrics = self.metrics.part(QualityMetrics)
        self.reports = reports
        self.stats = QualityStats()
        self.published: deque[DriftAlert] = deque(maxlen=_RECENT)
        self.ready = threading.Event()
        self.state_dir = monitor_state_dir(settings, spec.name)
        self.alerts_topic = settings.topics.platform_topics()["drift-alerts"]
        self.reference, self._reference_rows = load_reference(self.root, spec)
        status = read_status(self.state_dir) or {}
        self.evaluator = QualityEvaluator(spec, reference=self.reference, state=status.get("quality"))
        self._metrics.alert_state.labels(spec.name).set(int(self.evaluator.active()))
        self._webhook = (
            WebhookSender(spec.alerting, self.state_dir / "webhook-sent.json", transport=webhook_transport)
            if spec.alerting.webhook
            else None
        )
        self._newest: dict[str, int] = {}
        self._newest_judged: dict[str, int] = {}
        self._stop = threading.Event()
        self._producer: Producer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> QualityStats:
        """Evaluate every ``poll_s`` until ``stop()``."""
        TopicAdmin(self.settings).ensure_platform_topics()
        self._producer = Producer(self.settings, metrics=self.metrics, stage="monitor")
        self.ready.set()
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:  # a table file unreadable now, a disk full: stall, say so, retry
                    log.exception("monitor %s: round failed; retrying in %.1fs", self.spec.name, self.quality.poll_s)
                self._stop.wait(self.quality.poll_s)
        finally:
            self._producer.close()
            if self._webhook is not None:
                self._webhook.close()
        return self.stats

    def stop(self) -> None:
        """Return from ``run()`` after the current round."""
        self._stop.set()

    # -- one round ------------------------------------------------------------------------

    def read(self) -> Rows:
        """The model's rows not final yet, with their labels (empty before the table has any)."""
        return read_rows(self.root, self.spec, since=self.evaluator.since())

    def step(self, rows: Rows | None = None) -> list[DriftAlert]:
        """One round: read (unless given ``rows``), evaluate, publish; the alerts published."""
        rows = self.read() if rows is None else rows
        self.stats.rounds += 1
        self.stats.rows += len(rows)
        self.stats.labelled_rows += int(rows.labelled.sum())
        self.stats.bad_records = rows.bad
        evaluations = self.evaluator.evaluate(rows)
        for evaluation in evaluations:
            self._measured(evaluation)
        sent = []
        for evaluation, status in self.evaluator.transitions():
            sent.append(self._alert(evaluation, status, rows))
        if evaluations or sent:
            write_status(self.state_dir, self.status())
        return sent

    def _measured(self, evaluation: Evaluation) -> None:
        first = evaluation.evaluation == 1
        self.stats.evaluations += 1
        self.stats.reevaluations += int(not first)
        self._metrics.evaluations.labels(self.spec.name, "close" if first else "labels").inc()
        version, window = evaluation.version, evaluation.window
        if window >= self._newest.get(version, window):
            self._newest[version] = window
            self._metrics.labels_seen.labels(self.spec.name, version).set(evaluation.labelled)
            for metric, value in evaluation.estimated.items():
                if value is not None:
                    self._metrics.estimate.labels(self.spec.name, version, metric).set(value)
        if evaluation.degraded is not None and window >= self._newest_judged.get(version, window):
            self._newest_judged[version] = window
            for metric, value in evaluation.metrics.items():
                if value is not None:
                    self._metrics.value.labels(self.spec.name, version, metric).set(value)
        log.info(
            "monitor %s: %s window %s evaluated (#%d) on %d labels of %d predictions: %s",
            self.spec.name,
            version,
            evaluation.when("start").isoformat(),
            evaluation.evaluation,
            evaluation.labelled,
            evaluation.count,
            "no verdict yet" if evaluation.degraded is None else "degraded" if evaluation.degraded else "ok",
        )

    def _alert(self, evaluation: Evaluation, status: Status, rows: Rows) -> DriftAlert:
        report = self._report(evaluation, rows) if self.reports else None
        alert = make_quality_alert(self.spec, evaluation, status, self.reference, report)
        if self._producer is None:
            raise RuntimeError("QualityMonitor.step() publishes alerts: call it from run()")
        publish_alert(self._producer, self.alerts_topic, alert, self._stop)
        self.evaluator.mark_published(evaluation, status)
        self.published.append(alert)
        self._metrics.alerts.labels(self.spec.name, status).inc()
        self._metrics.alert_state.labels(self.spec.name).set(int(self.evaluator.active()))
        if status == "degraded":
            self.stats.alerts += 1
        else:
            self.stats.resolved += 1
        log.warning(
            "monitor %s: %s (%s) %s window %s..%s on %d labels: %s",
            self.spec.name,
            status,
            alert.severity,
            evaluation.version,
            alert.window_start.isoformat(),
            alert.window_end.isoformat(),
            evaluation.labelled,
            ", ".join(evaluation.breaches) or "no breach",
        )
        if self._webhook is not None:
            self._webhook.send(alert)
        return alert

    def _report(self, evaluation: Evaluation, rows: Rows) -> Path | None:
        import numpy as np

        window = np.floor(rows.times / self.spec.window.duration_s) == evaluation.window
        current = rows.take(np.flatnonzero(window & (rows.versions == evaluation.version)))
        try:
            path = write_quality_report(
                reports_dir(self.settings) / self.spec.name,
                self.spec,
                start=evaluation.when("start"),
                end=evaluation.when("end"),
                current=current,
                reference=self._reference_rows,
            )
        except Exception:  # a report is a courtesy: the alert goes out without it
            log.exception("monitor %s: the HTML report of window %s failed", self.spec.name, evaluation.key)
            return None
        self.stats.reports += 1
        return path

    def status(self) -> dict[str, Any]:
        """The latest-status document (also ``status.json``, written after every round that changed something)."""
        latest = max(self.evaluator.windows.values(), key=lambda e: (e.end, e.version), default=None)
        return {
            "monitor": self.spec.name,
            "type": "quality",
            "model": self.spec.model,
            "version": self.spec.version,
            "updated": datetime.now(UTC).isoformat(),
            "alert_active": self.evaluator.active(),
            "last_window": None
            if latest is None
            else {
                "version": latest.version,
                "start": latest.when("start").isoformat(),
                "end": latest.when("end").isoformat(),
                "count": latest.count,
                "labels": latest.labelled,
                "evaluation": latest.evaluation,
                "degraded": latest.degraded,
                "metrics": latest.metrics,
                "estimated": latest.estimated,
            },
            "reference": None
            if not self.quality.has_reference
            else {"labelled": self.reference.count, "metrics": self.reference.metrics},
            "quality": self.evaluator.state(),
            "counts": {
                "rounds": self.stats.rounds,
                "evaluations": self.stats.evaluations,
                "reevaluations": self.stats.reevaluations,
                "alerts": self.stats.alerts,
                "resolved": self.stats.resolved,
                "bad_records": self.stats.bad_records,
            },
            "webhook": None
            if self._webhook is None
            else {"url": self._webhook.url, "delivered": self._webhook.delivered, "failed": self._webhook.failed},
        }
