"""The worker's backlog: batches by size or delay, and what it forgets on a rebalance or a stop."""

from __future__ import annotations

import time

import confluent_kafka

from inferstream.serving.worker import _Backlog, _Item


class _Message:
    """The three things the backlog reads of a record."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


def _items(topic: str, partition: int, offsets: range) -> list[_Item]:
    now = time.monotonic()
    return [_Item(_Message(topic, partition, o), None, None, now) for o in offsets]  # type: ignore[arg-type]


def _where(items: list[_Item]) -> list[tuple[str, int, int]]:
    messages: list[confluent_kafka.Message] = [item.message for item in items]
    return [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages]


def test_a_batch_closes_at_its_size_and_keeps_the_order() -> None:
    backlog = _Backlog()
    backlog.add(_items("t", 0, range(5)))
    batch = backlog.take(3, max_delay_s=10, wait_s=1)
    assert _where(batch) == [("t", 0, 0), ("t", 0, 1), ("t", 0, 2)]
    assert not backlog.idle  # taken, not served yet
    backlog.served()
    assert len(backlog) == 2


def test_a_batch_closes_when_its_oldest_request_has_waited_the_delay() -> None:
    backlog = _Backlog()
    backlog.add(_items("t", 0, range(2)))
    started = time.monotonic()
    batch = backlog.take(100, max_delay_s=0.05, wait_s=1)
    assert len(batch) == 2
    assert time.monotonic() - started < 5  # it did not wait for a full batch


def test_revoked_partitions_requests_are_dropped_and_the_others_kept_in_order() -> None:
    backlog = _Backlog()
    backlog.add(_items("t", 0, range(3)) + _items("t", 1, range(3)) + _items("u", 0, range(2)))
    assert backlog.drop({("t", 1)}) == 3
    assert _where(backlog.take(10, max_delay_s=0, wait_s=0)) == [
        ("t", 0, 0),
        ("t", 0, 1),
        ("t", 0, 2),
        ("u", 0, 0),
        ("u", 0, 1),
    ]


def test_a_stop_drops_what_is_not_taken_but_the_batch_in_hand_stays_to_be_served() -> None:
    backlog = _Backlog()
    backlog.add(_items("t", 0, range(10)))
    batch = backlog.take(4, max_delay_s=10, wait_s=1)
    assert backlog.drop() == 6
    assert len(backlog) == 0
    assert not backlog.idle  # the batch taken is still being served
    backlog.served()
    assert backlog.idle
    assert len(batch) == 4
