"""The dead-letter topic: records that could not be processed, never dropped.

A dead letter's value is the original record's bytes and its key the original
key; the original headers are kept and these are added:

=====================  =============================================================
``dlq.source.topic``   topic the record came from (or was meant for)
``dlq.source.partition`` / ``dlq.source.offset``  where it was read (absent if never written)
``dlq.stage``          step that failed (produce, ingest, serve, index, ...)
``dlq.error.class``    error class name
``dlq.error.message``  what was wrong
``dlq.attempt``        1 for the first failure, +1 for each replay that failed again
``dlq.time``           when it was dead-lettered (ISO 8601, UTC)
``dlq.original.size``  size of the original value in bytes
``dlq.original.sha256`` its sha256 (hex)
``dlq.truncated``      ``true`` when only a prefix of the value is kept
``dlq.spill.path``     where the full value was written, when truncated and spilling is on
``inferstream-schema`` ``dead-letter/1``
=====================  =============================================================

A replayed record carries ``inferstream-attempt: N`` so that, if it fails again,
its next dead letter says attempt N.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka._util import as_bytes
from inferstream.connectors.kafka.producer import Producer
from inferstream.metrics import Metrics
from inferstream.schemas._types import utcnow
from inferstream.schemas.codec import SCHEMA_HEADER, schema_header_value
from inferstream.schemas.records import DeadLetter

ATTEMPT_HEADER = "inferstream-attempt"
_PREFIX = "dlq."
_MAX_MESSAGE_CHARS = 2000

Headers = Sequence[tuple[str, bytes | str | None]]


def attempt_of(headers: Headers | None) -> int:
    """The attempt number a record carries (1 when it was never replayed)."""
    for key, value in headers or ():
        if key == ATTEMPT_HEADER and value:
            try:
                return max(int(as_bytes(value)), 1)
            except ValueError:
                return 1
    return 1


class DeadLetterWriter:
    """Sends records that failed to the dead-letter topic, with the reason in headers."""

    def __init__(
        self,
        settings: Settings,
        *,
        stage: str,
        producer: Producer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.topic = settings.topics.platform_topics()["dead-letters"]
        self.stage = stage
        self._config = settings.dead_letters
        self._settings = settings
        self._own_producer = producer is None
        self._producer = producer
        self._metrics = metrics
        self.sent = 0

    def send(
        self,
        *,
        payload: bytes | None,
        error: BaseException | str,
        source_topic: str,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        offset: int | None = None,
        stage: str | None = None,
        error_class: str | None = None,
        tag: Any = None,
    ) -> DeadLetter:
        """Queue one dead letter (``flush()`` waits for it); returns what was sent.

        ``tag`` goes with the record to the producer (acknowledgement tracking).
        """
        letter = self.letter(
            payload=payload,
            error=error,
            source_topic=source_topic,
            key=key,
            headers=headers,
            partition=partition,
            offset=offset,
            stage=stage,
            error_class=error_class,
        )
        self.producer.produce(self.topic, letter.payload, key=letter.original_key, headers=to_headers(letter), tag=tag)
        self.sent += 1
        if self._metrics is not None:
            self._metrics.dead_letters.labels(source_topic, letter.stage, letter.error_class).inc()
            self._metrics.handled(letter.stage, "dead_letter")
        return letter

    def send_message(
        self, message: confluent_kafka.Message, error: BaseException | str, *, stage: str | None = None, tag: Any = None
    ) -> DeadLetter:
        """Dead-letter a consumed record, keeping where it was read."""
        key = message.key()
        return self.send(
            payload=as_bytes(message.value()),
            error=error,
            source_topic=message.topic() or "",
            key=as_bytes(key) if key is not None else None,
            headers=message.headers(),
            partition=message.partition(),
            offset=message.offset(),
            stage=stage,
            tag=tag,
        )

    @property
    def producer(self) -> Producer:
        """The producer dead letters go through (made on first use unless one was given)."""
        if self._producer is None:
            self._producer = Producer(self._settings, metrics=self._metrics, stage="dead-letter")
        return self._producer

    def letter(
        self,
        *,
        payload: bytes | None,
        error: BaseException | str,
        source_topic: str,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        offset: int | None = None,
        stage: str | None = None,
        error_class: str | None = None,
    ) -> DeadLetter:
        """Build (without sending) the dead letter of a record: truncated and spilled if too large."""
        data = payload or b""
        digest = hashlib.sha256(data).hexdigest()
        limit = self._config.max_payload_bytes
        truncated = len(data) > limit
        spill_path = None
        if truncated and self._config.spill_dir is not None:
            spill_path = str(self._spill(data, digest))
        original = [(k, v if v is None else as_bytes(v)) for k, v in (headers or ()) if not k.startswith(_PREFIX)]
        message = str(error) if isinstance(error, str) else (str(error) or type(error).__name__)
        return DeadLetter(
            event_time=utcnow(),
            source_topic=source_topic,
            source_partition=partition if partition is not None and partition >= 0 else None,
            source_offset=offset if offset is not None and offset >= 0 else None,
            stage=stage or self.stage,
            error_class=error_class or (type(error).__name__ if not isinstance(error, str) else "Error"),
            error_message=message[:_MAX_MESSAGE_CHARS],
            attempt=attempt_of(headers),
            original_key=key,
            original_headers=original,
            payload=data[:limit] if truncated else data,
            original_size=len(data),
            sha256=digest,
            truncated=truncated,
            spill_path=spill_path,
        )

    def _spill(self, data: bytes, digest: str) -> Path:
        assert self._config.spill_dir is not None
        directory = self._config.spill_dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{digest}.bin"
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            temporary.replace(path)
        return path.resolve()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every dead letter is acknowledged (raises DeliveryError otherwise)."""
        if self._producer is not None:
            self._producer.flush(timeout)

    def close(self) -> None:
        """Flush, and close the producer if this writer made it."""
        if self._producer is None:
            return
        if self._own_producer:
            self._producer.close()
        else:
            self._producer.flush()


