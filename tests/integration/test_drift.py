"""Drift monitors against the real broker: quiet on stationary data, alert on a shift, resolve, webhook, restart."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer
from inferstream.monitoring.reference import build_reference, references_dir
from inferstream.monitoring.reports import monitor_state_dir, read_status
from inferstream.monitoring.spec import MonitorSpec
from inferstream.schemas import DriftAlert, Prediction, codec_for
from inferstream.serving.demo_models import tabular_rows
from inferstream.streams.drift_monitor import DriftMonitor

WINDOW = 500
FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_concave_points",
    "mean_symmetry",
    "mean_fractal_dimension",
]


def _spec(**alerting: Any) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "name": "bc",
            "model": "breast-cancer",
            "version": "1",
            "columns": [{"name": f} for f in FEATURES] + [{"name": "label", "kind": "prediction"}],
            # Event time, one prediction a second: WINDOW predictions per window, whatever the
            # order the partitions are read in.
            "window": {"kind": "time", "duration_s": WINDOW},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 1, **alerting},
        }
    )


def _predictions(count: int, *, scale: float = 1.0, start: int = 0, seed: int = 0) -> list[Prediction]:
    rows, target = tabular_rows(scale)
    rng = random.Random(seed)
    base = datetime.fromtimestamp(1_735_689_000, UTC)  # a multiple of the window length
    out = []
    for i in range(start, start + count):
        k = rng.randrange(len(rows))
        out.append(
            Prediction(
                request_id=f"r{i}",
                event_time=base + timedelta(seconds=i),
                model="breast-cancer",
                version="1",
                inputs=rows[k],
                outputs={"label": "benign" if target[k] else "malignant"},
                latency={"queue_ms": 0.1, "compute_ms": 0.2, "total_ms": 0.5},
            )
        )
    return out


def _produce(settings: Settings, predictions: list[Prediction], extra: list[bytes] = ()) -> None:  # type: ignore[assignment]
    codec = codec_for(Prediction)
    topic = settings.topics.platform_topics()["predictions"]
    with Producer(settings) as producer:
        for p in predictions:
            producer.produce(topic, codec.encode(p), p.key(), [codec.header])
        for value in extra:
            producer.produce(topic, value, b"bad")


def _reference(settings: Settings, spec: MonitorSpec) -> None:
    records = [json.loads(codec_for(Prediction).encode(p)) for p in _predictions(3000, seed=99)]
    build_reference(spec, records, root=references_dir(settings), source="test")


class _Running:
    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert monitor.ready.wait(60)

    def _run(self) -> None:
        try:
            self.monitor.run()
        except BaseException as exc:
            self.errors.append(exc)

    def wait_windows(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.monitor.stats.windows < count and time.monotonic() < deadline and not self.errors:
            time.sleep(0.1)
        assert not self.errors, self.errors
        assert self.monitor.stats.windows >= count, self.monitor.stats

    def stop(self) -> None:
        self.monitor.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    calls: ClassVar[int] = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        body = self.rfile.read(int(self.headers["content-length"]))
        if type(self).calls == 1:  # the first delivery fails: the sender retries
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "calls": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


def test_quiet_then_alert_within_two_windows_then_resolved_with_webhook_and_report(
    settings: Settings, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    spec = _spec(webhook=url)
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _reference(settings, spec)
    # 6 stationary windows, then the demo's 1.3x shift for 3, then normal again for 3.
    stream = _predictions(6 * WINDOW) + _predictions(3 * WINDOW, scale=1.3, start=6 * WINDOW, seed=1)
    stream += _predictions(4 * WINDOW, start=9 * WINDOW, seed=2)  # the last one moves the watermark on
    _produce(settings, stream)
    running = _Running(DriftMonitor(settings, spec))
    running.wait_windows(12)
    running.stop()

    verdicts = [w["dataset_drift"] for w in running.monitor.recent]
    assert verdicts[:6] == [False] * 6  # no alarm on stationary data
    transitions = [(w["index"], w["transition"]) for w in running.monitor.recent if w["transition"]]
    assert transitions[0][1] == "drift"
    assert transitions[0][0] in (6, 7)  # within two windows of the shift
    assert transitions[-1][1] == "resolved"
    assert transitions[-1][0] >= 9

    with Client(settings) as client:
        alerts = list(client.alerts(from_beginning=True, idle_timeout=5))
    assert [a.status for a in alerts] == ["drift", "resolved"]
    drift = alerts[0]
    assert isinstance(drift, DriftAlert)
    assert drift.dataset_drift
    assert drift.severity in ("warning", "critical")
    assert {c.column for c in drift.columns if c.drifted} >= {"mean_radius", "mean_area"}
    assert drift.window_count == WINDOW
    assert drift.report_path is not None
    assert (
        Path(drift.report_path).read_text().lower().startswith("<!doctype html")
        or "<html" in Path(drift.report_path).read_text()[:2000].lower()
    )
    # The webhook got both, once each, after a retry of the first.
    assert [body["status"] for body in hook.received] == ["drift", "resolved"]
    assert hook.received[0]["id"] == drift.id
    status = read_status(monitor_state_dir(settings, "bc"))
    assert status is not None
    assert status["alert_active"] is False
    assert status["counts"]["windows"] == 12


def test_a_restart_mid_window_keeps_the_window_whole(settings: Settings) -> None:
    spec = _spec()
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _reference(settings, spec)
    _produce(settings, _predictions(WINDOW + WINDOW // 2))
    first = _Running(DriftMonitor(settings, spec))
    first.wait_windows(1)
    time.sleep(1)  # let it read the half window too
    first.stop()
    assert [w["count"] for w in first.monitor.recent] == [WINDOW]

    _produce(settings, _predictions(WINDOW, start=WINDOW + WINDOW // 2, seed=5))
    second = _Running(DriftMonitor(settings, spec))
    second.wait_windows(1)
    second.stop()
    # The half window read before the restart was replayed: the second window is whole.
    assert [(w["index"], w["count"]) for w in second.monitor.recent] == [(1, WINDOW)]


def test_bad_input_is_counted_in_the_window_and_the_monitor_goes_on(settings: Settings) -> None:
    spec = _spec()
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _reference(settings, spec)
    first = _predictions(WINDOW - 20)
    broken = []
    for i, p in enumerate(_predictions(20, start=WINDOW - 20, seed=3)):
        inputs = dict(p.inputs)
        if i < 5:
            inputs.pop("mean_radius")
        elif i < 10:
            inputs["mean_radius"] = "large"
        else:
            inputs["mean_radius"] = None  # a burst of nulls
        broken.append(p.model_copy(update={"inputs": inputs}))
    extra = [b"not json", b'{"model": "breast-cancer", "version": "1"}']
    # Undecodable records have no event time: they count in the oldest open window, so they go
    # before the next window's predictions (which close the first) in every partition.
    _produce(settings, first + broken, extra)
    _produce(settings, _predictions(WINDOW // 2, start=WINDOW, seed=4))
    running = _Running(DriftMonitor(settings, spec))
    running.wait_windows(1)
    running.stop()
    window = running.monitor.recent[0]
    assert window["count"] == WINDOW
    assert window["quality"]["mean_radius"] == {"missing": 5, "invalid": 5, "nan": 10}
    assert window["bad_records"] == 2
    assert window["columns"]["mean_radius"] is not None
