import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from inferstream.config import Settings
from inferstream.connectors.kafka.dlq import (
    ATTEMPT_HEADER,
    DeadLetterFilter,
    DeadLetterWriter,
    attempt_of,
    from_message,
    to_headers,
)
from inferstream.schemas import SCHEMA_HEADER


@dataclass
class FakeMessage:
    """Just enough of confluent_kafka.Message for decoding."""

    _value: bytes
    _key: bytes | None
    _headers: list[tuple[str, bytes]] = field(default_factory=list)

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def topic(self) -> str:
        return "inferstream.dead-letters"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 5


def _writer(tmp_path: Path, spill: bool) -> DeadLetterWriter:
    settings = Settings.load(
        dead_letters={"max_payload_bytes": 1024, "spill_dir": str(tmp_path / "spill") if spill else None},
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # never contacted: nothing is sent
    )
    return DeadLetterWriter(settings, stage="ingest")


def test_small_payload_is_kept_whole_with_its_headers(tmp_path: Path) -> None:
    writer = _writer(tmp_path, spill=False)
    letter = writer.letter(
        payload=b'{"id": 1}',
        error=ValueError("bad id"),
        source_topic="inferstream.events",
        key=b"k1",
        headers=[(SCHEMA_HEADER, b"event/1"), ("trace", b"abc"), (ATTEMPT_HEADER, b"2")],
        partition=2,
        offset=41,
    )
    assert letter.payload == b'{"id": 1}'
    assert not letter.truncated
    assert letter.attempt == 2
    assert letter.error_class == "ValueError"
    assert letter.sha256 == hashlib.sha256(b'{"id": 1}').hexdigest()
    headers = to_headers(letter)
    names = [k for k, _ in headers]
    assert names.count(SCHEMA_HEADER) == 1
    assert dict(headers)[SCHEMA_HEADER] == b"dead-letter/1"
    assert dict(headers)["dlq.original.schema"] == b"event/1"
    decoded = from_message(FakeMessage(letter.payload, b"k1", headers))
    assert decoded.source_topic == "inferstream.events"
    assert (decoded.source_partition, decoded.source_offset) == (2, 41)
    assert decoded.stage == "ingest"
    assert decoded.error_message == "bad id"
    assert decoded.attempt == 2
    assert decoded.original_key == b"k1"
    assert (SCHEMA_HEADER, b"event/1") in decoded.original_headers
    assert ("trace", b"abc") in decoded.original_headers


def test_oversized_payload_is_truncated_and_spilled(tmp_path: Path) -> None:
    writer = _writer(tmp_path, spill=True)
    payload = bytes(range(256)) * 40  # 10 KiB
    letter = writer.letter(payload=payload, error="too large", source_topic="t")
    assert letter.truncated
    assert len(letter.payload) == 1024
    assert letter.payload == payload[:1024]
    assert letter.original_size == len(payload)
    assert letter.sha256 == hashlib.sha256(payload).hexdigest()
    assert letter.spill_path is not None
    assert Path(letter.spill_path).read_bytes() == payload
    decoded = from_message(FakeMessage(letter.payload, None, to_headers(letter)))
    assert decoded.truncated
    assert decoded.original_size == len(payload)
    assert decoded.spill_path == letter.spill_path


def test_oversized_without_spill_dir_keeps_prefix_size_and_hash(tmp_path: Path) -> None:
    letter = _writer(tmp_path, spill=False).letter(payload=b"x" * 5000, error="too large", source_topic="t")
    assert letter.truncated
    assert letter.spill_path is None
    assert letter.original_size == 5000


def test_attempt_header_parsing() -> None:
    assert attempt_of(None) == 1
    assert attempt_of([(ATTEMPT_HEADER, b"3")]) == 3
    assert attempt_of([(ATTEMPT_HEADER, b"junk")]) == 1


def test_filter_needs_every_condition_given(tmp_path: Path) -> None:
    letter = _writer(tmp_path, spill=False).letter(
        payload=b"x", error=TimeoutError("Deadline passed"), source_topic="inferstream.events", stage="serve"
    )
    letter = letter.model_copy(update={"event_time": datetime(2025, 1, 1, 12, tzinfo=UTC)})
    assert DeadLetterFilter().matches(letter)
    assert DeadLetterFilter(stage="serve", reason="timeout", source_topic="inferstream.events").matches(letter)
    assert DeadLetterFilter(reason="DEADLINE").matches(letter)
    assert not DeadLetterFilter(reason="deadline", stage="ingest").matches(letter)
    assert not DeadLetterFilter(source_topic="events").matches(letter)  # full names: the SDK adds the prefix
    # since ≤ time < until; naive means UTC, aware times keep their offset.
    assert DeadLetterFilter(since=datetime(2025, 1, 1, 12), until=datetime(2025, 1, 1, 12, 0, 1)).matches(letter)
    assert not DeadLetterFilter(until=datetime(2025, 1, 1, 12)).matches(letter)
    paris = timezone(timedelta(hours=1))
    assert DeadLetterFilter(since=datetime(2025, 1, 1, 13, tzinfo=paris)).matches(letter)
    assert not DeadLetterFilter(since=datetime(2025, 1, 1, 13, 0, 1, tzinfo=paris)).matches(letter)
