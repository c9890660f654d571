"""The README's first command, reduced: every event accounted for."""

from inferstream import Settings
from inferstream.demo import run_demo


def test_demo_accounts_for_every_event(settings: Settings) -> None:
    lines: list[str] = []
    summary = run_demo(settings, events=200, say=lines.append)
    assert not summary.started_kafka  # the harness broker answered
    assert summary.events_produced == 200
    assert summary.events_read == 200
    assert summary.bad_records == 3
    assert summary.dead_letters == 3
    assert summary.accounted
    assert summary.samples
    assert any("dead-letter" in line for line in lines)
