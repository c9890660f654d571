"""The loop of the sinks that keep a topic as offset-named files (the inference table, the label table).

A consumer group of its own reads the topic. Each record is decoded (what cannot be
is dead-lettered with the reason, the loop goes on) and handed to the sink's buffer;
when the buffer is due it writes its files (temporary name, fsync, rename) and only then
are the offsets committed, so nothing is committed past a record not written. After a
crash the buffer skips the offsets its files hold already, so a replay writes nothing
twice. ``stats`` reconciles: consumed = written + dead_letters + skipped.

A sink says how to decode a record (:meth:`FileSink.decode`), how to buffer it
(:meth:`FileSink.add`) and how to write (:meth:`FileSink.write`); the loop, the
skipping, the dead letters, the backpressure and the commits are here, once.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.errors import ContractError, InferstreamError
from inferstream.metrics import Metrics
from inferstream.monitoring._files import Written


class SinkBackpressureError(InferstreamError):
    """The sink's buffer is full: flush (or wait ``retry_after`` seconds) before adding more."""

    def __init__(self, retry_after: float, message: str = "sink buffer is full") -> None:
        self.retry_after = retry_after
        super().__init__(message)


@dataclass
class SinkStats:
    """Counts of records since start: consumed = written + dead_letters + skipped (``rows``: rows written)."""

    consumed: int = 0
    written: int = 0
    rows: int = 0
    dead_letters: int = 0
    skipped: int = 0
    files: list[Path] = field(default_factory=list)


class FileBuffer(Protocol):
    """What the loop needs of a sink's buffer of files."""

    topic: str
    root: Path

    def setup(self) -> None:
        """Make the folder and forget the temporary files of a crashed write."""

    def due(self) -> bool:
        """Whether the buffer is to be written now."""

    def already_written(self, partition: int, offset: int) -> bool:
        """Whether a file holds this record already (a replay after a crash)."""


R = TypeVar("R")


class PartitionBuffer(Generic[R]):
    """Records buffered per partition with their offsets, until they are written as files.

    Due when it holds ``max_rows`` rows or its oldest waited ``max_delay_s``; a record's
    rows all fit or raise :class:`SinkBackpressureError` (write first), so a record is
    never split between two files. ``setup`` learns which offsets the files hold already.
    """

    def __init__(self, root: Path, topic: str, *, max_rows: int, max_delay_s: float) -> None:
        self.root = root
        self.topic = topic
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._buffer: dict[int, list[tuple[int, R]]] = {}
        self._buffered = 0
        self._records = 0  # records buffered (a prediction batch is one record of many rows)
        self._oldest: float | None = None
        self._written: dict[int, Written] = {}

    def already_written(self, partition: int, offset: int) -> bool:
        """True when a file holds this record already (a replay after a crash)."""
        return offset in self._written.get(partition, Written())

    def due(self) -> bool:
        """True when the buffer is full or its oldest row waited ``max_delay_s``."""
        return self._buffered >= self.max_rows or (
            self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay_s
        )

    @property
    def buffered(self) -> int:
        """Rows waiting for the next write."""
        return self._buffered

    def _hold(self, partition: int, offset: int, rows: Sequence[R], what: str) -> None:
        """Buffer the rows of one record (all or none); ``SinkBackpressureError`` when they do not fit."""
        if self._buffered and self._buffered + len(rows) > self.max_rows:
            raise SinkBackpressureError(0.0, f"{what} buffer holds {self._buffered} rows: flush first")
        self._buffer.setdefault(partition, []).extend((offset, row) for row in rows)
        self._buffered += len(rows)
        self._records += 1
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _take(self) -> list[tuple[int, list[tuple[int, R]]]]:
        """Every partition's rows, lowest partition first, the buffer emptied (a flush writes them all, or raises).

        The flush calls :meth:`_wrote` once a partition's rows are in their files.
        """
        taken = sorted(self._buffer.items())
        self._buffer = {}
        self._buffered = 0
        self._records = 0
        self._oldest = None
        return taken

    def _wrote(self, partition: int, rows: list[tuple[int, R]]) -> None:
        """The files hold ``rows`` of ``partition`` now: a replay of their offsets is skipped."""
        done = self._written.get(partition, Written())
        self._written[partition] = Written(max(rows[-1][0], done.up_to), done.beyond)


