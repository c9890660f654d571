"""Quality monitors: windows of prediction time judged on their labels, re-judged when late labels come.

The data path is the join on read that the inference table already offers: the table
sink keeps every prediction in Parquet, the label sink every label beside it, and
``read_table`` returns each prediction with its last label. A quality monitor reads
the model's rows of the last ``horizon_s`` (plus the open windows) every ``poll_s`` and
evaluates each window of each version:

- when the table's newest prediction passes the window's end (plus
  ``allowed_lateness_s``), once: realised metrics on the labels so far, and CBPE's
  estimate from the probabilities (:mod:`.cbpe`);
- again whenever the labels it holds change (count or content: a digest of the
  request ids, labels and label times) or late predictions join it;
- no more once its end is ``horizon_s`` behind the newest prediction: it is final.

Why files and not a second stream join: both tables are durable already (offset-named
files renamed into place, the sinks commit after them), so the monitor's own state is
only what it has concluded (``status.json``): a restart reads the same files, finds
the same digests and evaluates nothing twice; a crash before the status is written
evaluates again to the same result (the same alert id, which readers drop as a repeat).

Alerting: a window is degraded when a metric passes its limit (``thresholds``, or
``max_drop`` worse than the reference window); windows with fewer than ``min_labels``
labels have no verdict yet. The drift monitors' hysteresis (:class:`.window.Hysteresis`:
alert_after of alert_window, resolve_after, cooldown) runs over the verdicts in window
order, from the state of the windows already final; because a late label can change an
old verdict, it is replayed after every evaluation, and the transitions not yet
published are published (``degraded``/``resolved``). An open alert that the replay no
longer supports is resolved at the latest window.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from inferstream.evaluation.quality import classification_metrics, regression_metrics
from inferstream.monitoring.cbpe import Calibration, estimate
from inferstream.monitoring.quality_rows import Rows
from inferstream.monitoring.spec import LOWER_IS_BETTER, MonitorSpec
from inferstream.monitoring.window import Hysteresis

Status = Literal["degraded", "resolved"]
_REMEMBER = 1000  # published transition keys kept


@dataclass
class Evaluation:
    """The latest evaluation of one window of one version."""

    version: str
    window: int  # index: start = window × duration
    start: float
    end: float
    count: int
    labelled: int
    latest_label_time: float | None
    digest: str
    evaluation: int
    metrics: dict[str, float | None]
    estimated: dict[str, float | None]
    limits: dict[str, float]
    breaches: list[str]
    degraded: bool | None  # None: fewer labels than min_labels

    @property
    def key(self) -> str:
        """``version|window``."""
        return f"{self.version}|{self.window}"

    def when(self, which: Literal["start", "end"]) -> datetime:
        """The window's start or end as a UTC datetime."""
        return datetime.fromtimestamp(self.start if which == "start" else self.end, UTC)


@dataclass
class QualityReference:
    """What the labelled reference window gives: a CBPE calibration and the metrics to compare with."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    count: int = 0


def measure(rows: Rows, spec: MonitorSpec) -> dict[str, float | None]:
    """Realised metrics of the labelled ``rows``."""
    assert spec.quality is not None
    mask = rows.labelled
    if spec.quality.task == "regression":
        return regression_metrics(rows.truth[mask].astype(np.float64), rows.predicted[mask].astype(np.float64))
    probabilities = None if rows.probabilities is None else rows.probabilities[mask]
    return classification_metrics(list(rows.truth[mask]), list(rows.predicted[mask]), rows.classes, probabilities)


def reference_of(rows: Rows, spec: MonitorSpec) -> QualityReference:
    """The reference window's metrics and (when asked and possible) the CBPE calibration."""
    assert spec.quality is not None
    calibration = Calibration()
    labelled = rows.take(np.flatnonzero(rows.labelled))
    if spec.quality.calibrate and labelled.probabilities is not None and len(labelled):
        index = {c: i for i, c in enumerate(labelled.classes)}
        truth = np.asarray([index[t] for t in labelled.truth], dtype=np.int64)
        calibration = Calibration.fit(labelled.probabilities, truth, labelled.classes)
    return QualityReference(measure(rows, spec), calibration, len(labelled))


def digest(rows: Rows) -> str:
    """What identifies the labels of ``rows``: request ids, labels and label times (order as read)."""
    h = hashlib.sha256()
    for i in np.flatnonzero(rows.labelled).tolist():
        h.update(f"{rows.request_ids[i]}\t{rows.truth[i]}\t{rows.label_times[i]:.3f}\n".encode())
    return h.hexdigest()[:16]


