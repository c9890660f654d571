"""Every kind of bad input ends up on the dead-letter topic with its bytes and reason."""

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inferstream import Client, Settings
from inferstream.connectors.files import read_records
from inferstream.connectors.kafka import (
    ATTEMPT_HEADER,
    DeadLetterWriter,
    Producer,
    from_message,
    read_bounded,
    to_headers,
)
from inferstream.errors import RecordValidationError, TopicError
from inferstream.schemas import SCHEMA_HEADER
from inferstream.schemas.records import DeadLetter
from inferstream.stack.testing import cli_env

GOOD = '{"id": "ok-%d", "type": "review", "text": "fine"}'


def _file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_kind_of_bad_record_is_dead_lettered_and_the_rest_produced(settings: Settings, tmp_path: Path) -> None:
    lines = [
        GOOD % 1,
        '{"id": "broken", "type": "review", "text": "no closing brace"',  # malformed JSON
        '{"id": "wrong-type", "type": "review", "features": {"x": [1, 2]}}',  # wrong type
        '{"id": "no-type", "text": "missing the type"}',  # missing required field
        GOOD % 2,
    ]
    path = _file(tmp_path, lines)
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        report = client.produce_file("events", read_records(path), on_error="dlq")
        assert (report.read, report.produced, len(report.rejected), report.dead_lettered) == (5, 2, 3, 3)
        assert [r.line for r in report.rejected] == [2, 3, 4]
        assert report.rejected[1].fields == ("features.x",)
        assert report.rejected[2].fields == ("type",)
        letters = list(client.dead_letters())
        events = list(client.subscribe("events", from_beginning=True, max_records=2, idle_timeout=20))
    assert sorted(e.record.id for e in events if e.record) == ["ok-1", "ok-2"]
    assert len(letters) == 3
    by_payload = {letter.payload: letter for letter in letters}
    for number in (2, 3, 4):
        original = lines[number - 1].encode()
        letter = by_payload[original]  # the original bytes, untouched
        assert letter.source_topic == settings.topics.name("events")
        assert letter.stage == "produce"
        assert letter.error_class == "RecordValidationError"
        assert f"line {number}" in letter.error_message
        assert letter.sha256 == hashlib.sha256(original).hexdigest()
        assert letter.original_size == len(original)
        assert letter.attempt == 1
        assert not letter.truncated
    assert "malformed JSON" in by_payload[lines[1].encode()].error_message
    assert "features.x" in by_payload[lines[2].encode()].error_message
    assert "type: required field is missing" in by_payload[lines[3].encode()].error_message
    assert by_payload[lines[2].encode()].original_key == b"wrong-type"  # findable by its id


def test_fail_mode_names_line_and_field_and_keeps_earlier_records(settings: Settings, tmp_path: Path) -> None:
    path = _file(tmp_path, [GOOD % 1, '{"id": "x", "type": "review", "text": "x", "colour": "red"}', GOOD % 2])
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        with pytest.raises(RecordValidationError) as caught:
            client.produce_file("events", read_records(path), on_error="fail")
        assert caught.value.line == 2
        assert caught.value.fields == ("colour",)
        events = list(client.subscribe("events", from_beginning=True, idle_timeout=5))
        assert [e.record.id for e in events if e.record] == ["ok-1"]  # nothing valid was lost
        assert list(client.dead_letters()) == []


def test_skip_mode_counts_without_dead_letters(settings: Settings, tmp_path: Path) -> None:
    path = _file(tmp_path, [GOOD % 1, "not json", GOOD % 2])
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        report = client.produce_file("events", read_records(path), on_error="skip")
        assert (report.read, report.produced, len(report.rejected), report.dead_lettered) == (3, 2, 1, 0)
        assert list(client.dead_letters()) == []


