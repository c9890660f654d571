"""Quality monitoring: a concept drift found on late labels, CBPE's estimate before them, and a retrained model.

    .venv/bin/python benchmarks/quality.py --quick     # 8 windows of 1,200 predictions per stream, ~ half a minute
    .venv/bin/python benchmarks/quality.py             # 24 windows of 5,000

Two labelled streams of a logistic-regression classifier over 6 standard-normal features:
a control stream where P(y | x) never changes, and one where, from a known window on,
the relation of the features to the label changes (two coefficients flip sign) while
the features keep their distribution: a concept drift, invisible to a drift monitor.
Predictions go into an inference table and labels into its label table with the files
the sinks write; labels come late, 60% one window after their predictions, the rest a
window later (a re-evaluation). Each round runs a quality monitor's path, as
``monitor run`` does, minus the alert's produce: read the table joined with its labels,
decode, evaluate the windows whose labels changed, replay the hysteresis.

Figures: labels joined per second (labelled rows through read, join and evaluation);
the alert's delay in windows after the drift (``inf`` when none came); false alerts on
the control; the mean absolute error of CBPE's estimated accuracy (at the window's first
evaluation, before any label) against the realised one (on all its labels) over the
control stream and the windows before the drift; and, on held-out drifted data, a model
retrained on the drifted labelled windows against the old one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from _harness import note, print_figures, result_line
from inferstream.monitoring.label_table import write_labels
from inferstream.monitoring.quality import QualityEvaluator
from inferstream.monitoring.quality_read import load_reference, read_rows
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.table import write_batch
from inferstream.schemas.records import Label, Latency, Prediction

FEATURES = 6
WINDOW_S = 60.0
BASE = 1_767_225_600  # 2026-01-01T00:00:00Z, a whole multiple of the window
WEIGHTS = np.asarray([2.0, -1.5, 1.0, 0.8, -0.6, 0.4])
DRIFTED = WEIGHTS * np.asarray([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0])  # the two strongest flip: a concept drift
TOPIC = "bench.predictions"


def labelled(rng: np.random.Generator, count: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (the same distribution always) and labels drawn from the concept ``weights``."""
    x = rng.standard_normal((count, FEATURES))
    y = (rng.random(count) < 1 / (1 + np.exp(-(x @ weights)))).astype(np.int64)
    return x, y


@dataclass
class Stream:
    """One stream's table and what came of it."""

    root: Path
    spec: MonitorSpec
    offset: int = 0
    label_offset: int = 0
    estimated: dict[int, float] = field(default_factory=dict)  # window → estimate at its first evaluation
    realised: dict[int, float] = field(default_factory=dict)  # window → realised accuracy, latest
    alerts: list[tuple[int, str]] = field(default_factory=list)  # (window, status)
    labels_joined: int = 0
    seconds: float = 0.0

    def predict(self, model: object, x: np.ndarray, start: float) -> list[str]:
        """Score ``x`` and write its predictions, one per ``WINDOW_S / len(x)`` seconds from ``start``."""
        probabilities = model.predict_proba(x)  # type: ignore[attr-defined]
        step = WINDOW_S / len(x)
        rows = []
        for i in range(len(x)):
            p1 = round(float(probabilities[i, 1]), 6)
            rows.append(
                (
                    self.offset + i,
                    Prediction(
                        request_id=f"{self.root.name}-{self.offset + i}",
                        event_time=datetime.fromtimestamp(start + i * step, UTC),
                        model="bench",
                        version="1",
                        inputs={},
                        outputs={"label": int(p1 > 0.5), "probabilities": {"0": 1 - p1, "1": p1}},
                        latency=Latency(queue_ms=0, compute_ms=0, total_ms=0),
                    ),
                )
            )
        write_batch(self.root, TOPIC, 0, rows)
        self.offset += len(x)
        return [row.request_id for _, row in rows]

    def label(self, ids: list[str], y: np.ndarray, at: float) -> None:
        """Write the labels of ``ids`` as the label sink would."""
        when = datetime.fromtimestamp(at, UTC)
        rows = [
            (self.label_offset + i, Label(id=rid, label=int(v), label_time=when))
            for i, (rid, v) in enumerate(zip(ids, y.tolist(), strict=True))
        ]
        write_labels(self.root, "bench.labels", 0, rows)
        self.label_offset += len(rows)


def spec(reference_until: float, min_labels: int) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "name": "bench-quality",
            "type": "quality",
            "model": "bench",
            "window": {"kind": "time", "duration_s": WINDOW_S},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 2},
            "quality": {
                "task": "classification",
                "probabilities": "probabilities",
                "min_labels": min_labels,
                "horizon_s": 1e9,
                "reference_since": datetime.fromtimestamp(BASE, UTC).isoformat(),
                "reference_until": datetime.fromtimestamp(reference_until, UTC).isoformat(),
                "max_drop": {"accuracy": 0.05},
            },
        }
    )


