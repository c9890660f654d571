"""Drift alerts: the record for a window, webhook delivery, and dropping the repeats of a replayed window.

An alert's id is derived from the monitor, the window and the status, so a window
replayed after a crash produces the same id: readers and webhooks can drop the
repeat. Webhooks get an HTTP POST of the alert as JSON, retried with exponential
backoff; what was delivered is remembered per monitor (``webhook-sent.json`` in
the monitor's state directory), so each monitor+window+status is posted once.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Literal

import httpx

from inferstream.monitoring.spec import AlertingSpec, MonitorSpec
from inferstream.monitoring.window import WindowResult
from inferstream.schemas.records import ColumnDrift, DriftAlert

log = logging.getLogger("inferstream.monitoring")

_REMEMBER = 1000  # delivered keys kept per monitor


def alert_id(monitor: str, result: WindowResult, status: str) -> str:
    """The alert's id: the same for the same monitor, window and status."""
    text = f"{monitor}|{result.start.isoformat()}|{result.end.isoformat()}|{status}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_alert(
    spec: MonitorSpec,
    version: str,
    result: WindowResult,
    status: Literal["drift", "resolved"],
    kinds: dict[str, str],
    report_path: Path | None,
) -> DriftAlert:
    """The ``drift-alert`` record of a window that opened (``drift``) or cleared (``resolved``) an alert."""
    columns = [
        ColumnDrift(
            column=name,
            kind=_kind(spec, name, kinds),
            method=s.method,
            score=s.score if s.score == s.score else 0.0,  # NaN (a degenerate test) reported as 0
            threshold=s.threshold,
            drifted=s.drifted,
        )
        for name, s in result.scores.items()
        if s is not None
    ]
    severity: Literal["info", "warning", "critical"] = "info"
    if status == "drift":
        severity = "critical" if result.drift_share >= spec.alerting.critical_share else "warning"
    return DriftAlert(
        id=alert_id(spec.name, result, status),
        monitor=spec.name,
        model=spec.model,
        version=version,
        window_start=result.start,
        window_end=result.end,
        window_count=result.count,
        status=status,
        dataset_drift=result.dataset_drift,
        drift_share=min(max(result.drift_share, 0.0), 1.0),
        severity=severity,
        columns=columns,
        report_path=str(report_path) if report_path is not None else None,
    )


def _kind(
    spec: MonitorSpec, name: str, kinds: dict[str, str]
) -> Literal["numerical", "categorical", "text", "embedding", "prediction"]:
    for column in spec.columns:
        if column.name == name:
            return column.kind
    kind = kinds.get(name, "numerical")
    return "categorical" if kind == "categorical" else "embedding" if kind == "embedding" else "numerical"


class WebhookSender:
    """POSTs alerts to one URL: retries with backoff, each monitor+window+status once."""

    def __init__(self, spec: AlertingSpec, state_file: Path, *, transport: httpx.BaseTransport | None = None) -> None:
        assert spec.webhook is not None
        self.url = spec.webhook
        self.attempts = spec.webhook_attempts
        self.state_file = state_file
        self._client = httpx.Client(timeout=spec.webhook_timeout_s, transport=transport)
        self._sent: list[str] = self._load()
        self.delivered = 0
        self.failed = 0

    def _load(self) -> list[str]:
        try:
            return [str(k) for k in json.loads(self.state_file.read_text())]
        except (FileNotFoundError, ValueError):
            return []

    @staticmethod
    def key(alert: DriftAlert) -> str:
        """What makes two alerts the same delivery."""
        return f"{alert.monitor}|{alert.window_start.isoformat()}|{alert.window_end.isoformat()}|{alert.status}"

    def send(self, alert: DriftAlert, *, backoff_s: float = 0.5) -> bool:
        """Deliver one alert (True when delivered now or before); retries 5xx, 429 and network errors."""
        key = self.key(alert)
        if key in self._sent:
            return True
        body = alert.model_dump_json().encode()
        headers = {"content-type": "application/json", "idempotency-key": alert.id}
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(self.url, content=body, headers=headers)
                if response.status_code < 300:
                    self._remember(key)
                    self.delivered += 1
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    log.error("webhook %s refused alert %s: HTTP %d", self.url, alert.id, response.status_code)
                    break
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            if attempt < self.attempts:
                log.warning("webhook %s: %s; retrying (%d/%d)", self.url, reason, attempt, self.attempts)
                time.sleep(backoff_s * 2 ** (attempt - 1))
        self.failed += 1
        log.error("webhook %s: alert %s not delivered after %d attempts", self.url, alert.id, self.attempts)
        return False

    def _remember(self, key: str) -> None:
        self._sent = [*self._sent, key][-_REMEMBER:]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._sent))
        temporary.replace(self.state_file)

    def close(self) -> None:
        """Release the HTTP client."""
        self._client.close()


class RepeatFilter:
    """Lets each alert through once: a replayed window's repeat (same id) is dropped.

    Remembers the last ids it let through (a bounded number), which is what a
    replay after a crash can repeat.
    """

    def __init__(self) -> None:
        self._seen: deque[str] = deque(maxlen=_REMEMBER)

    def __call__(self, alert: DriftAlert) -> bool:
        """True the first time an alert's id is seen."""
        if alert.id in self._seen:
            return False
        self._seen.append(alert.id)
        return True


def unique_alerts(
    records: Iterable[object], *, monitor: str | None = None, max_records: int | None = None
) -> Iterator[DriftAlert]:
    """The drift alerts among ``records`` (of one monitor when given), each once: repeats of a replayed window dropped.

    ``records`` are the decoded records of the alerts topic (anything else is passed over);
    the SDK's ``Client.alerts`` feeds it a subscription.
    """
    first = RepeatFilter()
    count = 0
    for record in records:
        if not isinstance(record, DriftAlert) or (monitor is not None and record.monitor != monitor):
            continue
        if not first(record):
            continue
        yield record
        count += 1
        if max_records is not None and count >= max_records:
            return


def recent_alerts(
    records: Iterable[object],
    *,
    monitor: str | None = None,
    severities: Collection[str] = (),
    limit: int = 100,
) -> list[DriftAlert]:
    """The last ``limit`` alerts among ``records``, newest first (of one monitor, of some severities).

    ``records``: the alerts topic read to its end as of now (the gateway's bounded
    read); repeats of a replayed window are dropped.
    """
    wanted = (a for a in unique_alerts(records, monitor=monitor) if not severities or a.severity in severities)
    # The newest by their own time: partitions are read in no particular order.
    return heapq.nlargest(limit, wanted, key=lambda alert: alert.event_time)
