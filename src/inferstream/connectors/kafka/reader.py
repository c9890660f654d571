"""Bounded reads: a topic from a start point up to the end offsets read at the start.

No consumer group and no commits: for listing, exporting and replaying.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import watermarks
from inferstream.errors import KafkaError, TopicError

_TIMEOUT_S = 15.0


def read_bounded(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    start_offsets: dict[int, int] | None = None,
    batch_size: int = 1000,
    idle_timeout: float = 10.0,
) -> Iterator[confluent_kafka.Message]:
    """Every record of ``topic`` from the beginning (or ``since`` / ``start_offsets``)
    up to the end offsets as they were when the read began, partition by partition
    interleaved in arrival order.
    """
    conf: dict[str, Any] = {
        **settings.kafka.base_config(),
        "group.id": "inferstream-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        **settings.kafka.consumer_overrides,
    }
    consumer = confluent_kafka.Consumer(conf)
    try:
        metadata = consumer.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise TopicError(f"topic {topic} does not exist")
        partitions = sorted(metadata.partitions)
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for p in partitions:
            low, high = watermarks(consumer, topic, p, _TIMEOUT_S)
            ends[p] = high
            starts[p] = max(low, (start_offsets or {}).get(p, low))
        if since is not None:
            wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in partitions]
            for tp in consumer.offsets_for_times(wanted, timeout=_TIMEOUT_S):
                starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else max(starts[tp.partition], tp.offset)
        pending = {p for p in partitions if starts[p] < ends[p]}
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
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
                    continue
                p, offset = message.partition() or 0, message.offset() or 0
                if p not in pending or offset >= ends[p]:
                    continue
                yield message
                if offset + 1 >= ends[p]:
                    pending.discard(p)
    finally:
        consumer.close()
