"""The demo's quality loop: labels, a quality alert, a retrained version on trial as a shadow, its promotion.

After the drift the demo shows, the same patients measure 30% larger but their diagnoses
stay what they were: the relation of the measurements to the diagnosis changed (a concept
drift), and ``breast-cancer:1``, trained on the old relation, gets worse. The loop runs
in the demo's own process, as threads beside its workers:

1. the inference-table sink and the label sink archive the predictions and the labels
   (the diagnoses, produced by event id once the predictions are out);
2. a quality monitor, declared like the demo's drift monitor, judges windows of
   prediction time on their labels and raises a ``degraded`` alert on the shifted ones;
3. ``models retrain`` (:func:`inferstream.jobs.retrain.retrain`) trains v2 from the
   labelled rows after the shift, with its lineage, into this run's own model repository;
4. v2 becomes a shadow of v1 and serves, on trial, the clinical traffic that comes after
   it was trained (new patients, measured the new way, labelled);
5. the ``--if-better`` rule (:func:`inferstream.serving.shadow_trial.shadow_trial`)
   promotes it once enough labelled shadow predictions show its accuracy beats v1's.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstream.config import Settings
from inferstream.errors import KafkaError

if TYPE_CHECKING:
    from inferstream.client import Client
    from inferstream.jobs.retrain import Retrained
    from inferstream.schemas.records import DriftAlert
    from inferstream.serving.promotion import Decision

Say = Callable[[str], None]

MODEL = "breast-cancer"
PRIMARY = "1"
QUALITY_MONITOR = "demo-quality"
#: The metric that decides the promotion; the summary shows f1_macro beside it.
METRIC = "accuracy"
#: A window is degraded below this accuracy (v1 scores about 0.99 on the measurements it was trained on).
ACCURACY_LIMIT = 0.9
#: The retrain's seed: the same run gives the same v2, byte for byte.
SEED = 7
_WAIT_S = 180.0


@dataclass
class LoopSummary:
    """What the quality loop did."""

    labels: int = 0
    #: labels of the traffic v2 is tried on (after the ones above)
    trial_labels: int = 0
    archived_predictions: int = 0
    archived_labels: int = 0
    #: the first degraded alert: window, labels seen, accuracy and its limit
    quality_alert: dict[str, Any] | None = None
    retrained: str | None = None
    #: v2's lineage: source version, rows, training window, data sha256, held-out metrics
    lineage: dict[str, Any] = field(default_factory=dict)
    shadow_predictions: int = 0
    labelled_shadow: int = 0
    #: METRIC and f1_macro of v1 (before) and v2 (after) on the labelled shadow traffic
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    promoted: bool = False
    decision: str = ""
    #: wall time from the first label to the promotion decision
    elapsed_s: float = 0.0
    #: who answered a ``predict()`` of the bare model name after the promotion
    served_by: str | None = None
    #: why the loop stopped before its end (None: it ran to the decision)
    stopped: str | None = None


class QualityLoop:
    """The loop's components and steps; the demo runs the components as threads and calls the steps in order."""

    def __init__(self, settings: Settings, say: Say, *, window_s: int, min_labels: int) -> None:
        # The demo's models stay as built: v2 goes into this run's own repository, beside its copy of v1.
        self.settings = settings.model_copy(update={"models_dir": settings.state_dir / "models"})
        self.say = say
        self.window_s = window_s
        self.min_labels = min_labels
        self.summary = LoopSummary()
        self.table_sink: Any = None
        self.label_sink: Any = None
        self.monitor: Any = None
        self._started = time.perf_counter()

    def components(self, models_dir: Path) -> list[tuple[str, Any]]:
        """The table sink, the label sink and the quality monitor, to run as threads (named)."""
        from inferstream.monitoring.spec import MonitorSpec
        from inferstream.streams.label_sink import LabelTableSink
        from inferstream.streams.quality_monitor import QualityMonitor
        from inferstream.streams.table_sink import InferenceTableSink

        target = self.settings.models_dir / MODEL / PRIMARY
        if not target.exists():
            shutil.copytree(models_dir / MODEL / PRIMARY, target)
        spec = MonitorSpec.model_validate(
            {
                "name": QUALITY_MONITOR,
                "type": "quality",
                "model": MODEL,
                "version": PRIMARY,
                "window": {"kind": "time", "duration_s": self.window_s},
                "quality": {
                    "task": "classification",
                    "prediction": "label",
                    "probabilities": "probabilities",
                    "min_labels": self.min_labels,
                    "poll_s": 1.0,
                    "thresholds": {METRIC: ACCURACY_LIMIT},
                },
                "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 2},
            }
        )
        self.table_sink = InferenceTableSink(self.settings, max_delay_s=1.0)
        self.label_sink = LabelTableSink(self.settings, max_delay_s=1.0)
        self.monitor = QualityMonitor(self.settings, spec)
        return [("table", self.table_sink), ("labels", self.label_sink), ("quality", self.monitor)]

    def stopped(self, reason: str) -> None:
        """The loop ends here: say why, and keep it in the summary."""
        self.summary.stopped = reason
        self.say(f"quality loop stopped: {reason}")

    def archive(self, client: Client, labels: list[dict[str, Any]], predictions: int) -> None:
        """Produce the labels, wait until both tables hold the predictions and the labels."""
        self._started = time.perf_counter()
        self.say(f"producing {len(labels)} labels (the diagnoses) for the clinical predictions ...")
        self.summary.labels = client.produce_labels(labels, source="demo").produced
        self.say("the table sink and the label sink archive them beside each other (Parquet) ...")
        _until(
            lambda: (
                self.table_sink.stats.written >= predictions
                and self.label_sink.buffer.labels_written >= self.summary.labels
            ),
            "the inference table and the label table to hold the predictions and their labels",
        )
        self.summary.archived_predictions = self.table_sink.stats.written
        self.summary.archived_labels = self.label_sink.buffer.labels_written

    def alert(self, client: Client) -> None:
        """Wait for the quality monitor's first ``degraded`` alert, and read it from the alerts topic."""
        self.say(f"quality monitor {QUALITY_MONITOR!r} judges windows of {self.window_s} s on their labels ...")
        _until(lambda: self.monitor.stats.alerts >= 1, f"quality monitor {QUALITY_MONITOR} to raise an alert")
        for alert in client.alerts(monitor=QUALITY_MONITOR, from_beginning=True, idle_timeout=30):
            if alert.status == "degraded":
                self.summary.quality_alert = _verdict(alert)
                break
        shown = self.summary.quality_alert
        if shown is not None:
            self.say(
                f"quality alert: {shown['severity']} {METRIC} {shown[METRIC]:.3f} < {shown['limit']:g} "
                f"on {shown['labels']} labels of the window from {shown['window_start']}"
            )

    def retrain(self, since: datetime, until: datetime) -> Retrained:
        """``models retrain``: v2 from the labelled rows of ``[since, until)``, registered with its lineage."""
        from inferstream.jobs.retrain import RetrainOptions, retrain
        from inferstream.monitoring.table import table_dir

        self.say(f"retraining {MODEL} from the labelled rows after the shift ({since.isoformat()} on) ...")
        options = RetrainOptions(
            table=table_dir(self.settings), since=since, until=until, seed=SEED, source_version=PRIMARY
        )
        done = retrain(self.settings.models_dir, MODEL, options)
        lineage = done.lineage
        self.summary.retrained = done.version.config.ref
        self.summary.lineage = lineage.model_dump(
            mode="json", include={"source_version", "estimator", "rows", "since", "until", "data_sha256", "metrics"}
        )
        held_out = ", ".join(f"{m} {v:.3f}" for m, v in lineage.metrics.items() if m in (METRIC, "f1_macro"))
        self.say(f"registered {done.version.config.ref}: {lineage.rows} labelled rows, held out: {held_out}")
        return done

    def trial(self, done: Retrained, produce_further: Callable[[], list[dict[str, Any]]], client: Client) -> Decision:
        """v2 as a shadow of v1 on the traffic after it; promoted if its METRIC beats v1's on all of it labelled."""
        from inferstream.connectors.kafka.groups import GroupAdmin, ResetTarget
        from inferstream.serving.routes import add_shadow
        from inferstream.serving.shadow_trial import shadow_trial

        settings = self.settings
        version = done.version.config.version
        add_shadow(settings, MODEL, version, primary=PRIMARY)
        # A shadow reads its primary's requests from the oldest kept; this one is judged on the traffic
        # after its training only (new patients), so its group starts at the end of the request topic.
        group = settings.topics.worker_group(MODEL, version, shadow=True)
        GroupAdmin(settings).reset(
            group, settings.topics.request_topic(MODEL, PRIMARY), ResetTarget.to_latest(), execute=True
        )
        result: list[Decision] = []
        failure: list[BaseException] = []
        labels = produce_further()
        min_labelled = len(labels)
        self.say(
            f"{done.version.config.ref} runs as a shadow of {MODEL}:{PRIMARY} on {min_labelled} further clinical "
            f"events; promoted if its {METRIC} beats v{PRIMARY}'s on all of them, labelled ..."
        )

        def run() -> None:
            try:
                result.append(
                    shadow_trial(
                        settings,
                        done.version,
                        primary=PRIMARY,
                        metric=METRIC,
                        min_labelled=min_labelled,
                        wait_s=_WAIT_S,
                        poll_s=1.0,
                    )
                )
            except BaseException as exc:  # the demo's thread says why it failed
                failure.append(exc)

        thread = threading.Thread(target=run, name="demo-shadow-trial", daemon=True)
        thread.start()
        self.summary.trial_labels = client.produce_labels(labels, source="demo").produced
        thread.join(_WAIT_S + 120)
        if failure:
            raise failure[0]
        if not result:
            raise KafkaError(f"the shadow trial of {done.version.config.ref} did not end within {_WAIT_S + 120:g} s")
        decision = result[0]
        comparison = decision.comparison
        quality = comparison.quality
        self.summary.shadow_predictions = comparison.shadow_count
        if quality is not None:
            self.summary.labelled_shadow = quality.labelled
            self.summary.before = {m: quality.primary[m] for m in (METRIC, "f1_macro") if m in quality.primary}
            self.summary.after = {m: quality.shadow[m] for m in (METRIC, "f1_macro") if m in quality.shadow}
        self.summary.promoted = decision.promote
        self.summary.decision = decision.reason
        self.summary.elapsed_s = time.perf_counter() - self._started
        self.say(decision.reason)
        return decision


def _verdict(alert: DriftAlert) -> dict[str, Any]:
    verdict = alert.quality
    shown: dict[str, Any] = {
        "severity": alert.severity,
        "window_start": alert.window_start.isoformat(timespec="seconds"),
        "window_count": alert.window_count,
        "labels": verdict.labels.count if verdict else 0,
        "report_path": alert.report_path,
    }
    for metric in verdict.metrics if verdict else []:
        if metric.metric == METRIC:
            shown[METRIC], shown["limit"] = metric.value, metric.limit
    return shown


def _until(done: Callable[[], bool], what: str, timeout: float = _WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            raise KafkaError(f"the demo waited {timeout:g} s for {what}")
        time.sleep(0.25)


__all__ = ["LoopSummary", "QualityLoop"]
