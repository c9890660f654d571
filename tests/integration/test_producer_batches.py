"""``Producer.produce_many``: the hot path's batches land with their keys, headers and acknowledgements."""

from __future__ import annotations

from typing import Any

from inferstream import Settings
from inferstream.connectors.kafka import Consumer, Producer
from inferstream.connectors.kafka.admin import TopicAdmin


def _topic(settings: Settings, name: str, partitions: int = 3) -> str:
    topic = settings.topics.name(name)
    TopicAdmin(settings).create(topic, partitions=partitions)
    return topic


def _read(settings: Settings, topic: str, count: int) -> list[Any]:
    consumer = Consumer(settings, [topic], group_id=f"read-{topic}", from_beginning=True)
    seen: list[Any] = []
    try:
        for batch in consumer.batches(500, 1.0):
            seen.extend(batch)
            if len(seen) >= count:
                break
    finally:
        consumer.close()
    return seen


def test_a_batch_lands_with_its_keys_headers_and_one_acknowledgement(settings: Settings) -> None:
    acks: list[tuple[Any, int]] = []
    topic = _topic(settings, "batches")
    header = [("inferstream-schema", b"prediction/1")]
    values = [f"v{i}".encode() for i in range(300)]
    keys = [f"k{i}".encode() for i in range(300)]
    # Every tenth record carries headers of its own (as a request's traceparent makes them).
    own = [[*header, ("traceparent", f"t{i}".encode())] if i % 10 == 0 else None for i in range(300)]
    with Producer(settings, on_ack=lambda tag, count: acks.append((tag, count))) as producer:
        producer.produce_many(topic, values, keys, header, tag="plain")
        producer.produce_many(topic, iter(values), keys, header, tag="own", headers_of=own)
        producer.flush()
    assert sorted(acks) == [("own", 300), ("plain", 300)]
    seen = _read(settings, topic, 600)
    assert len(seen) == 600
    partitions: dict[bytes, set[int]] = {}
    for message in seen:
        key, value = message.key(), message.value()
        assert value == b"v" + key[1:]
        partitions.setdefault(key, set()).add(message.partition())
        headers = message.headers()
        assert headers[0] == header[0]
        assert len(headers) in (1, 2)
        if len(headers) == 2:
            assert int(key[1:]) % 10 == 0
            assert headers[1] == ("traceparent", b"t" + key[1:])
    # The partitioner placed each key by its hash: both copies of a key on one partition.
    assert all(len(found) == 1 for found in partitions.values())
    assert len({p for found in partitions.values() for p in found}) > 1