B = TypeVar("B", bound=FileBuffer)


class FileSink(ABC, Generic[B]):
    """Runs a sink on its topic until ``stop()`` (one consumer group, N copies)."""

    #: The stage its metrics and dead letters name.
    stage: ClassVar[str]
    #: What a record is, in messages ("prediction", "label").
    record: ClassVar[str]

    def __init__(self, settings: Settings, buffer: B, metrics: Metrics | None, group_id: str) -> None:
        self.settings = settings
        self.buffer = buffer
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        self.group_id = group_id
        self.stats = SinkStats()
        self.ready = threading.Event()
        self._stop = threading.Event()

    def run(self) -> SinkStats:
        """Consume, buffer, write and commit until ``stop()``; writes what is buffered on the way out."""
        TopicAdmin(self.settings).ensure_platform_topics()
        self.buffer.setup()
        consumer = Consumer(
            self.settings,
            [self.buffer.topic],
            group_id=self.group_id,
            from_beginning=True,
            metrics=self.metrics,
            stage=self.stage,
        )
        dlq = DeadLetterWriter(self.settings, stage=self.stage, metrics=self.metrics)
        # The last record read per partition: what the next commit covers.
        pending: dict[int, confluent_kafka.Message] = {}
        self.ready.set()
        try:
            while not self._stop.is_set() and not consumer.stopping:
                for message in consumer.consume(1000, 0.2):
                    pending[message.partition() or 0] = message
                    self._take(message, dlq)
                if self.buffer.due():
                    self._flush(consumer, dlq, pending)
                self.tick(dlq)
            self._flush(consumer, dlq, pending)
        finally:
            dlq.close()
            consumer.close()
            self.closed()
        return self.stats

    def stop(self) -> None:
        """Write, commit and return from ``run()``."""
        self._stop.set()

    # -- what each sink says ------------------------------------------------------------

    @abstractmethod
    def decode(self, value: bytes, headers: Any) -> Any:
        """The record's content; raises (``ContractError``) for bytes that are not one."""

    @abstractmethod
    def add(self, partition: int, offset: int, decoded: Any, message: confluent_kafka.Message) -> None:
        """Buffer a decoded record; ``SinkBackpressureError`` when the buffer must be written first."""

    @abstractmethod
    def write(self) -> None:
        """Write what is buffered as files (the dead letters before them are acknowledged already)."""

    def tick(self, dlq: DeadLetterWriter) -> None:
        """Called once a turn of the loop (after any write): periodic work of the sink."""

    def closed(self) -> None:
        """Called once the consumer is closed."""

    # -- the loop's own -------------------------------------------------------------------

    def _take(self, message: confluent_kafka.Message, dlq: DeadLetterWriter) -> None:
        self.stats.consumed += 1
        partition, offset = message.partition() or 0, message.offset() or 0
        if self.buffer.already_written(partition, offset):
            self.stats.skipped += 1
            self.metrics.handled(self.stage, "skipped")
            return
        try:
            value = message.value()
            if value is None:
                raise ContractError(f"{self.record} has no value (a tombstone?)")
            decoded = self.decode(value, message.headers())
        except Exception as exc:  # about this record alone: its bytes go to the dead-letter topic
            dlq.send_message(message, exc)
            self.stats.dead_letters += 1
            return
        try:
            self.add(partition, offset, decoded, message)
        except SinkBackpressureError:
            self._write(dlq)  # never buffer past the buffer's limit; committed with the next flush
            self.add(partition, offset, decoded, message)

    def _write(self, dlq: DeadLetterWriter) -> None:
        # Dead letters are acknowledged before the files that cover their offsets exist: a
        # restart skips every offset up to a file's last, dead-lettered ones too.
        dlq.flush()
        self.write()

    def _flush(self, consumer: Consumer, dlq: DeadLetterWriter, pending: dict[int, confluent_kafka.Message]) -> None:
        if not pending:
            return
        self._write(dlq)
        consumer.commit(pending.values())
        pending.clear()


__all__ = ["FileBuffer", "FileSink", "PartitionBuffer", "SinkBackpressureError", "SinkStats"]