def run_stream(
    stream: Stream, model: object, rng: np.random.Generator, windows: int, per_window: int, drift_at: int | None
) -> None:
    """Reference window, then ``windows`` windows: predictions now, 60% of labels a window later, the rest after."""
    x, y = labelled(rng, per_window * 2, WEIGHTS)
    ids = stream.predict(model, x, BASE)
    stream.label(ids, y, BASE + 2 * WINDOW_S)
    reference, _ = load_reference(stream.root, stream.spec)
    evaluator = QualityEvaluator(stream.spec, reference=reference)
    first = BASE + 2 * WINDOW_S  # stream windows start after the reference (which spans two)
    pending: list[tuple[int, list[str], np.ndarray]] = []  # (due round, ids, labels)
    for k in range(windows + 3):
        if k < windows:
            weights = DRIFTED if drift_at is not None and k >= drift_at else WEIGHTS
            x, y = labelled(rng, per_window, weights)
            ids = stream.predict(model, x, first + k * WINDOW_S)
            cut = int(per_window * 0.6)
            pending += [(k + 1, ids[:cut], y[:cut]), (k + 2, ids[cut:], y[cut:])]
        else:  # one prediction per round past the end moves the table's newest time on
            stream.predict(model, labelled(rng, 1, WEIGHTS)[0], first + k * WINDOW_S)
        for _due, due_ids, due_y in [p for p in pending if p[0] == k]:
            stream.label(due_ids, due_y, first + (k + 1) * WINDOW_S)
        pending = [p for p in pending if p[0] != k]
        started = time.perf_counter()
        rows = read_rows(stream.root, stream.spec, since=evaluator.since())
        done = evaluator.evaluate(rows)
        transitions = evaluator.transitions()
        stream.seconds += time.perf_counter() - started
        stream.labels_joined += int(rows.labelled.sum())
        for evaluation in done:
            index = round((evaluation.start - first) / WINDOW_S)
            if not 0 <= index < windows:
                continue  # the reference's own windows, or the rounds past the end
            if evaluation.evaluation == 1 and evaluation.estimated.get("accuracy") is not None:
                stream.estimated[index] = float(evaluation.estimated["accuracy"])  # type: ignore[arg-type]
            if evaluation.metrics.get("accuracy") is not None and evaluation.labelled:
                stream.realised[index] = float(evaluation.metrics["accuracy"])  # type: ignore[arg-type]
        for evaluation, status in transitions:
            evaluator.mark_published(evaluation, status)
            stream.alerts.append((round((evaluation.start - first) / WINDOW_S), status))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small sizes: under a minute.")
    args = parser.parse_args()
    windows, per_window = (8, 1200) if args.quick else (24, 5000)
    drift_at = windows // 2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x_train, y_train = labelled(rng, 20_000, WEIGHTS)
    model = LogisticRegression(random_state=0).fit(x_train, y_train)
    streams = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, drift in (("control", None), ("drift", drift_at)):
            stream = Stream(Path(tmp) / name, spec(BASE + 2 * WINDOW_S, min_labels=per_window // 2))
            run_stream(stream, model, np.random.default_rng(1 if drift is None else 2), windows, per_window, drift)
            streams[name] = stream
            realised = [round(stream.realised[k], 3) for k in sorted(stream.realised)]
            estimated = [round(stream.estimated[k], 3) for k in sorted(stream.estimated)]
            note(f"{name}: accuracy per window {realised}, estimated before labels {estimated}, alerts {stream.alerts}")
    control, drifted = streams["control"], streams["drift"]
    degraded = [w for w, status in drifted.alerts if status == "degraded" and w >= drift_at]
    errors = [abs(control.estimated[k] - control.realised[k]) for k in control.estimated if k in control.realised]
    errors += [abs(drifted.estimated[k] - drifted.realised[k]) for k in drifted.estimated if k < drift_at]

    # Retraining on the drifted labelled windows (plain scikit-learn with a fixed seed: `models retrain`
    # is the platform's command for it), compared on held-out data of the drifted concept.
    x_new, y_new = labelled(np.random.default_rng(3), per_window * (windows - drift_at), DRIFTED)
    x_test, y_test = labelled(np.random.default_rng(4), 20_000, DRIFTED)
    retrained = LogisticRegression(random_state=0).fit(x_new, y_new)
    labels = control.labels_joined + drifted.labels_joined
    figures = {
        "labels_joined_per_s": labels / (control.seconds + drifted.seconds),
        "quality_alert_delay_windows": float(degraded[0] - drift_at) if degraded else float("inf"),
        "false_quality_alerts": float(sum(status == "degraded" for _, status in control.alerts)),
        "estimated_accuracy_mae": float(np.mean(errors)),
        "retrained_accuracy": float(retrained.score(x_test, y_test)),
        "old_accuracy": float(model.score(x_test, y_test)),
    }
    print_figures(figures)
    delay, false_alerts, mae = (
        figures[k] for k in ("quality_alert_delay_windows", "false_quality_alerts", "estimated_accuracy_mae")
    )
    print(
        f"goals: alert delay <= 2 windows ({delay:g}), no false alerts ({false_alerts:g}), "
        f"estimate MAE <= 0.03 ({mae:.4f})"
    )
    print(result_line(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