class QualityEvaluator:
    """Windows, verdicts and alert transitions of one quality monitor; ``state()`` survives restarts."""

    def __init__(
        self, spec: MonitorSpec, *, reference: QualityReference | None = None, state: Mapping[str, Any] | None = None
    ) -> None:
        assert spec.quality is not None
        self.spec = spec
        self.quality = spec.quality
        self.duration = spec.window.duration_s
        self.reference = reference or QualityReference()
        state = state or {}
        self.windows: dict[str, Evaluation] = {k: Evaluation(**v) for k, v in state.get("windows", {}).items()}
        self.base: dict[str, dict[str, Any]] = dict(state.get("base", {}))
        self.published: list[str] = list(state.get("published", []))
        self.open: dict[str, bool] = dict(state.get("open", {}))
        self.watermark: float | None = state.get("watermark")
        self.limits = self._limits()

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-ready state (the status file)."""
        return {
            "windows": {k: asdict(v) for k, v in sorted(self.windows.items())},
            "base": self.base,
            "published": self.published,
            "open": self.open,
            "watermark": self.watermark,
        }

    def since(self) -> datetime | None:
        """The earliest prediction time a read must include: the start of the oldest window not final."""
        if self.watermark is None:
            return None
        first = math.floor((self.watermark - self.quality.horizon_s) / self.duration) * self.duration
        return datetime.fromtimestamp(first, UTC)

    # -- evaluating -----------------------------------------------------------------------

    def evaluate(self, rows: Rows) -> list[Evaluation]:
        """Evaluate the due windows in ``rows`` whose predictions or labels changed; those evaluations."""
        if len(rows):
            newest = float(rows.times.max())
            self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        if self.watermark is None:
            return []
        self._finalise()
        due_before = self.watermark - self.spec.window.allowed_lateness_s
        window_ids = np.floor(rows.times / self.duration).astype(np.int64)
        done = []
        lowest = self.since()
        for version in sorted({str(v) for v in rows.versions}):
            mine = rows.versions == version
            for window in np.unique(window_ids[mine]).tolist():
                start, end = window * self.duration, (window + 1) * self.duration
                if end > due_before or (lowest is not None and start < lowest.timestamp()):
                    continue  # open, or final already
                part = rows.take(np.flatnonzero(mine & (window_ids == window)))
                seen = digest(part)
                before = self.windows.get(f"{version}|{window}")
                if before is not None and before.digest == seen and before.count == len(part):
                    continue
                evaluation = self._evaluate(version, window, start, end, part, seen, before)
                self.windows[evaluation.key] = evaluation
                done.append(evaluation)
        return done

    def _evaluate(
        self, version: str, window: int, start: float, end: float, rows: Rows, seen: str, before: Evaluation | None
    ) -> Evaluation:
        labelled = int(rows.labelled.sum())
        metrics = measure(rows, self.spec)
        estimated: dict[str, float | None] = {}
        if rows.probabilities is not None and len(rows):
            calibrated = self.reference.calibration.apply(rows.probabilities, rows.classes)
            estimated = estimate(calibrated, rows.predicted_index(), rows.classes)
        judged = labelled >= self.quality.min_labels
        breaches = [m for m, limit in self.limits.items() if judged and _breached(m, metrics.get(m), limit)]
        times = rows.label_times[rows.labelled]
        return Evaluation(
            version=version,
            window=window,
            start=start,
            end=end,
            count=len(rows),
            labelled=labelled,
            latest_label_time=float(times.max()) if len(times) else None,
            digest=seen,
            evaluation=(before.evaluation + 1) if before is not None else 1,
            metrics=metrics,
            estimated=estimated,
            limits=dict(self.limits),
            breaches=breaches,
            degraded=bool(breaches) if judged else None,
        )

    def _limits(self) -> dict[str, float]:
        limits = dict(self.quality.thresholds)
        for metric, drop in self.quality.max_drop.items():
            value = self.reference.metrics.get(metric)
            if value is None:
                continue
            lower = metric in LOWER_IS_BETTER
            limit = value + drop if lower else value - drop
            if metric in limits:  # both rules: the stricter
                limit = min(limit, limits[metric]) if lower else max(limit, limits[metric])
            limits[metric] = limit
        return limits

    # -- alerting -------------------------------------------------------------------------

    def transitions(self) -> list[tuple[Evaluation, Status]]:
        """Alert transitions the replay of the verdicts holds and that were not published yet, in order."""
        pending: list[tuple[Evaluation, Status]] = []
        for version in sorted({e.version for e in self.windows.values()} | set(self.open)):
            replay = Hysteresis.restore(self.spec.alerting, self.base.get(version))
            judged = [e for e in self._of(version) if e.degraded is not None]
            mine: list[tuple[Evaluation, Status]] = []
            for evaluation in judged:
                change = replay.update(bool(evaluation.degraded), evaluation.end)
                if change is not None:
                    mine.append((evaluation, "degraded" if change == "drift" else "resolved"))
            mine = [(e, s) for e, s in mine if self._key(e, s) not in self.published]
            if not mine and self.open.get(version) and not replay.active and judged:
                mine = [(judged[-1], "resolved")]  # late labels took back the verdict behind the open alert
            pending.extend(mine)
        return pending

    def mark_published(self, evaluation: Evaluation, status: Status) -> None:
        """An alert went out (acknowledged): it is not published again."""
        self.published = [*self.published, self._key(evaluation, status)][-_REMEMBER:]
        self.open[evaluation.version] = status == "degraded"

    @staticmethod
    def _key(evaluation: Evaluation, status: Status) -> str:
        return f"{evaluation.key}|{status}"

    def _of(self, version: str) -> list[Evaluation]:
        return sorted((e for e in self.windows.values() if e.version == version), key=lambda e: e.window)

    def _finalise(self) -> None:
        """Fold windows past the horizon into each version's base hysteresis state, and drop them."""
        lowest = self.since()
        if lowest is None:
            return
        for version in sorted({e.version for e in self.windows.values()}):
            final = [e for e in self._of(version) if e.start < lowest.timestamp()]
            if not final:
                continue
            replay = Hysteresis.restore(self.spec.alerting, self.base.get(version))
            for evaluation in final:
                if evaluation.degraded is not None:
                    replay.update(evaluation.degraded, evaluation.end)
                del self.windows[evaluation.key]
            self.base[version] = replay.state()

    def active(self) -> bool:
        """Whether readers were told of an alert that is still open (any version)."""
        return any(self.open.values())


def _breached(metric: str, value: float | None, limit: float) -> bool:
    if value is None or value != value:
        return False
    return value > limit if metric in LOWER_IS_BETTER else value < limit
