"""Monitors declared in a TOML file or the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstream import Settings
from inferstream.errors import ConfigError
from inferstream.monitoring.spec import AlertingSpec


def test_monitors_file_is_read_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "monitors.toml"
    path.write_text(
        """
[[monitors]]
name = "bc"
model = "breast-cancer"
window = { kind = "time", duration_s = 60, slide = 30 }
columns = [{ name = "mean_radius" }, { name = "label", kind = "prediction" }]
alerting = { alert_after = 2, alert_window = 3, resolve_after = 2, webhook = "http://127.0.0.1:9/x" }
"""
    )
    settings = Settings.load(monitoring={"monitors_file": path})
    spec = settings.monitoring.monitor("bc")
    assert spec.window.panes == 2
    assert spec.columns[1].path == ("outputs", "label")
    assert spec.columns[0].path == ("inputs", "mean_radius")
    with pytest.raises(ConfigError, match="no monitor named 'nope' \\(declared: bc\\)"):
        settings.monitoring.monitor("nope")


def test_bad_monitor_declarations_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "monitors.toml"
    path.write_text(
        '[[monitors]]\nname = "x"\nmodel = "m"\ncolumns = [{ name = "a" }]\n'
        "alerting = { alert_after = 3, alert_window = 2 }\n"
    )
    with pytest.raises(ConfigError, match="alert_after"):
        Settings.load(monitoring={"monitors_file": path}).monitoring.all_monitors()


def test_a_blank_webhook_is_none() -> None:
    # A deployment fills the URL from a variable that may be unset (compose: INFERSTREAM_DRIFT_WEBHOOK).
    assert AlertingSpec(webhook="").webhook is None
    assert AlertingSpec(webhook="  ").webhook is None
    assert AlertingSpec(webhook="http://hooks:9000/drift").webhook == "http://hooks:9000/drift"
