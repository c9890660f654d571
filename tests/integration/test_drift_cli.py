"""The drift CLI against the real broker: reference from the topic, alerts, reports, status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_drift import WINDOW, _predictions, _produce, _Running

from inferstream import Client, Settings
from inferstream.streams.drift_monitor import DriftMonitor

MONITORS = """
[[monitors]]
name = "bc"
model = "breast-cancer"
version = "1"
window = { kind = "time", duration_s = 500 }
columns = [{ name = "mean_radius" }, { name = "mean_area" }, { name = "label", kind = "prediction" }]
"""


def _cli(settings: Settings, monitors: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_MONITORING__MONITORS_FILE": str(monitors),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "inferstream", *args], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def test_reference_run_alerts_reports_status_from_the_cli(settings: Settings, tmp_path: Path) -> None:
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"monitors_file": monitors})}
    )
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _produce(settings, _predictions(2 * WINDOW))
    built = _cli(settings, monitors, "monitor", "reference", "bc", "--first", "1000")
    assert "v0001" in built.stderr
    assert "ks" in built.stderr or "wasserstein" in built.stderr
    _produce(settings, _predictions(WINDOW, scale=1.3, start=2 * WINDOW) + _predictions(WINDOW, start=3 * WINDOW))
    running = _Running(DriftMonitor(settings, settings.monitoring.monitor("bc")))
    running.wait_windows(3)
    running.stop()
    shown = _cli(settings, monitors, "alerts", "--timeout", "3")
    assert "bc" in shown.stderr
    assert "drift" in shown.stderr
    assert "mean_radius" in shown.stderr
    listed = _cli(settings, monitors, "reports", "list")
    assert ".html" in listed.stderr
    status = _cli(settings, monitors, "monitor", "status", "bc")
    assert '"alert_active": true' in status.stdout
