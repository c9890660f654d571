"""A drift monitor: one consumer on the predictions topic, windows, statistics, alerts, reports.

Each monitor is a consumer group of its own (``<prefix>monitor-<name>``), so
its one member reads every partition. Per batch: decode once into columns
(:mod:`inferstream.monitoring.extract`), fold into panes
(:mod:`inferstream.monitoring.window`); per closed window: the statistics against
the reference, the alert hysteresis, and, when an alert opens or clears, an
evidently HTML report, a ``drift-alert`` record (acknowledged before going on)
and the webhook. Then the status file is written and the offsets of the oldest
records still in open panes are committed: a restart replays the open window.

``DriftMonitor(settings, spec).run()`` blocks until ``stop()``; run it in a
thread to embed a monitor in another program.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.producer import Producer
from inferstream.metrics import Metrics
from inferstream.monitoring.alerts import WebhookSender, make_alert
from inferstream.monitoring.extract import Extractor
from inferstream.monitoring.reference import Reference, reference_for
from inferstream.monitoring.reports import monitor_state_dir, read_status, reports_dir, write_report, write_status
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.window import Hysteresis, WindowResult, Windows
from inferstream.schemas.records import DriftAlert
from inferstream.streams.alert_publish import publish_alert
from inferstream.streams.metrics import MonitorMetrics

log = logging.getLogger("inferstream.monitoring")

_RECENT = 200  # window summaries kept in memory


@dataclass
class MonitorStats:
    """Counts since start."""

    predictions: int = 0
    windows: int = 0
    drifted_windows: int = 0
    alerts: int = 0
    resolved: int = 0
    bad_records: int = 0
    reports: int = 0


class DriftMonitor:
    """Watches one model's predictions for drift against a reference until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        spec: MonitorSpec,
        *,
        reference: Reference | None = None,
        metrics: Metrics | None = None,
        reports: bool = True,
        webhook_transport: httpx.BaseTransport | None = None,
        max_batch: int = 5000,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.reference = reference or reference_for(settings, spec)
        self.profiles = self.reference.for_spec(spec)
        self.kinds = {name: p.kind for name, p in self.profiles.items()}
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        self._drift_metrics = self.metrics.part(MonitorMetrics)
        self.reports = reports
        self.max_batch = max_batch
        self.stats = MonitorStats()
        #: summaries of the latest closed windows, oldest first
        self.recent: deque[dict[str, Any]] = deque(maxlen=_RECENT)
        #: alerts published since start, oldest first (bounded)
        self.published: deque[DriftAlert] = deque(maxlen=_RECENT)
        self.ready = threading.Event()
        self.state_dir = monitor_state_dir(settings, spec.name)
        self.topic = settings.topics.platform_topics()["predictions"]
        self.alerts_topic = settings.topics.platform_topics()["drift-alerts"]
        self.group_id = settings.topics.group(f"monitor-{spec.name}")
        status = read_status(self.state_dir) or {}
        self.windows = Windows(spec.window, self.profiles, spec.alerting, state=status.get("windows"))
        self.hysteresis = Hysteresis.restore(spec.alerting, status.get("alerting"))
        self._drift_metrics.state(
            spec.name, active=self.hysteresis.active, drifted=bool(self.hysteresis.history[-1:] == [True])
        )
        self.extractor = Extractor(spec.columns, self.kinds, model=spec.model, version=spec.version)
        self._webhook = (
            WebhookSender(spec.alerting, self.state_dir / "webhook-sent.json", transport=webhook_transport)
            if spec.alerting.webhook
            else None
        )
        self._version_seen = spec.version or ""
        self._last_window: dict[str, Any] | None = status.get("last_window")
        self._stop = threading.Event()
        self._sample: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> MonitorStats:
        """Consume and measure until ``stop()``."""
        TopicAdmin(self.settings).ensure_platform_topics()
        self._consumer = Consumer(
            self.settings,
            [self.topic],
            group_id=self.group_id,
            from_beginning=True,
            metrics=self.metrics,
            stage="monitor",
            on_assign=lambda parts: self.windows.assigned([(tp.topic, tp.partition) for tp in parts], time.monotonic()),
            on_revoke=lambda parts: self.windows.revoked([(tp.topic, tp.partition) for tp in parts]),
        )
        self._producer = Producer(self.settings, metrics=self.metrics, stage="monitor")
        self.ready.set()
        try:
            while not self._stop.is_set() and not self._consumer.stopping:
                messages = self._consumer.consume(self.max_batch, 0.2)
                now = time.monotonic()
                if messages:
                    skipped, expanded = self.extractor.skipped, self.extractor.expanded
                    read: list[tuple[bytes | None, tuple[str, int], int]] = []
                    last: dict[tuple[str, int], int] = {}  # each partition's last offset read
                    for m in messages:
                        tp, offset = (m.topic() or "", m.partition() or 0), m.offset() or 0
                        read.append((m.value(), tp, offset))
                        last[tp] = offset
                    batch = self.extractor.decode(read, [m.headers() for m in messages])
                    for tp, offset in last.items():
                        self.windows.saw(tp, offset)
                    self.stats.predictions += len(batch)
                    self.stats.bad_records += batch.bad_records
                    # Records handled: a prediction batch's rows count once (records in = out + skipped + invalid).
                    self.metrics.handled("monitor", "out", len(batch) - (self.extractor.expanded - expanded))
                    self.metrics.handled("monitor", "skipped", self.extractor.skipped - skipped)
                    self.metrics.handled("monitor", "invalid", batch.bad_records)
                    if len(batch) and not self.spec.version:
                        self._version_seen = str(batch.raw[-1].get("version", ""))
                    closed = self.windows.add(batch, now)
                else:
                    closed = self.windows.close_due(now)
                if closed:
                    for result in closed:
                        self._handle(result)
                    self._checkpoint()
        finally:
            self._producer.close()
            self._consumer.close()
            if self._webhook is not None:
                self._webhook.close()
        return self.stats

    def stop(self) -> None:
        """Return from ``run()`` after the current batch (the open window is replayed on restart)."""
        self._stop.set()

    def stop_on_signals(self) -> None:
        """Stop on SIGINT/SIGTERM (call from the main thread, before ``run()``)."""
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self.stop())

    # -- per window -----------------------------------------------------------------------

    def _handle(self, result: WindowResult) -> None:
        started = time.monotonic()
        self.stats.windows += 1
        self.stats.drifted_windows += int(result.dataset_drift)
        transition = self.hysteresis.update(result.dataset_drift, result.end.timestamp())
        self._drift_metrics.window(self.spec.name, result.scores, result.drift_share, result.dataset_drift)
        self._drift_metrics.state(self.spec.name, active=self.hysteresis.active, drifted=result.dataset_drift)
        summary = {**result.summary(), "transition": transition}
        self.recent.append(summary)
        self._last_window = summary
        if result.bad_records or any(sum(q.values()) for q in result.quality.values()):
            log.info("monitor %s window %d: bad input %s", self.spec.name, result.index, result.quality)
        if transition is not None:
            self._alert(result, transition)
        self.metrics.stage_seconds.labels("monitor", "window").observe(time.monotonic() - started)

    def _alert(self, result: WindowResult, status: Literal["drift", "resolved"]) -> None:
        report = self._report(result) if self.reports else None
        alert = make_alert(self.spec, self._version_seen or "unknown", result, status, self.kinds, report)
        publish_alert(self._producer, self.alerts_topic, alert, self._stop)
        self.published.append(alert)
        self._drift_metrics.alerts.labels(self.spec.name, status).inc()
        if status == "drift":
            self.stats.alerts += 1
        else:
            self.stats.resolved += 1
        log.warning(
            "monitor %s: %s (%s) window %s..%s, drifted: %s",
            self.spec.name,
            status,
            alert.severity,
            result.start.isoformat(),
            result.end.isoformat(),
            ", ".join(result.drifted_columns) or "none",
        )
        if self._webhook is not None:
            self._webhook.send(alert)

    def _report(self, result: WindowResult) -> Any:
        try:
            if self._sample is None:
                self._sample = self.reference.sample()
            path = write_report(
                reports_dir(self.settings) / self.spec.name,
                start=result.start,
                end=result.end,
                current=[self.extractor.row_values(row) for row in result.sample],
                reference=self._sample,
                kinds=self.kinds,
            )
        except Exception:  # a report is a courtesy: the alert goes out without it
            log.exception("monitor %s: the HTML report of window %d failed", self.spec.name, result.index)
            return None
        self.stats.reports += 1
        return path

    def _checkpoint(self) -> None:
        write_status(self.state_dir, self.status())
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.windows.commit_offsets().items()]
        owned = set(self._consumer.assignment())
        offsets = [tp for tp in offsets if (tp.topic, tp.partition) in owned]
        if offsets:
            self._consumer.raw.store_offsets(offsets=offsets)
            self._consumer.commit()

    def status(self) -> dict[str, Any]:
        """The latest-status document (also written to ``status.json`` at every window close)."""
        return {
            "monitor": self.spec.name,
            "model": self.spec.model,
            "version": self.spec.version,
            "reference": str(self.reference.path),
            "updated": datetime.now(UTC).isoformat(),
            "alert_active": self.hysteresis.active,
            "last_window": self._last_window,
            "windows": self.windows.state(),
            "alerting": self.hysteresis.state(),
            "counts": {
                "predictions": self.stats.predictions,
                "windows": self.stats.windows,
                "drifted_windows": self.stats.drifted_windows,
                "alerts": self.stats.alerts,
                "resolved": self.stats.resolved,
                "bad_records": self.stats.bad_records,
                "skipped_other_models": self.extractor.skipped,
            },
            "webhook": None
            if self._webhook is None
            else {"url": self._webhook.url, "delivered": self._webhook.delivered, "failed": self._webhook.failed},
        }
