"""Small helpers shared by the Kafka modules."""

from __future__ import annotations

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


def headers_of(message: confluent_kafka.Message) -> list[tuple[str, bytes]]:
    """A message's headers with bytes values (librdkafka gives None for empty ones)."""
    return [(key, as_bytes(value)) for key, value in (message.headers() or [])]