def test_unknown_topic(settings: Settings) -> None:
    records = [{"request_id": f"r{i}", "model": "iris", "version": "9", "inputs": {"x": i}} for i in range(3)]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        with pytest.raises(TopicError, match="does not exist: create it"):
            client.produce("requests.iris.9", records)
        report = client.produce("requests.iris.9", records, on_error="dlq")
        assert (report.read, report.produced, report.dead_lettered) == (3, 0, 3)
        letters = list(client.dead_letters())
    assert len(letters) == 3
    assert {letter.source_topic for letter in letters} == {settings.topics.request_topic("iris", "9")}
    assert all("does not exist" in letter.error_message for letter in letters)
    assert {letter.original_key for letter in letters} == {b"r0", b"r1", b"r2"}
    assert {json.loads(letter.payload)["request_id"] for letter in letters} == {"r0", "r1", "r2"}


def test_oversized_record_is_truncated_with_size_and_hash_and_spilled(kafka: object, tmp_path: Path) -> None:
    base = Settings.load(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},  # type: ignore[attr-defined]
        topics={"prefix": f"big{tmp_path.name[-8:]}."},
        dead_letters={"max_payload_bytes": 4096, "spill_dir": str(tmp_path / "spill")},
    )
    topic = base.topics.name("small-events")
    with Client(base) as client:
        client.topics.ensure_platform_topics()
        # The broker refuses records above 20 KB on this topic (even compressed: random text).
        client.topics.create(topic, config={"max.message.bytes": "20000"})
        big_text = base64.b64encode(os.urandom(40_000)).decode()
        report = client.produce(
            topic,
            [{"id": "small", "type": "t", "text": "ok"}, {"id": "huge", "type": "t", "text": big_text}],
            schema="event",
            on_error="dlq",
        )
        assert (report.read, report.produced, report.dead_lettered) == (2, 1, 1), report.rejected
        assert "MSG_SIZE_TOO_LARGE" in report.rejected[0].reason
        (letter,) = list(client.dead_letters())
    assert letter.truncated
    assert len(letter.payload) == 4096
    assert letter.original_size > 50_000
    assert letter.spill_path is not None
    full = Path(letter.spill_path).read_bytes()
    assert len(full) == letter.original_size
    assert hashlib.sha256(full).hexdigest() == letter.sha256
    assert full.startswith(letter.payload)
    assert json.loads(full)["text"] == big_text
    assert letter.original_key == b"huge"
    assert letter.source_topic == topic
    assert (SCHEMA_HEADER, b"event/1") in letter.original_headers


def test_replay_raises_attempts_and_stops_at_the_maximum(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"dead_letters": settings.dead_letters.model_copy(update={"max_attempts": 2})}
    )
    events = settings.topics.name("events")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        writer = DeadLetterWriter(settings, stage="ingest")
        writer.send(
            payload=b'{"id": "r1", "type": "t", "text": "retry me"}',
            error=RuntimeError("model file missing"),
            source_topic=events,
            key=b"r1",
            headers=[(SCHEMA_HEADER, b"event/1")],
            partition=0,
            offset=7,
        )
        writer.close()
        first = client.replay_dead_letters()
        assert (first.read, first.replayed, first.exhausted) == (1, 1, 0)
        (replayed,) = list(read_bounded(settings, events))
        assert replayed.key() == b"r1"
        assert dict(replayed.headers())[ATTEMPT_HEADER] == b"2"
        assert replayed.value() == b'{"id": "r1", "type": "t", "text": "retry me"}'
        # The replayed record fails again downstream: its dead letter says attempt 2.
        writer = DeadLetterWriter(settings, stage="ingest")
        writer.send_message(replayed, RuntimeError("still missing"))
        writer.close()
        second = client.replay_dead_letters()
        assert (second.read, second.replayed, second.exhausted) == (1, 0, 1)  # kept, not looped
        assert len(list(read_bounded(settings, events))) == 1
        letters = list(client.dead_letters())
        assert [letter.attempt for letter in letters] == [1, 2]
        assert letters[1].source_offset == replayed.offset()
        # Nothing new: a third replay reads nothing (progress is kept in the group).
        assert client.replay_dead_letters(idle_timeout=2).read == 0


