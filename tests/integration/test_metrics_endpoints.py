"""`monitor run` and `table sink`, run as CLI processes against the real broker, serve /metrics on the port given."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from test_drift import WINDOW, _predictions, _produce

from inferstream import Client, Settings
from inferstream.monitoring.reference import build_reference, references_dir
from inferstream.schemas import Prediction, codec_for

MONITORS = """
[[monitors]]
name = "bc"
model = "breast-cancer"
version = "1"
window = { kind = "time", duration_s = 500 }
columns = [{ name = "mean_radius" }, { name = "mean_area" }, { name = "label", kind = "prediction" }]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    total = 0.0
    for found, value in re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', found))
        if all(pairs.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def _scrape_until(port: int, child: subprocess.Popen[bytes], log: Path, done: str, **labels: str) -> str:
    """The process's /metrics once ``done`` has a sample above 0 (fails if the process exits first)."""
    deadline = time.monotonic() + 120
    while True:
        assert child.poll() is None, f"the process exited: {log.read_text()}"
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        except (urllib.error.URLError, ConnectionError):
            text = ""  # not listening yet
        if _metric(text, done, **labels) > 0:
            return text
        assert time.monotonic() < deadline, f"{done} never rose on :{port}; log: {log.read_text()}\n{text}"
        time.sleep(0.5)


def test_monitor_run_and_table_sink_serve_their_metrics(settings: Settings, tmp_path: Path) -> None:
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"monitors_file": monitors})}
    )
    spec = settings.monitoring.monitor("bc")
    reference_rows = [json.loads(codec_for(Prediction).encode(p)) for p in _predictions(2 * WINDOW, seed=99)]
    build_reference(spec, reference_rows, root=references_dir(settings), source="test")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    # Two windows, the second drifted; a third past it moves the watermark so both close.
    _produce(settings, _predictions(WINDOW) + _predictions(WINDOW, scale=1.3, start=WINDOW))
    _produce(settings, _predictions(WINDOW, start=2 * WINDOW))
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_MONITORING__MONITORS_FILE": str(monitors),
    }
    monitor_port, table_port = _free_port(), _free_port()
    commands = {
        "monitor": ["monitor", "run", "bc", "--no-reports", "--metrics-port", str(monitor_port)],
        "table": ["table", "sink", "--max-delay", "0.5", "--metrics-port", str(table_port)],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    with contextlib.ExitStack() as files:
        children = {
            name: subprocess.Popen([sys.executable, "-m", "inferstream", *args], env=env, stdout=out, stderr=out)
            for name, args in commands.items()
            for out in [files.enter_context(logs[name].open("ab"))]
        }
        try:
            monitor = _scrape_until(
                monitor_port, children["monitor"], logs["monitor"], "inferstream_drift_alerts_total"
            )
            table = _scrape_until(table_port, children["table"], logs["table"], "inferstream_table_rows_written_total")
        finally:
            for child in children.values():
                child.send_signal(signal.SIGTERM)
            codes = {name: child.wait(120) for name, child in children.items()}
    assert codes == {"monitor": 0, "table": 0}, {name: log.read_text() for name, log in logs.items()}
    # The monitor: its windows, the drift per column, the alert and its state (an alert is open).
    assert _metric(monitor, "inferstream_drift_windows_total", monitor="bc", drifted="true") >= 1
    assert _metric(monitor, "inferstream_drift_score", monitor="bc", column="mean_radius") > 0
    assert _metric(monitor, "inferstream_drift_alerts_total", monitor="bc", status="drift") == 1
    assert _metric(monitor, "inferstream_drift_alert_state", monitor="bc") == 2
    assert _metric(monitor, "inferstream_records_in_total", stage="monitor") >= 2 * WINDOW
    # The table sink: rows written, and the stage's records in = out (no dead letters here).
    written = _metric(table, "inferstream_table_rows_written_total")
    assert written >= 1
    assert _metric(table, "inferstream_table_files_written_total") >= 1
    assert _metric(table, "inferstream_records_handled_total", stage="table", outcome="out") == written
    assert f'group="{settings.topics.prefix}table"' in table  # consumer lag per group and partition
