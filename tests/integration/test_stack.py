"""The local stack against real brokers: metadata, produce/consume, start/stop lifecycle."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from inferstream.config import Settings
from inferstream.errors import StackError
from inferstream.stack import KafkaServer
from inferstream.stack.process import port_accepts
from inferstream.stack.testing import Broker, free_ports


def _create_topic(bootstrap_servers: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _topics(bootstrap_servers: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    return set(admin.list_topics(timeout=30).topics)


def test_broker_answers_metadata(kafka: Broker) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=30)
    assert len(metadata.brokers) == 1
    broker = next(iter(metadata.brokers.values()))
    assert f"{broker.host}:{broker.port}" == kafka.bootstrap_servers or kafka.server is None


def test_records_round_trip_through_the_broker(settings: Settings) -> None:
    topic = settings.topics.name("roundtrip")
    bootstrap = settings.kafka.bootstrap_servers
    _create_topic(bootstrap, topic)

    producer = Producer(settings.kafka.producer_config())
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"v{i}".encode())
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            **settings.kafka.consumer_config(f"g-{uuid.uuid4().hex}"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < 3 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            payload = message.value()
            assert payload is not None
            values.append(payload)
    finally:
        consumer.close()
    assert values == [b"v0", b"v1", b"v2"]


def test_start_is_idempotent_and_stop_stops(tmp_path: Path, kafka_lib_dir: Path, kafka_version: str) -> None:
    port, controller_port = free_ports(2)
    server = KafkaServer(
        tmp_path,
        port=port,
        controller_port=controller_port,
        version=kafka_version,
        lib_dir=kafka_lib_dir,
    )
    try:
        first = server.start(timeout=120)
        assert first.running
        assert first.pid is not None
        _create_topic(server.bootstrap_servers, "kept")

        # A second start, here or from another process (a fresh object), changes nothing.
        again = KafkaServer(
            tmp_path,
            port=port,
            controller_port=controller_port,
            version=kafka_version,
            lib_dir=kafka_lib_dir,
        )
        started = time.monotonic()
        second = again.start(timeout=30)
        assert second.pid == first.pid
        assert time.monotonic() - started < 5

        # What one object started, another can stop.
        assert again.stop() is True
        assert not server.running
        assert not server.pid_file.exists()
        assert not port_accepts("127.0.0.1", port)
        assert again.stop() is False

        # Data survives a restart, as `inferstream down` then `up` promises.
        third = server.start(timeout=120)
        assert third.pid != first.pid
        assert "kept" in _topics(server.bootstrap_servers)
    finally:
        server.stop()
    assert not server.running


def test_a_broker_that_dies_while_starting_reports_its_log(
    tmp_path: Path, kafka_lib_dir: Path, kafka_version: str
) -> None:
    port, controller_port = free_ports(2)
    # 1 MB of heap: the JVM refuses to start at all.
    server = KafkaServer(
        tmp_path,
        port=port,
        controller_port=controller_port,
        version=kafka_version,
        heap="1m",
        lib_dir=kafka_lib_dir,
    )
    with pytest.raises(StackError, match="exited while starting") as caught:
        server.start(timeout=60)
    assert "heap" in str(caught.value).lower()
    assert str(server.out_file) in str(caught.value)
    assert not server.running
    assert not server.pid_file.exists()
