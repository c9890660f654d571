"""Quality monitors without services: metrics, CBPE, windows re-evaluated on late labels, alert ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from inferstream.errors import ConfigError
from inferstream.evaluation.quality import (
    classification_metrics,
    expected_calibration_error,
    regression_metrics,
)
from inferstream.monitoring.cbpe import Calibration, estimate
from inferstream.monitoring.label_table import write_labels
from inferstream.monitoring.quality import QualityEvaluator, QualityReference
from inferstream.monitoring.quality_alerts import make_quality_alert
from inferstream.monitoring.quality_read import load_reference, read_rows
from inferstream.monitoring.quality_rows import class_name, decode
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.table import write_batch
from inferstream.schemas.records import Label, Latency, Prediction


def test_classification_metrics_by_hand() -> None:
    probabilities = np.asarray([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    found = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"], probabilities)
    assert found["accuracy"] == 0.75
    assert found["precision[a]"] == 1.0
    assert found["recall[a]"] == 0.5
    assert found["f1[a]"] == pytest.approx(2 / 3)
    assert found["precision[b]"] == pytest.approx(2 / 3)
    assert found["recall[b]"] == 1.0
    assert found["f1[b]"] == pytest.approx(0.8)
    assert found["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    # Every positive (b) scores above every negative: AUC 1.
    assert found["roc_auc"] == 1.0
    assert found["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))


def test_expected_calibration_error_by_hand() -> None:
    # Bin 0.9: half right at confidence 0.9 (gap 0.4); bin 0.6: all right at 0.6 (gap 0.4).
    confidence = np.asarray([0.9, 0.9, 0.6, 0.6])
    assert expected_calibration_error(confidence, np.asarray([True, False, True, True])) == pytest.approx(0.4)
    assert expected_calibration_error(np.asarray([1.0, 1.0]), np.asarray([True, True])) == 0.0


def test_regression_metrics_by_hand() -> None:
    found = regression_metrics(np.asarray([1.0, 2.0, 3.0]), np.asarray([1.0, 2.0, 5.0]))
    assert found["mae"] == pytest.approx(2 / 3)
    assert found["rmse"] == pytest.approx((4 / 3) ** 0.5)
    assert found["r2"] == pytest.approx(1 - 4 / 2)
    assert regression_metrics(np.asarray([2.0, 2.0]), np.asarray([1.0, 3.0]))["r2"] is None


def test_cbpe_expected_accuracy_and_f1_by_hand() -> None:
    positive = np.asarray([0.8, 0.6, 0.3, 0.1])
    probabilities = np.column_stack([1 - positive, positive])
    predicted = np.asarray([1, 1, 0, 0])
    found = estimate(probabilities, predicted, ["a", "b"])
    assert found["accuracy"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.9) / 4)
    # b: TP 0.8 + 0.6, FP 0.2 + 0.4, FN 0.3 + 0.1.
    assert found["f1[b]"] == pytest.approx(2 * 1.4 / (2 * 1.4 + 0.6 + 0.4))


def test_cbpe_calibration_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0, 1, 20_000)
    truth = (rng.uniform(0, 1, true_p.size) < true_p).astype(np.int64)
    # The model says 0 or 1 where the truth is a coin with probability true_p: overconfident.
    said = np.clip((true_p - 0.5) * 3 + 0.5, 0.0, 1.0)
    probabilities = np.column_stack([1 - said, said])
    predicted = (said > 0.5).astype(np.int64)
    realised = float(np.mean(predicted == truth))
    raw = estimate(probabilities, predicted, ["0", "1"])["accuracy"]
    calibrated_p = Calibration.fit(probabilities, truth, ["0", "1"]).apply(probabilities, ["0", "1"])
    calibrated = estimate(calibrated_p, predicted, ["0", "1"])["accuracy"]
    assert raw is not None
    assert calibrated is not None
    assert abs(raw - realised) > 0.05
    assert abs(calibrated - realised) < 0.01


def test_classes_are_compared_as_text() -> None:
    assert [class_name(v) for v in (1, 1.0, "1", True, "spam")] == ["1", "1", "1", "true", "spam"]


def _spec(**quality: Any) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "name": "q",
            "type": "quality",
            "model": "m",
            "window": {"kind": "time", "duration_s": 60},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 1},
            "quality": {
                "task": "classification",
                "probabilities": "probabilities",
                "min_labels": 5,
                "thresholds": {"accuracy": 0.8},
                **quality,
            },
        }
    )


def _table(rows: list[tuple[int, str, str | None]]) -> pa.Table:
    """Rows as read_table gives them: (second, predicted class, label or None); p(b) 0.9 for b, 0.1 for a."""
    stamp = pa.timestamp("ms", tz="UTC")
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(len(rows))],
            "version": ["1"] * len(rows),
            "event_time": pa.array([datetime.fromtimestamp(t, UTC) for t, _, _ in rows], stamp),
            "outputs": [
                json.dumps(
                    {"label": p, "probabilities": {"a": 0.1 if p == "b" else 0.9, "b": 0.9 if p == "b" else 0.1}}
                )
                for _, p, _ in rows
            ],
            "label": [None if label is None else json.dumps(label) for _, _, label in rows],
            "label_time": pa.array(
                [None if label is None else datetime(2026, 1, 1, tzinfo=UTC) for *_, label in rows], stamp
            ),
        }
    )


def _stream(window_1_labels: int) -> pa.Table:
    good = [(i, "a", "a") for i in range(10)]  # window 0: right
    # Window 1: the concept changed, every prediction is wrong; only some are labelled yet.
    drifted = [(60 + i, "a", "b" if i < window_1_labels else None) for i in range(10)]
    later = [(130, "a", None)]  # window 2 opens: window 1 is due
    return _table(good + drifted + later)


def test_a_window_is_judged_when_enough_labels_come_and_not_twice_on_the_same_labels() -> None:
    spec = _spec()
    assert spec.quality is not None
    evaluator = QualityEvaluator(spec)
    first = evaluator.evaluate(decode(_stream(2), spec.quality))
    assert [(e.window, e.labelled, e.degraded) for e in first] == [(0, 10, False), (1, 2, None)]
    assert first[1].metrics["accuracy"] == 0.0
    # Before its labels, window 1's estimate says 0.9 (the model is sure of itself).
    assert first[1].estimated["accuracy"] == pytest.approx(0.9)
    assert evaluator.transitions() == []

    # Late labels: window 1 alone is evaluated again, judged, and degraded.
    later = evaluator.evaluate(decode(_stream(8), spec.quality))
    assert [(e.window, e.evaluation, e.labelled, e.degraded) for e in later] == [(1, 2, 8, True)]
    assert later[0].breaches == ["accuracy"]
    pending = evaluator.transitions()
    assert [(e.window, status) for e, status in pending] == [(1, "degraded")]
    alert = make_quality_alert(spec, pending[0][0], "degraded", QualityReference(), None)
    assert alert.quality is not None
    assert alert.quality.labels.count == 8
    assert alert.quality.evaluation == 2
    assert alert.kind == "quality"
    assert alert.status == "degraded"

    # A restart before the alert was marked published evaluates nothing and gives the same alert id.
    restarted = QualityEvaluator(spec, state=json.loads(json.dumps(evaluator.state())))
    assert restarted.evaluate(decode(_stream(8), spec.quality)) == []
    again = restarted.transitions()
    assert make_quality_alert(spec, again[0][0], "degraded", QualityReference(), None).id == alert.id

    evaluator.mark_published(*pending[0])
    assert evaluator.evaluate(decode(_stream(8), spec.quality)) == []
    assert evaluator.transitions() == []
    # Other labels for the same window are another evaluation, another alert id if it were published.
    relabelled = evaluator.evaluate(decode(_stream(9), spec.quality))
    assert relabelled[0].evaluation == 3
    assert make_quality_alert(spec, relabelled[0], "degraded", QualityReference(), None).id != alert.id


def test_a_window_closed_before_any_label_has_its_estimate_alone() -> None:
    spec = _spec()
    assert spec.quality is not None
    evaluator = QualityEvaluator(spec)
    (only,) = evaluator.evaluate(decode(_table([(i, "b", None) for i in range(10)] + [(70, "a", None)]), spec.quality))
    assert (only.labelled, only.degraded, only.metrics["accuracy"]) == (0, None, None)
    assert only.estimated["accuracy"] == pytest.approx(0.9)


def test_predictions_a_monitor_cannot_score_are_counted_and_left_out() -> None:
    spec = _spec()
    assert spec.quality is not None
    table = _table([(i, "a", "a") for i in range(6)])
    outputs = [
        "not json",
        json.dumps(["a list"]),
        json.dumps({"probabilities": {"a": 0.5, "b": 0.5}}),  # no label
        json.dumps({"label": "a", "probabilities": {"a": 1.5, "b": -0.5}}),  # not probabilities
        json.dumps({"label": {"a": 1}, "probabilities": {"a": 1.0, "b": 0.0}}),  # a label that is no class
        json.dumps({"label": "a", "probabilities": {"a": 0.9, "b": 0.1}}),
    ]
    table = table.set_column(table.column_names.index("outputs"), "outputs", pa.array(outputs))
    rows = decode(table, spec.quality)
    assert (len(rows), rows.bad, rows.request_ids) == (1, 5, ["r5"])


def test_labels_that_take_back_a_verdict_resolve_the_open_alert() -> None:
    spec = _spec()
    assert spec.quality is not None
    evaluator = QualityEvaluator(spec)
    evaluator.evaluate(decode(_stream(8), spec.quality))
    evaluator.mark_published(*evaluator.transitions()[0])
    # The labeller corrects window 1: the predictions were right after all.
    fixed = _table([(i, "a", "a") for i in range(10)] + [(60 + i, "a", "a") for i in range(10)] + [(130, "a", None)])
    evaluator.evaluate(decode(fixed, spec.quality))
    assert [(e.window, status) for e, status in evaluator.transitions()] == [(1, "resolved")]


def test_max_drop_compares_with_the_reference_window() -> None:
    spec = _spec(
        thresholds={},
        max_drop={"accuracy": 0.1},
        reference_since="2026-01-01T00:00:00Z",
        reference_until="2026-01-02T00:00:00Z",
    )
    evaluator = QualityEvaluator(spec, reference=QualityReference(metrics={"accuracy": 0.95}))
    assert evaluator.limits == {"accuracy": pytest.approx(0.85)}


def test_quality_specs_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown classification metric 'mae'"):
        _spec(thresholds={"mae": 1.0})
    with pytest.raises(ValidationError, match="needs thresholds or max_drop"):
        _spec(thresholds={})
    with pytest.raises(ValidationError, match="max_drop compares with the reference window"):
        _spec(max_drop={"accuracy": 0.1})
    with pytest.raises(ValidationError, match=r'window\.kind = "time"'):
        MonitorSpec.model_validate(
            {"name": "q", "type": "quality", "model": "m", "quality": {"task": "regression", "thresholds": {"mae": 1}}}
        )


def _write(root: Path, rows: list[tuple[int, str, str | None]]) -> None:
    """Predictions (second, predicted class, label) into an inference table and its label table, as the sinks do."""
    predictions = [
        (
            i,
            Prediction(
                request_id=f"r{i}",
                event_time=datetime.fromtimestamp(t, UTC),
                model="m",
                version="1",
                inputs={},
                outputs={"label": p, "probabilities": {"a": 0.2 if p == "b" else 0.8, "b": 0.8 if p == "b" else 0.2}},
                latency=Latency(queue_ms=0, compute_ms=0, total_ms=0),
            ),
        )
        for i, (t, p, _) in enumerate(rows)
    ]
    write_batch(root, "predictions", 0, predictions)
    labels = [(i, Label(id=f"r{i}", label=label)) for i, (_, _, label) in enumerate(rows) if label is not None]
    write_labels(root, "labels", 0, labels)


def test_the_reference_window_gives_the_limits_and_calibrates_the_estimate(tmp_path: Path) -> None:
    # The model says 0.8 and is right 6 times in 10: calibrated on the reference, CBPE says 0.6.
    _write(
        tmp_path,
        [(i, "a", "a" if i % 10 < 6 else "b") for i in range(50)]
        + [(3600 + i, "a", None) for i in range(10)]
        + [(3700, "a", None)],
    )
    spec = _spec(
        thresholds={},
        max_drop={"accuracy": 0.1},
        reference_since="1970-01-01T00:00:00Z",
        reference_until="1970-01-01T00:01:00Z",
    )
    reference, rows = load_reference(tmp_path, spec)
    assert rows is not None
    assert (reference.count, reference.metrics["accuracy"]) == (50, 0.6)
    evaluator = QualityEvaluator(spec, reference=reference)
    assert evaluator.limits == {"accuracy": pytest.approx(0.5)}
    evaluator.evaluate(read_rows(tmp_path, spec))
    unlabelled = evaluator.windows["1|60"]
    assert unlabelled.estimated["accuracy"] == pytest.approx(0.6)
    assert unlabelled.degraded is None

    too_few = _spec(
        thresholds={},
        max_drop={"accuracy": 0.1},
        min_labels=100,
        reference_since="1970-01-01T00:00:00Z",
        reference_until="1970-01-01T00:01:00Z",
    )
    with pytest.raises(ConfigError, match=r"holds 50 labelled predictions of m .* fewer than min_labels"):
        load_reference(tmp_path, too_few)
