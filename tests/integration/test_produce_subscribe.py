"""Produce → subscribe against the real broker: keys, headers, groups, resume, sharing."""

import threading
import time
import urllib.request

import pytest

from inferstream import Client, Settings
from inferstream.connectors.kafka import Consumer, Producer
from inferstream.metrics import Metrics
from inferstream.schemas import SCHEMA_HEADER, Event


def _events(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"id": f"e{i}", "type": "review", "text": f"text {i}", "attributes": {"n": str(i)}}
        for i in range(start, start + n)
    ]


def test_round_trip_with_keys_headers_and_decoded_records(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        report = client.produce("events", _events(50), headers=[("trace-id", b"t-1")])
        assert (report.read, report.produced, report.rejected) == (50, 50, [])
        received = list(client.subscribe("events", from_beginning=True, max_records=50, idle_timeout=20))
    assert len(received) == 50
    assert {r.key for r in received} == {f"e{i}".encode() for i in range(50)}
    for message in received:
        assert isinstance(message.record, Event)
        assert message.key == message.record.id.encode()
        assert message.record.attributes["n"] == message.record.id[1:]
        headers = dict(message.headers)
        assert headers["trace-id"] == b"t-1"
        assert headers[SCHEMA_HEADER] == b"event/1"
        assert message.topic == settings.topics.name("events")
        assert message.timestamp_ms is not None
    # The same key always lands on the same partition (ordering per id).
    by_key = {r.key: r.partition for r in received}
    with Client(settings) as client:
        client.produce("events", _events(50))
        again = list(client.subscribe("events", from_beginning=True, max_records=100, idle_timeout=20))
    assert all(by_key[r.key] == r.partition for r in again)


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_a_subscription_sees_everything_produced_after_it_was_made(settings: Settings, strategy: str) -> None:
    kafka = settings.kafka.model_copy(update={"consumer_overrides": {"partition.assignment.strategy": strategy}})
    settings = settings.model_copy(update={"kafka": kafka})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", _events(20))  # before: not seen
        stream = client.subscribe("events", max_records=30, idle_timeout=20)
        # Produced at once, while the new group is still joining: every one is seen.
        client.produce("events", _events(30, start=20))
        seen = sorted(r.record.id for r in stream if r.record)
    assert seen == sorted(f"e{i}" for i in range(20, 50))


def test_group_resumes_after_restart_from_committed_offsets(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", _events(30))
        first = [
            r.record.id
            for r in client.subscribe("events", group="resume", from_beginning=True, max_records=10, idle_timeout=20)
            if r.record
        ]
        assert len(first) == 10
        # A new subscription in the same group (a restarted process) goes on where the last stopped.
        rest = [
            r.record.id
            for r in client.subscribe("events", group="resume", from_beginning=True, idle_timeout=5)
            if r.record
        ]
        assert len(rest) == 20
        assert set(first).isdisjoint(rest)
        assert set(first) | set(rest) == {f"e{i}" for i in range(30)}
        client.produce("events", _events(5, start=30))
        tail = [r.record.id for r in client.subscribe("events", group="resume", idle_timeout=5) if r.record]
        assert sorted(tail) == sorted(f"e{i}" for i in range(30, 35))


def test_uncommitted_batch_is_redelivered(settings: Settings) -> None:
    topic = settings.topics.name("events")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", _events(20))
    consumer = Consumer(settings, [topic], group_id="redeliver", from_beginning=True)
    seen = []
    deadline = time.monotonic() + 20
    while len(seen) < 20 and time.monotonic() < deadline:
        batch = consumer.consume(20, 1.0)
        seen += batch
    consumer.commit(seen[:5])  # only the first five were "processed"
    committed_offsets = consumer.committed()
    consumer.close()
    assert sum(max(o, 0) for o in committed_offsets.values()) >= 1
    again = Consumer(settings, [topic], group_id="redeliver", from_beginning=True)
    redelivered = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(redelivered) < 20:
        redelivered += again.consume(20, 1.0)
        if len(redelivered) >= 15 and not again.consume(20, 1.0):
            break
    again.close()
    processed = {(m.partition(), m.offset()) for m in seen[:5]}
    stored_per_partition: dict[int, int] = {}
    for m in seen[:5]:
        stored_per_partition[m.partition()] = max(stored_per_partition.get(m.partition(), -1), m.offset())
    # Everything after the last stored offset of each partition comes back; nothing stored does.
    back = {(m.partition(), m.offset()) for m in redelivered}
    expected = {(m.partition(), m.offset()) for m in seen if m.offset() > stored_per_partition.get(m.partition(), -1)}
    assert back == expected
    assert not (back & {(p, o) for (p, o) in processed if o <= stored_per_partition[p]})


def test_two_consumers_share_partitions_without_overlap(settings: Settings) -> None:
    topic = settings.topics.name("events")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()  # 3 partitions
    results: dict[str, list[str]] = {"a": [], "b": []}
    assignments: dict[str, list[tuple[str, int]]] = {}
    ready = threading.Barrier(3)
    stop = threading.Event()

    def member(name: str) -> None:
        consumer = Consumer(settings, [topic], group_id="shared", from_beginning=True)
        try:
            joined = False
            while not stop.is_set():
                batch = consumer.consume(100, 0.5)
                for message in batch:
                    results[name].append(message.key().decode())
                consumer.commit(batch) if batch else None
                if not joined and len(consumer.assignment()) in (1, 2):
                    joined = True
                    ready.wait(timeout=60)
                assignments[name] = consumer.assignment()
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(n,)) for n in results]
    for thread in threads:
        thread.start()
    ready.wait(timeout=60)  # both members hold partitions: the group is balanced
    with Client(settings) as client:
        client.produce("events", _events(300))
    deadline = time.monotonic() + 30
    while len(results["a"]) + len(results["b"]) < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert results["a"]
    assert results["b"]
    assert set(results["a"]).isdisjoint(results["b"])
    assert sorted(results["a"] + results["b"]) == sorted(f"e{i}" for i in range(300))
    assert set(assignments["a"]).isdisjoint(assignments["b"])
    assert len(assignments["a"]) + len(assignments["b"]) == 3


