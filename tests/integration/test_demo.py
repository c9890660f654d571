"""The README's first command, reduced: every event accounted for, an alert after the shift, a search hit."""

from pathlib import Path

from inferstream import Settings
from inferstream.demo import run_demo


def test_demo_runs_the_whole_platform_and_accounts_for_every_event(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"models_dir": tmp_path / "models"})
    lines: list[str] = []
    summary = run_demo(settings, events=400, say=lines.append)
    assert not summary.started_kafka  # the harness broker answered
    assert summary.events_produced == 400
    assert summary.events_read == 400
    assert summary.bad_records == 3
    assert summary.dead_letters == 3 + summary.embedding_dead_letters
    # Every clinical event became a prediction (through the ingest processor), every doc is indexed.
    assert summary.requests == 200
    assert summary.predictions == 200
    assert summary.request_dead_letters == 0
    assert summary.indexed + summary.embedding_dead_letters == 200
    assert summary.indexed > 190
    assert summary.accounted
    # The shift moves the classifier's answers and raises a drift alert with its report.
    assert summary.malignant_share_after > summary.malignant_share_before
    assert summary.alerts >= 1
    assert summary.report_path is not None
    assert Path(summary.report_path).is_file()
    # The search finds the passage it was asked about (doc-8) first.
    assert summary.search_hits[:1] == ["doc-8"]
    assert summary.predict_round_trip_ms > 0
    assert any("dead-letter" in line for line in lines)
