"""The README's first command, reduced: every event accounted for."""

from pathlib import Path

from inferstream import Settings
from inferstream.demo import run_demo


def test_demo_accounts_for_every_event(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"models_dir": tmp_path / "models"})
    lines: list[str] = []
    summary = run_demo(settings, events=200, say=lines.append)
    assert not summary.started_kafka  # the harness broker answered
    assert summary.events_produced == 200
    assert summary.events_read == 200
    assert summary.bad_records == 3
    assert summary.dead_letters == 3
    assert summary.accounted
    assert summary.samples
    assert summary.requests == 100
    assert summary.predictions == 100
    assert summary.request_dead_letters == 0
    # The shift moves the classifier's answers: the drift the monitors will catch.
    assert summary.malignant_share_after > summary.malignant_share_before
    assert summary.predict_round_trip_ms > 0
    assert any("dead-letter" in line for line in lines)
