"""One acknowledgement call per ``produce_many()`` batch, whatever order its reports come in."""

from __future__ import annotations

from typing import Any

import pytest

from inferstream.connectors.kafka.producer import _Counted


class _Recorder:
    """Stands in for the Producer's two entry points the callback uses."""

    def __init__(self) -> None:
        self.acked: list[tuple[Any, str, int]] = []
        self.failed: list[Any] = []

    def _acked_many(self, tag: Any, topic: str, count: int) -> None:
        self.acked.append((tag, topic, count))

    def _on_delivery(self, err: Any, msg: Any, tag: Any = None) -> None:
        self.failed.append((err, tag))


@pytest.mark.parametrize("reports_before_expect", [0, 2, 5])
def test_one_call_with_the_count_once_all_are_acknowledged(reports_before_expect: int) -> None:
    producer = _Recorder()
    callback = _Counted(producer, "batch-1", "out")  # type: ignore[arg-type]
    for _ in range(reports_before_expect):
        callback(None, None)
    assert producer.acked == []
    callback.expect(5)
    for _ in range(5 - reports_before_expect):
        assert producer.acked == []
        callback(None, None)
    assert producer.acked == [("batch-1", "out", 5)]


@pytest.mark.parametrize("failed_at", [0, 2, 4])
def test_a_failure_is_reported_and_no_longer_awaited(failed_at: int) -> None:
    producer = _Recorder()
    callback = _Counted(producer, 7, "out")  # type: ignore[arg-type]
    callback.expect(5)
    for n in range(5):
        callback("boom" if n == failed_at else None, None)
    assert producer.failed == [("boom", 7)]
    assert producer.acked == [(7, "out", 4)]


def test_failure_last_and_before_expect_still_completes() -> None:
    producer = _Recorder()
    callback = _Counted(producer, "t", "out")  # type: ignore[arg-type]
    callback(None, None)
    callback("boom", None)
    callback.expect(3)
    assert producer.acked == []
    callback(None, None)
    assert producer.acked == [("t", "out", 2)]


def test_all_failed_acknowledges_nothing() -> None:
    producer = _Recorder()
    callback = _Counted(producer, "t", "out")  # type: ignore[arg-type]
    callback.expect(2)
    callback("a", None)
    callback("b", None)
    assert producer.acked == []
    assert len(producer.failed) == 2


def test_nothing_queued_acknowledges_nothing() -> None:
    producer = _Recorder()
    _Counted(producer, "t", "out").expect(0)  # type: ignore[arg-type]
    assert producer.acked == []
