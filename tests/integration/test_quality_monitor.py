"""A quality monitor against the real broker: predictions and labels through the sinks, a concept drift, late labels."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inferstream import Client, Settings
from inferstream.monitoring.reports import monitor_state_dir, read_status
from inferstream.monitoring.spec import MonitorSpec
from inferstream.streams.label_sink import LabelTableSink
from inferstream.streams.quality_monitor import QualityMonitor
from inferstream.streams.table_sink import InferenceTableSink

START = datetime(2026, 1, 1, tzinfo=UTC)
PER_WINDOW = 100
_ERRORS: list[BaseException] = []


def _wait(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and not _ERRORS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ERRORS, _ERRORS
    assert condition()


def _start(runner: InferenceTableSink | LabelTableSink | QualityMonitor) -> threading.Thread:
    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            _ERRORS.append(exc)
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert runner.ready.wait(60)
    return thread


def _stop(runner: InferenceTableSink | LabelTableSink | QualityMonitor, thread: threading.Thread) -> None:
    runner.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert not _ERRORS, _ERRORS


def _prediction(window: int, i: int) -> dict[str, object]:
    said = "b" if i % 2 else "a"
    return {
        "request_id": f"w{window}-{i}",
        "event_time": (START + timedelta(seconds=60 * window + i * 0.5)).isoformat(),
        "model": "m",
        "version": "1",
        "inputs": {"x": i},
        "outputs": {"label": said, "probabilities": {said: 0.9, "a" if said == "b" else "b": 0.1}},
        "latency": {"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
    }


def _labels(window: int, right: int, rows: range) -> list[dict[str, object]]:
    """Labels of a window's rows: the prediction's class for ``right`` rows in 10, the other class otherwise."""
    out = []
    for i in rows:
        said = "b" if i % 2 else "a"
        label = said if i % 10 < right else ("a" if said == "b" else "b")
        out.append({"id": f"w{window}-{i}", "label": label, "label_time": (START + timedelta(hours=1)).isoformat()})
    return out


def _spec() -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "name": "m-quality",
            "type": "quality",
            "model": "m",
            "window": {"kind": "time", "duration_s": 60},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 1},
            "quality": {
                "task": "classification",
                "probabilities": "probabilities",
                "min_labels": 40,
                "poll_s": 0.3,
                "horizon_s": 10 * 24 * 3600,
                "thresholds": {"accuracy": 0.8},
            },
        }
    )


def test_a_concept_drift_raises_a_quality_alert_once_its_late_labels_come(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    table = InferenceTableSink(settings, max_rows=1000, max_delay_s=0.3)
    labels = LabelTableSink(settings, max_rows=1000, max_delay_s=0.3, sweep_s=3600)
    sinks = [(table, _start(table)), (labels, _start(labels))]
    with Client(settings) as client:
        # Window 0: the model is right 9 times in 10. Window 1: the concept drifted, it is right 4 in 10,
        # but only 20 of its labels came so far (min_labels is 40). Window 2's first prediction closes window 1.
        predictions = [_prediction(w, i) for w in (0, 1) for i in range(PER_WINDOW)] + [_prediction(2, 0)]
        assert client.produce("predictions", predictions).produced == 2 * PER_WINDOW + 1
        first = _labels(0, 9, range(PER_WINDOW)) + _labels(1, 4, range(20))
        assert client.produce_labels(first, source="test").produced == len(first)
    _wait(lambda: table.stats.written == 2 * PER_WINDOW + 1 and labels.stats.written == PER_WINDOW + 20)

    spec = _spec()
    monitor = QualityMonitor(settings, spec, reports=True)
    thread = _start(monitor)
    _wait(lambda: monitor.stats.evaluations == 2)
    first_window = int(START.timestamp()) // 60
    good, drifted = (monitor.evaluator.windows[f"1|{first_window + k}"] for k in (0, 1))
    assert (good.labelled, good.degraded) == (PER_WINDOW, False)
    assert (drifted.labelled, drifted.degraded) == (20, None)  # too few labels for a verdict
    assert drifted.estimated["accuracy"] == pytest.approx(0.9)  # CBPE: the model is sure of itself
    assert monitor.stats.alerts == 0
    _stop(monitor, thread)  # stopped while the rest of the labels are written, so that one evaluation sees them all

    with Client(settings) as client:
        late = _labels(1, 4, range(20, PER_WINDOW))
        assert client.produce_labels(late, source="test").produced == len(late)
    _wait(lambda: labels.stats.written == 2 * PER_WINDOW)
    # Restarted from its status file: window 0 is not evaluated again; window 1 is, on its late labels.
    monitor = QualityMonitor(settings, spec, reports=True)
    thread = _start(monitor)
    _wait(lambda: monitor.stats.alerts == 1)
    _stop(monitor, thread)
    assert (monitor.stats.evaluations, monitor.stats.reevaluations) == (1, 1)

    with Client(settings) as client:
        (alert,) = client.alerts(monitor="m-quality", from_beginning=True, idle_timeout=5)
    assert (alert.kind, alert.status, alert.version) == ("quality", "degraded", "1")
    assert alert.window_start == START + timedelta(seconds=60)
    assert alert.quality is not None
    assert (alert.quality.labels.count, alert.quality.evaluation) == (PER_WINDOW, 2)
    accuracy = next(m for m in alert.quality.metrics if m.metric == "accuracy")
    assert (accuracy.value, accuracy.limit, accuracy.breached) == (0.4, 0.8, True)
    assert accuracy.estimated == pytest.approx(0.9)  # CBPE cannot see a concept drift: the labels do
    assert alert.report_path is not None
    assert "Classification" in Path(alert.report_path).read_text()

    # Restarted: the same files, the same labels, nothing evaluated or published again.
    restarted = QualityMonitor(settings, spec, reports=False)
    assert restarted.step() == []
    assert restarted.stats.evaluations == 0
    status = read_status(monitor_state_dir(settings, "m-quality"))
    assert status is not None
    assert status["alert_active"] is True

    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "COLUMNS": "250",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "inferstream", "alerts", "--timeout", "3"], capture_output=True, env=env, timeout=120
    )
    assert shown.returncode == 0, shown.stderr.decode()
    text = shown.stdout.decode() + shown.stderr.decode()
    assert "degraded" in text
    assert "accuracy 0.4 (limit 0.8, estimated 0.9)" in text
    for sink, sink_thread in sinks:
        _stop(sink, sink_thread)