def test_dead_letter_topic_keeps_original_headers(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    topic = settings.topics.platform_topics()["dead-letters"]
    writer = DeadLetterWriter(settings, stage="serve", producer=Producer(settings))
    writer.send(payload=b"\x00\x01", error="deadline passed", source_topic="x", headers=[("trace", b"abc")])
    writer.close()
    (message,) = list(read_bounded(settings, topic))
    headers = dict(message.headers())
    assert headers["trace"] == b"abc"
    assert headers["dlq.stage"] == b"serve"
    assert headers["dlq.error.message"] == b"deadline passed"
    assert headers[SCHEMA_HEADER] == b"dead-letter/1"
    assert from_message(message).payload == b"\x00\x01"


def test_filters_select_dead_letters_by_stage_reason_time_and_source(settings: Settings) -> None:
    events, predictions = settings.topics.name("events"), settings.topics.name("predictions")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    writer = DeadLetterWriter(settings, stage="produce")
    sent = {
        "bad-json": ("produce", events, RecordValidationError("event", [], line=2), "2025-01-01T10:00:00+00:00"),
        "bad-shape": ("serve", events, RuntimeError("input shape (3,) does not fit (4,)"), "2025-01-02T10:00:00+00:00"),
        "es-down": ("index", predictions, ConnectionError("Elasticsearch is DOWN"), "2025-01-03T10:00:00+00:00"),
    }
    for key, (stage, source, error, at) in sent.items():
        letter = writer.letter(
            payload=f'{{"id": "{key}"}}'.encode(), error=error, source_topic=source, key=key.encode(), stage=stage
        ).model_copy(update={"event_time": datetime.fromisoformat(at)})
        writer.producer.produce(writer.topic, letter.payload, key=letter.original_key, headers=to_headers(letter))
    writer.close()

    def keys(**filters: Any) -> list[str]:
        # Sorted: the dead-letter topic has several partitions, so "oldest first" holds per partition.
        with Client(settings) as client:
            return sorted((letter.original_key or b"").decode() for letter in client.dead_letters(**filters))

    assert keys() == ["bad-json", "bad-shape", "es-down"]
    assert keys(stage="serve") == ["bad-shape"]
    assert keys(reason="recordvalidation") == ["bad-json"]  # the error class, any case
    assert keys(reason="down") == ["es-down"]  # the message, any case
    assert keys(source_topic="predictions") == ["es-down"]  # platform names get the prefix
    assert keys(since=datetime(2025, 1, 2, 10, tzinfo=UTC)) == ["bad-shape", "es-down"]  # since: inclusive
    assert keys(until=datetime(2025, 1, 2, 10)) == ["bad-json"]  # until: exclusive; naive is UTC
    assert keys(since=datetime(2025, 1, 2), until=datetime(2025, 1, 3)) == ["bad-shape"]
    assert keys(stage="serve", reason="down") == []
    assert keys(source_topic="events", max_records=1) in (["bad-json"], ["bad-shape"])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "inferstream", "dlq", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(settings),
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result

    every = {
        letter.original_key: letter
        for letter in map(DeadLetter.model_validate_json, cli("list", "--json").stdout.splitlines())
    }
    assert sorted(every) == [b"bad-json", b"bad-shape", b"es-down"]
    assert every[b"bad-shape"].error_message == "input shape (3,) does not fit (4,)"
    (shape,) = cli("list", "--json", "--reason", "SHAPE", "--since", "2025-01-02T00:00:00Z").stdout.splitlines()
    assert json.loads(shape)["stage"] == "serve"
    table = cli("list", "--stage", "index", "--until", "2025-01-04").stderr
    assert "Elasticsearch is DOWN" in table
    assert "1 dead letters" in table
    replayed = cli("replay", "--source-topic", "events", "--reason", "record", "--until", "2025-01-02T00:00:00Z")
    assert "replayed 1" in replayed.stderr
    assert "filtered out 2" in replayed.stderr
    assert [m.key() for m in read_bounded(settings, events)] == [b"bad-json"]
