"""A quality monitor's alerts: ``drift-alert`` records of kind ``quality`` (contract version 2).

The id is derived from the monitor, the version, the window, the status and the labels
the evaluation saw (their count and digest): evaluating the same window on the same
labels again, after a crash or a restart, gives the same id, which readers drop as a
repeat; an evaluation on other labels is another alert.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from inferstream.monitoring.quality import Evaluation, QualityReference, Status
from inferstream.monitoring.spec import MonitorSpec
from inferstream.schemas.records import DriftAlert, LabelsSeen, QualityMetric, QualityVerdict

#: The metrics an alert carries first (then the rest in name order).
_FIRST = ("accuracy", "f1_macro", "roc_auc", "log_loss", "ece", "mae", "rmse", "r2")


def quality_alert_id(monitor: str, evaluation: Evaluation, status: Status) -> str:
    """The same for the same monitor, version, window, status and labels seen."""
    text = "|".join(
        [
            monitor,
            evaluation.version,
            str(evaluation.start),
            str(evaluation.end),
            status,
            str(evaluation.labelled),
            evaluation.digest,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def metrics_of(evaluation: Evaluation, reference: QualityReference) -> list[QualityMetric]:
    """Realised, estimated, reference and limit of every metric the evaluation has, side by side."""
    names = [m for m in _FIRST if m in evaluation.metrics or m in evaluation.estimated]
    names += sorted((set(evaluation.metrics) | set(evaluation.estimated)) - set(names))
    return [
        QualityMetric(
            metric=name,
            value=_finite(evaluation.metrics.get(name)),
            estimated=_finite(evaluation.estimated.get(name)),
            reference=_finite(reference.metrics.get(name)),
            limit=evaluation.limits.get(name),
            breached=name in evaluation.breaches,
        )
        for name in names
    ]


def make_quality_alert(
    spec: MonitorSpec,
    evaluation: Evaluation,
    status: Status,
    reference: QualityReference,
    report_path: Path | None,
) -> DriftAlert:
    """The alert of a window that opened (``degraded``) or cleared (``resolved``) a quality alert."""
    assert spec.quality is not None
    latest = evaluation.latest_label_time
    severity = "info" if status == "resolved" else "critical" if len(evaluation.breaches) > 1 else "warning"
    return DriftAlert(
        id=quality_alert_id(spec.name, evaluation, status),
        kind="quality",
        monitor=spec.name,
        model=spec.model,
        version=evaluation.version,
        window_start=evaluation.when("start"),
        window_end=evaluation.when("end"),
        window_count=evaluation.count,
        status=status,
        dataset_drift=False,
        drift_share=0.0,
        severity=severity,
        quality=QualityVerdict(
            task=spec.quality.task,
            evaluation=evaluation.evaluation,
            labels=LabelsSeen(
                count=evaluation.labelled,
                latest_label_time=None if latest is None else datetime.fromtimestamp(latest, UTC),
                digest=evaluation.digest,
            ),
            metrics=metrics_of(evaluation, reference),
        ),
        report_path=str(report_path) if report_path is not None else None,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value