def to_headers(letter: DeadLetter) -> list[tuple[str, bytes | None]]:
    """The Kafka headers of a dead letter: the original ones, then ``dlq.*``."""
    headers: list[tuple[str, bytes | None]] = [(k, v) for k, v in letter.original_headers if k != SCHEMA_HEADER]
    extra: dict[str, str | None] = {
        "dlq.source.topic": letter.source_topic,
        "dlq.source.partition": None if letter.source_partition is None else str(letter.source_partition),
        "dlq.source.offset": None if letter.source_offset is None else str(letter.source_offset),
        "dlq.stage": letter.stage,
        "dlq.error.class": letter.error_class,
        "dlq.error.message": letter.error_message,
        "dlq.attempt": str(letter.attempt),
        "dlq.time": letter.event_time.isoformat(),
        "dlq.original.size": str(letter.original_size),
        "dlq.original.sha256": letter.sha256,
        "dlq.truncated": "true" if letter.truncated else "false",
        "dlq.spill.path": letter.spill_path,
        "dlq.id": letter.id,
    }
    # Text we wrote may quote the record (a lone surrogate in an error message): never fail on it.
    headers += [(k, v.encode("utf-8", "backslashreplace")) for k, v in extra.items() if v is not None]
    # The original schema header moves aside, its bytes as they were (they may not be UTF-8).
    headers += [
        ("dlq.original.schema", value) for name, value in letter.original_headers if name == SCHEMA_HEADER and value
    ]
    headers.append((SCHEMA_HEADER, schema_header_value(DeadLetter)))
    return headers


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to take: every condition given must hold (None: any).

    ``reason`` is a case-insensitive substring of the error class or message;
    ``since`` ≤ time dead-lettered < ``until`` (naive times are UTC).
    """

    source_topic: str | None = None
    stage: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """True when ``letter`` meets every condition."""
        if self.source_topic is not None and letter.source_topic != self.source_topic:
            return False
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.reason is not None:
            needle = self.reason.lower()
            if needle not in letter.error_class.lower() and needle not in letter.error_message.lower():
                return False
        if self.since is not None and letter.event_time < _aware(self.since):
            return False
        return self.until is None or letter.event_time < _aware(self.until)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def from_message(message: confluent_kafka.Message) -> DeadLetter:
    """Decode a record of the dead-letter topic.

    Whatever its headers hold (a record produced there by hand, a header of another
    writer), this gives a dead letter: values that cannot be read fall back to what the
    record itself says (its bytes, its place), so listing and replay never stop on one.
    """
    dlq: dict[str, str] = {}
    original: list[tuple[str, bytes | None]] = []
    for key, value in message.headers() or []:
        if key == "dlq.original.schema":
            original.append((SCHEMA_HEADER, as_bytes(value)))  # the bytes as they came
        elif key.startswith(_PREFIX):
            dlq[key[len(_PREFIX) :]] = as_bytes(value).decode(errors="replace")
        elif key != SCHEMA_HEADER:
            original.append((key, value if value is None else as_bytes(value)))
    payload = as_bytes(message.value())
    original_key = message.key()
    digest = dlq.get("original.sha256", "")
    id_ = dlq.get("id", "").strip()
    return DeadLetter(
        id=id_ if 0 < len(id_) <= 512 else f"{message.topic()}-{message.partition()}-{message.offset()}",
        event_time=_time(dlq.get("time")),
        source_topic=dlq.get("source.topic", ""),
        source_partition=_number(dlq.get("source.partition")),
        source_offset=_number(dlq.get("source.offset")),
        stage=dlq.get("stage", "unknown"),
        error_class=dlq.get("error.class", "unknown"),
        error_message=dlq.get("error.message", ""),
        attempt=max(_number(dlq.get("attempt")) or 1, 1),
        original_key=as_bytes(original_key) if original_key is not None else None,
        original_headers=original,
        payload=payload,
        original_size=max(_number(dlq.get("original.size")) or len(payload), 0),
        sha256=digest if _SHA256.fullmatch(digest) else hashlib.sha256(payload).hexdigest(),
        truncated=dlq.get("truncated") == "true",
        spill_path=dlq.get("spill.path"),
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _number(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 19:
        return None
    return int(text)


def _time(text: str | None) -> datetime:
    if text:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return utcnow()
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return utcnow()
