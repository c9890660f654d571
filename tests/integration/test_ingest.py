"""The ingest processor (faust) against the real broker, run as `inferstream stream ingest`."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer, read_bounded
from inferstream.schemas import EmbeddingRequest, InferenceRequest, codec_for
from inferstream.streams.ingest import request_id_for

RULES = [
    {"type": "review", "model": "minilm", "version": "1", "input": "text"},
    {"type": "transaction", "model": "scorer", "version": "1", "input": "features"},
]


@contextmanager
def ingest_process(
    settings: Settings,
    log: Path,
    group: str = "ingest-test",
    metrics_port: int = 0,
    rules: list[dict[str, str]] = RULES,
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "INFERSTREAM_METRICS__PORT": str(metrics_port),
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_INGEST__RULES": json.dumps(rules),
        "INFERSTREAM_INGEST__GROUP": f"{settings.topics.prefix}{group}",
    }
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "inferstream", "stream", "ingest"], env=env, stdout=out, stderr=out
        )
        try:
            yield child
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(120)
    assert child.returncode == 0, log.read_text()


def _records(settings: Settings, topic: str, count: int) -> list[bytes]:
    """The values on ``topic`` once it holds ``count`` records (waits for the processor)."""
    with Client(settings) as client:
        messages = list(client.subscribe(topic, from_beginning=True, max_records=count, idle_timeout=90, decode=False))
    assert len(messages) == count, f"{topic} holds {len(messages)} records, expected {count}"
    return [m.value or b"" for m in messages]


def _wait_committed(settings: Settings, group: str, count: int) -> None:
    """Wait until ``group`` committed ``count`` events (the processor commits every second)."""
    events = settings.topics.name("events")
    consumer = confluent_kafka.Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    try:
        partitions = [TopicPartition(events, p) for p in range(settings.topics.partitions)]
        deadline = time.monotonic() + 60
        while sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10)) < count:
            assert time.monotonic() < deadline, f"{group} never committed {count} events"
            time.sleep(0.2)
    finally:
        consumer.close()


def _stats(log: Path) -> list[tuple[int, int, int, int]]:
    pattern = r"ingested (\d+) events: (\d+) routed \((\d+) requests\), (\d+) dead letters"
    return [tuple(int(g) for g in m) for m in re.findall(pattern, log.read_text())]  # type: ignore[misc]


def test_events_become_requests_and_what_cannot_be_handled_is_dead_lettered(settings: Settings, tmp_path: Path) -> None:
    reviews = [
        {"id": f"r{i}", "type": "review", "text": f"review number {i}", "attributes": {"k": "v"}} for i in range(40)
    ]
    transactions = [{"id": f"t{i}", "type": "transaction", "features": {"amount": i * 1.5, "n": i}} for i in range(30)]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        for rule in RULES:  # the workers' topics (the processor would create them too)
            client.topics.ensure_request_topic(rule["model"], rule["version"])
        assert client.produce("events", reviews[:20] + transactions + reviews[20:]).produced == 70
        events = client.topic("events")
    with Producer(settings) as producer:
        producer.produce(events, b"\x00\xffnot json", key=b"bytes")
        producer.produce(events, json.dumps({"id": "no-type", "text": "x"}).encode(), key=b"no-type")
        producer.produce(events, json.dumps({"id": "u1", "type": "unknown", "text": "x"}).encode(), key=b"u1")
        producer.produce(events, json.dumps({"id": "nt", "type": "review", "features": {"a": 1}}).encode(), key=b"nt")
        producer.produce(events, None, key=b"tombstone")
    log = tmp_path / "ingest.log"
    text_topic = settings.topics.request_topic("minilm", "1")
    tabular_topic = settings.topics.request_topic("scorer", "1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ingest_process(settings, log, metrics_port=port):
        embedding = [codec_for(EmbeddingRequest).decode(v) for v in _records(settings, text_topic, 40)]
        inference = [codec_for(InferenceRequest).decode(v) for v in _records(settings, tabular_topic, 30)]
        _records(settings, settings.topics.name("dead-letters"), 5)
        with Client(settings) as client:
            letters = list(client.dead_letters())
        _wait_committed(settings, f"{settings.topics.prefix}ingest-test", 75)  # so every output was acknowledged
        metrics = {
            name: sum(
                float(v) for v in re.findall(rf'^inferstream_{name}_total{{[^}}]*"ingest"[^}}]*}} (\S+)$', text, re.M)
            )
            for text in [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()]
            for name in ("records_in", "records_out", "dead_letters")
        }
    # Text events became embedding requests of their text, keyed by a request id derived from the event.
    assert sorted(r.document_id for r in embedding) == sorted(r["id"] for r in reviews)
    first = next(r for r in embedding if r.document_id == "r7")
    assert (first.model, first.version, first.text) == ("minilm", "1", "review number 7")
    assert first.request_id == request_id_for("r7", "minilm", "1")
    assert first.source_event_id == "r7"
    assert first.attributes == {"k": "v"}
    # Tabular events became inference requests of their features.
    by_event = {r.source_event_id: r for r in inference}
    assert set(by_event) == {t["id"] for t in transactions}
    assert by_event["t4"].inputs == {"amount": 6.0, "n": 4}
    assert by_event["t4"].request_id == request_id_for("t4", "scorer", "1")
    # Each bad kind is a dead letter with its original bytes and the reason.
    reasons = {letter.original_key: letter for letter in letters}
    assert set(reasons) == {b"bytes", b"no-type", b"u1", b"nt", b"tombstone"}
    assert reasons[b"bytes"].payload == b"\x00\xffnot json"
    assert "malformed JSON" in reasons[b"bytes"].error_message
    assert "type: required field is missing" in reasons[b"no-type"].error_message
    assert "no ingest rule for event type 'unknown'" in reasons[b"u1"].error_message
    assert reasons[b"u1"].error_class == "RoutingError"
    assert "has no text" in reasons[b"nt"].error_message
    assert "no value" in reasons[b"tombstone"].error_message
    assert all(letter.stage == "ingest" and letter.source_topic == events for letter in letters)
    assert all(letter.source_offset is not None for letter in letters)
    # Counts reconcile: events in = events routed + dead letters; one request per routed event here.
    assert _stats(log) == [(75, 70, 70, 5)]
    # The metrics say the same: 75 in; 70 requests + 5 dead letters out, acknowledged.
    assert metrics == {"records_in": 75, "records_out": 75, "dead_letters": 5}


def test_a_restart_and_a_full_replay_give_the_same_request_ids(settings: Settings, tmp_path: Path) -> None:
    first = [{"id": f"a{i}", "type": "review", "text": f"first {i}"} for i in range(25)]
    second = [{"id": f"b{i}", "type": "transaction", "features": {"x": i}} for i in range(25)]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        for rule in RULES:  # the workers' topics (the processor would create them too)
            client.topics.ensure_request_topic(rule["model"], rule["version"])
        client.produce("events", first)
    log = tmp_path / "ingest.log"
    text_topic = settings.topics.request_topic("minilm", "1")
    tabular_topic = settings.topics.request_topic("scorer", "1")
    with ingest_process(settings, log):
        assert len(_records(settings, text_topic, 25)) == 25
        _wait_committed(settings, f"{settings.topics.prefix}ingest-test", 25)
    with Client(settings) as client:
        client.produce("events", second)
    # Restarted in the same group: it goes on after what it committed.
    with ingest_process(settings, log):
        assert len(_records(settings, tabular_topic, 25)) == 25
    # A new group replays every event from the start: the same ids again, nothing new.
    with Client(settings) as client:
        before = {
            topic: client.topics.describe(topic, with_config=False).messages for topic in (text_topic, tabular_topic)
        }
    with ingest_process(settings, log, group="replay"):
        replayed_text = _records(settings, text_topic, before[text_topic] + 25)
        replayed_tabular = _records(settings, tabular_topic, before[tabular_topic] + 25)
    ids: dict[str, set[str]] = {}
    for value in replayed_text:
        request = codec_for(EmbeddingRequest).decode(value)
        ids.setdefault(request.document_id, set()).add(request.request_id)
    for value in replayed_tabular:
        inference = codec_for(InferenceRequest).decode(value)
        ids.setdefault(inference.source_event_id or "", set()).add(inference.request_id)
    assert set(ids) == {e["id"] for e in first + second}
    assert all(len(request_ids) == 1 for request_ids in ids.values())
    stats = _stats(log)
    assert len(stats) == 3
    assert stats[0][0] == 25
    # The restart went on after what the first run committed: nothing repeated.
    assert stats[1][0] == 25
    assert stats[2] == (50, 50, 50, 0)
    assert all(events == routed + dead for events, routed, _requests, dead in stats)
    with Client(settings) as client:
        assert sum(1 for _ in read_bounded(settings, client.topic("dead-letters"))) == 0


def test_events_of_an_aborted_transaction_are_never_ingested(settings: Settings, tmp_path: Path) -> None:
    # A transactional writer (a replay, an exactly-once stage) that aborts leaves its records in
    # the log: ingest reads committed records only, like every other consumer of the platform.
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        for rule in RULES:
            client.topics.ensure_request_topic(rule["model"], rule["version"])
        events = client.topic("events")
    writer = confluent_kafka.Producer(
        {
            **settings.kafka.producer_config(),
            "transactional.id": f"{settings.topics.prefix}writer",
            "delivery.timeout.ms": 30_000,
        }
    )
    writer.init_transactions(30)

    def batch(prefix: str) -> None:
        writer.begin_transaction()
        for i in range(10):
            event = {"id": f"{prefix}{i}", "type": "review", "text": f"{prefix} text {i}"}
            writer.produce(events, json.dumps(event).encode(), key=event["id"].encode())
        writer.flush(30)

    batch("aborted")
    writer.abort_transaction(30)
    batch("kept")
    writer.commit_transaction(30)
    log = tmp_path / "ingest.log"
    text_topic = settings.topics.request_topic("minilm", "1")
    with ingest_process(settings, log):
        _wait_committed(settings, f"{settings.topics.prefix}ingest-test", 22)  # 20 records and 2 markers
        with Client(settings) as client:
            requests = list(client.subscribe(text_topic, from_beginning=True, idle_timeout=5, decode=False))
    ingested = sorted(codec_for(EmbeddingRequest).decode(m.value or b"").document_id for m in requests)
    assert ingested == sorted(f"kept{i}" for i in range(10))
    assert _stats(log) == [(10, 10, 10, 0)]