def test_producer_delivery_failures_are_raised_not_swallowed(settings: Settings) -> None:
    import pytest

    from inferstream.errors import DeliveryError

    producer = Producer(settings, overrides={"message.timeout.ms": 3000})
    producer.produce(settings.topics.name("no-such-topic"), b"x", key=b"k")
    with pytest.raises(DeliveryError) as caught:
        producer.flush(timeout=30)
    failure = caught.value.failures[0]
    assert failure.key == b"k"
    assert failure.value == b"x"
    assert not failure.retriable


def test_a_watched_record_reports_its_own_fate_only(settings: Settings) -> None:
    # Request/reply waits on its own record: a failure goes to that record's future, and a
    # flush by another thread of the same producer neither waits for it nor raises for it.
    import pytest

    from inferstream.errors import DeliveryError

    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    producer = Producer(settings, overrides={"message.timeout.ms": 3000})
    missing = producer.produce_watched(settings.topics.name("no-such-topic"), b"x", key=b"k")
    good = producer.produce_watched(settings.topics.name("events"), b"{}", key=b"g")
    producer.flush(timeout=30)
    assert good.result(timeout=0) is None
    with pytest.raises(DeliveryError, match="no-such-topic"):
        missing.result(timeout=0)
    producer.close()


def test_metrics_are_exported_on_loopback(settings: Settings) -> None:
    metrics = Metrics()
    port = metrics.serve(0)
    topic = settings.topics.name("events")
    try:
        with Client(settings, metrics=metrics) as client:
            client.topics.ensure_platform_topics()
            client.produce("events", _events(10))
            client.flush()
            list(client.subscribe("events", from_beginning=True, max_records=10, idle_timeout=20))
        consumer = Consumer(settings, [topic], group_id="lag", from_beginning=True, metrics=metrics)
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 4 and time.monotonic() < deadline:
            batch = consumer.consume(4 - seen, 1.0)
            seen += len(batch)
        lag = consumer.update_lag()
        consumer.close()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    assert f'inferstream_records_out_total{{stage="produce",topic="{topic}"}} 10.0' in body
    assert f'inferstream_records_in_total{{stage="subscribe",topic="{topic}"}} 10.0' in body
    # 4 of 10 read: 6 behind, spread over the partitions this consumer owns.
    assert sum(lag.values()) == 6
    samples = [
        metrics.registry.get_sample_value("inferstream_consumer_lag", {"group": "lag", "topic": t, "partition": str(p)})
        for t, p in lag
    ]
    assert sum(s or 0 for s in samples) == 6
