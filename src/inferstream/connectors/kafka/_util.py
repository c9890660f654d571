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
