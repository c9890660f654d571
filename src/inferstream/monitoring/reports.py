"""evidently HTML reports for windows that alert, and each monitor's latest-status JSON.

Reports go to ``<reports_dir>/<monitor>/<window start>--<window end>.html``
(``monitoring.reports_dir``, default ``<state_dir>/reports``): evidently's
``DataDriftPreset`` on the window's sample (up to ``window.report_rows`` rows)
against the reference's sample. They are written only for windows that open or
clear an alert: the per-window statistics come from sketches, and evidently's
full report costs far more than a window's worth of stream.

The status file ``<state_dir>/monitors/<monitor>/status.json`` holds the last
window's result, the alert state (hysteresis) and where the monitor is; it is
written before offsets are committed, so a restarted monitor continues from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferstream.config import Settings
from inferstream.errors import ConfigError

STATUS_FILE = "status.json"


def reports_dir(settings: Settings) -> Path:
    """Where HTML reports are written."""
    return settings.monitoring.reports_dir or settings.state_dir / "reports"


def monitor_state_dir(settings: Settings, monitor: str) -> Path:
    """A monitor's own files: status, delivered webhooks."""
    return settings.state_dir / "monitors" / monitor


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def write_report(
    directory: Path,
    *,
    start: datetime,
    end: datetime,
    current: Sequence[Mapping[str, Any]],
    reference: Any,
    kinds: Mapping[str, str],
) -> Path:
    """Run evidently's data drift preset on a window's sample against the reference's; the HTML path."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical = [n for n, k in kinds.items() if k == "numerical"]
    categorical = [n for n, k in kinds.items() if k == "categorical"]
    columns = numerical + categorical
    if not columns:
        raise ConfigError("a report needs at least one numerical or categorical column")
    current_frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in current], columns=columns)
    reference_frame = reference.to_pandas()[columns] if hasattr(reference, "to_pandas") else reference[columns]
    for name in numerical:
        current_frame[name] = pd.to_numeric(current_frame[name], errors="coerce")
    for name in categorical:
        current_frame[name] = current_frame[name].map(lambda v: None if v is None else str(v))
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current_frame, data_definition=definition),
        Dataset.from_pandas(reference_frame, data_definition=definition),
    )
    return save_report(snapshot, directory, start, end)


def save_report(snapshot: Any, directory: Path, start: datetime, end: datetime) -> Path:
    """Write an evidently snapshot's HTML as ``<window start>--<window end>.html``, renamed into place."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_stamp(start)}--{_stamp(end)}.html"
    temporary = path.with_suffix(".html.tmp")
    snapshot.save_html(str(temporary))
    temporary.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """A report on disk."""

    monitor: str
    path: Path
    written: datetime
    size: int


def list_reports(settings: Settings, monitor: str | None = None) -> list[ReportInfo]:
    """Reports on disk, newest first (of one monitor when given)."""
    root = reports_dir(settings)
    pattern = f"{monitor}/*.html" if monitor else "*/*.html"
    found = []
    for path in root.glob(pattern):
        stat = path.stat()
        found.append(ReportInfo(path.parent.name, path, datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size))
    return sorted(found, key=lambda r: (r.written, r.path.name), reverse=True)


def find_report(settings: Settings, which: str) -> Path:
    """A report by path, by file name, or ``latest`` / a monitor name (its newest)."""
    candidate = Path(which)
    if candidate.is_file():
        return candidate
    reports = list_reports(settings)
    for report in reports:
        if which in ("latest", report.monitor) or report.path.name == which:
            return report.path
    raise ConfigError(f"no report {which!r} under {reports_dir(settings)}: `inferstream reports list` shows them")


def write_status(directory: Path, status: Mapping[str, Any]) -> Path:
    """Write a monitor's status file atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATUS_FILE
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as handle:
        json.dump(status, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    return path


def read_status(directory: Path) -> dict[str, Any] | None:
    """A monitor's status file (None before its first window)."""
    try:
        data: dict[str, Any] = json.loads((directory / STATUS_FILE).read_text())
    except FileNotFoundError:
        return None
    return data
