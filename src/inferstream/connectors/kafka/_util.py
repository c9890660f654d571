"""Small helpers shared by the Kafka modules."""

from __future__ import annotations

import time

import confluent_kafka


def error_of(exc: confluent_kafka.KafkaException) -> confluent_kafka.KafkaError:
    """The KafkaError a KafkaException carries (librdkafka always puts one first)."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, confluent_kafka.KafkaError):
        return first
    return confluent_kafka.KafkaError(confluent_kafka.KafkaError._FAIL, str(first or exc))


def as_bytes(value: bytes | str | None) -> bytes:
    """Header values and keys arrive as bytes or str; give bytes (empty for None)."""
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()


def fetch(consumer: confluent_kafka.Consumer, max_records: int, timeout: float) -> list[confluent_kafka.Message]:
    """Up to ``max_records`` messages, waiting at most ``timeout`` for the first one only.

    librdkafka's batch ``consume(n, timeout)`` waits until it has ``n`` messages or the
    timeout passed, which turns a trickle of records into one batch per timeout; this
    waits for one, then takes whatever else is already fetched.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_records <= 1:
        return [first]
    return [first, *consumer.consume(max_records - 1, 0)]


def headers_of(message: confluent_kafka.Message) -> list[tuple[str, bytes | None]]:
    """A message's headers with bytes values, None where a header has no value (kept as it was)."""
    return [(key, value if value is None else as_bytes(value)) for key, value in (message.headers() or [])]


def watermarks(consumer: confluent_kafka.Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """The (low, high) offsets of a partition, waiting out a leader not elected yet (a topic just made)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=timeout
            )
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            code = error_of(exc).code()
            leaderless = code in (
                confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION,
                confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE,
                confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
            )
            if not leaderless or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def partition_bounds(
    consumer: confluent_kafka.Consumer, topic: str, timeout: float
) -> dict[int, tuple[int, int]] | None:
    """Every partition's (log start, end) offsets now; None when the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    return {p: watermarks(consumer, topic, p, timeout) for p in sorted(metadata.partitions)}
