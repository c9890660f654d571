"""Bounded reads: a topic from a start point up to the end offsets read at the start.

No consumer group and no commits: for listing, exporting and replaying.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import partition_bounds, watermarks
from inferstream.errors import KafkaError, TopicError

_TIMEOUT_S = 15.0

log = logging.getLogger(__name__)

#: Told of records the broker deleted (retention, ``delete-records``) before they were read:
#: (partition, first offset missed, first offset still there).
OnGap = Callable[[int, int, int], None]


def warn_gap(topic: str) -> OnGap:
    """The default ``on_gap``: a warning naming the offsets missed and where the read goes on."""

    def warn(partition: int, first: int, low: int) -> None:
        log.warning(
            "%s[%d]: offsets %d..%d were deleted by the broker (retention.ms or delete-records) before "
            "they were read; reading on from %d",
            topic, partition, first, low - 1, low,
        )  # fmt: skip

    return warn


def read_bounded(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    start_offsets: dict[int, int] | None = None,
    batch_size: int = 1000,
    idle_timeout: float = 10.0,
    on_gap: OnGap | None = None,
) -> Iterator[confluent_kafka.Message]:
    """Every record of ``topic`` from the beginning (or ``since`` / ``start_offsets``)
    up to the end offsets as they were when the read began, partition by partition
    interleaved in arrival order.

    Records the broker deleted before they were read (a start offset below the log
    start, or retention passing the reader) are never skipped in silence: ``on_gap``
    is told (partition, first offset missed, log start), else a warning is logged.
    """
    gap = on_gap or warn_gap(topic)
    conf: dict[str, Any] = {
        **settings.kafka.base_config(),
        "group.id": "inferstream-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        **settings.kafka.consumer_overrides,
        # A fetch below the log start is an error to report, never a silent jump to an end.
        "auto.offset.reset": "error",
    }
    consumer = confluent_kafka.Consumer(conf)
    try:
        bounds = partition_bounds(consumer, topic, _TIMEOUT_S)
        if bounds is None:
            raise TopicError(f"topic {topic} does not exist")
        partitions = list(bounds)
        lows = {p: low for p, (low, _high) in bounds.items()}
        ends = {p: high for p, (_low, high) in bounds.items()}
        starts = {p: (start_offsets or {}).get(p, lows[p]) for p in partitions}
        if since is not None:
            wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in partitions]
            for tp in consumer.offsets_for_times(wanted, timeout=_TIMEOUT_S):
                first = ends[tp.partition] if tp.offset < 0 else tp.offset
                starts[tp.partition] = max(starts[tp.partition], first)
        for p in partitions:
            if starts[p] < min(lows[p], ends[p]):
                gap(p, starts[p], lows[p])
            starts[p] = max(starts[p], lows[p])
        pending = {p for p in partitions if starts[p] < ends[p]}
        if not pending:
            return
        consumer.incremental_assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        idle = 0.0
        while pending:
            messages = consumer.consume(batch_size, 1.0)
            if not messages:
                # A transaction's commit marker takes the last offset and is never handed out:
                # the position tells that a partition is read to its end.
                for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                if not pending:
                    break
                idle += 1.0
                if idle >= idle_timeout:
                    raise KafkaError(f"reading {topic} stalled before its end offsets {ends}: is the broker up?")
                continue
            idle = 0.0
            for message in messages:
                if message.error() is not None:
                    _resume_past_gap(consumer, message, ends, pending, gap)
                    continue
                p, offset = message.partition() or 0, message.offset() or 0
                if p not in pending or offset >= ends[p]:
                    continue
                yield message
                if offset + 1 >= ends[p]:
                    pending.discard(p)
    finally:
        consumer.close()


def _resume_past_gap(
    consumer: confluent_kafka.Consumer,
    message: confluent_kafka.Message,
    ends: dict[int, int],
    pending: set[int],
    gap: OnGap,
) -> None:
    """An offset out of range (the log start moved past the reader): report it, go on from the new start."""
    error = message.error()
    codes = (confluent_kafka.KafkaError._AUTO_OFFSET_RESET, confluent_kafka.KafkaError.OFFSET_OUT_OF_RANGE)
    if error is None or error.code() not in codes:
        return  # transient fetch errors: librdkafka retries them
    topic, p = message.topic() or "", message.partition() or 0
    if p not in pending:
        return
    low, high = watermarks(consumer, topic, p, _TIMEOUT_S)
    first = max(message.offset() or 0, 0)
    # A partition stopped by the error cannot seek: hand it back and take it again at the log start.
    consumer.incremental_unassign([TopicPartition(topic, p)])
    if first >= low:  # past the end: the log was cut back (the topic made again), nothing to read on
        log.warning("%s[%d]: offset %d is past the log's end %d; the partition was truncated", topic, p, first, high)
        pending.discard(p)
        return
    gap(p, first, low)
    if low >= ends[p]:
        pending.discard(p)
    else:
        consumer.incremental_assign([TopicPartition(topic, p, low)])
