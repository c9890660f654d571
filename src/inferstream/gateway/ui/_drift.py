"""Each monitor's drift timeline: its windows' per-column scores and thresholds, and its alerts.

Two sources feed it. Alerts (from the ``drift-alerts`` topic) carry the scores of
the windows that opened or cleared an alert, wherever the monitor runs. A monitor
that shares this process's state directory also leaves its last window in its
status file, read every few seconds: then every window is a point, not only
those that alerted. Memory is bounded: :data:`WINDOWS` windows and :data:`ALERTS`
alerts per monitor, :data:`MONITORS` monitors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from inferstream.gateway.ui._reports import report_link
from inferstream.schemas.records import DriftAlert

WINDOWS = 200
ALERTS = 50
MONITORS = 64


@dataclass
class _Monitor:
    model: str
    version: str
    alert_active: bool = False
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)  # by window end (ISO)
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ALERTS))
    alert_ids: set[str] = field(default_factory=set)

    def window(self, end: str, point: dict[str, Any]) -> None:
        self.windows[end] = {**self.windows.get(end, {}), **point}
        if len(self.windows) > WINDOWS:
            for oldest in sorted(self.windows)[: len(self.windows) - WINDOWS]:
                del self.windows[oldest]


class DriftTimeline:
    """Windows and alerts per monitor (see the module doc); ``snapshot()`` is the page's view."""

    def __init__(self, reports_root: Path) -> None:
        self.reports_root = reports_root
        self._monitors: dict[str, _Monitor] = {}

    def _monitor(self, name: str, model: str, version: str) -> _Monitor | None:
        entry = self._monitors.get(name)
        if entry is None:
            if len(self._monitors) >= MONITORS:
                return None
            entry = self._monitors[name] = _Monitor(model, version)
        return entry

    def add_alert(self, alert: DriftAlert) -> None:
        """An alert: its window becomes a point with a marker (a replayed alert's repeat is ignored)."""
        entry = self._monitor(alert.monitor, alert.model, alert.version)
        if entry is None or alert.id in entry.alert_ids:
            return
        if len(entry.alerts) == ALERTS:
            entry.alert_ids.discard(entry.alerts[0]["id"])
        entry.alert_ids.add(alert.id)
        entry.version = alert.version
        entry.alert_active = alert.status == "drift"
        columns = {
            c.column: {"method": c.method, "score": c.score, "threshold": c.threshold, "drifted": c.drifted}
            for c in alert.columns
        }
        start, end = alert.window_start.isoformat(), alert.window_end.isoformat()
        entry.alerts.append(
            {
                "id": alert.id,
                "status": alert.status,
                "severity": alert.severity,
                "window_start": start,
                "window_end": end,
                "window_count": alert.window_count,
                "drift_share": alert.drift_share,
                "drifted": [c.column for c in alert.columns if c.drifted],
                "report": report_link(self.reports_root, alert.report_path),
            }
        )
        entry.window(
            end,
            {
                "start": start,
                "end": end,
                "t": alert.window_end.timestamp(),
                "count": alert.window_count,
                "dataset_drift": alert.dataset_drift,
                "drift_share": alert.drift_share,
                "columns": columns,
                "alert": alert.status,
            },
        )

    def add_status(self, status: dict[str, Any]) -> None:
        """A monitor's status file: its last window becomes a point, its alert state is taken."""
        name, model = status.get("monitor"), status.get("model")
        window = status.get("last_window")
        if not isinstance(name, str) or not isinstance(model, str):
            return
        entry = self._monitor(name, model, str(status.get("version") or ""))
        if entry is None:
            return
        entry.alert_active = bool(status.get("alert_active"))
        if not isinstance(window, dict) or not isinstance(window.get("end"), str):
            return
        try:
            t = datetime.fromisoformat(window["end"]).timestamp()
        except ValueError:
            return
        columns = {
            column: {k: score.get(k) for k in ("method", "score", "threshold", "drifted")}
            for column, score in (window.get("columns") or {}).items()
            if isinstance(score, dict)
        }
        entry.window(
            window["end"],
            {
                "start": window.get("start"),
                "end": window["end"],
                "t": t,
                "count": window.get("count"),
                "dataset_drift": bool(window.get("dataset_drift")),
                "drift_share": window.get("drift_share"),
                "columns": columns,
            },
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Per monitor, sorted by name: model, version, alert state, column names, windows (oldest first), alerts."""
        result = []
        for name, entry in sorted(self._monitors.items()):
            windows = [entry.windows[end] for end in sorted(entry.windows, key=lambda e: entry.windows[e]["t"])]
            columns = sorted({column for w in windows for column in w.get("columns", {})})
            result.append(
                {
                    "monitor": name,
                    "model": entry.model,
                    "version": entry.version,
                    "alert_active": entry.alert_active,
                    "columns": columns,
                    "windows": windows,
                    "alerts": list(reversed(entry.alerts)),  # newest first
                }
            )
        return result
