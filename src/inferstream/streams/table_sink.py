"""The inference-table sink: predictions topic → Parquet files, batched, committed after the rename.

A consumer group of its own reads the predictions topic, so serving never waits
for it. The sink follows one lifecycle (``setup() → add() → flush()``): records
buffer per partition up to ``max_rows`` (a full buffer raises
:class:`SinkBackpressureError`, and the loop flushes before reading on), a flush
writes each partition's batch as files (temporary name, fsync, rename) and only
then are the offsets committed. A prediction batch (the answer to a columnar
request) gives one row per row it scored, all at its offset, and is never split
between two files. Records that are not predictions go to the dead-letter topic.
``stats`` reconciles in records: consumed = written + dead-lettered + skipped
(replayed after a crash, already in files); ``rows`` counts the rows written.

Traces: each row keeps its record's trace id (the ``trace_id`` column). With
``tracing.enabled`` each write is a span (``table <predictions topic>``) of the records it
writes, as a worker's batch is: the child of the first sampled record's ``traceparent``,
linked to the others', with children ``batch wait`` and ``write``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.errors import ContractError, InferstreamError
from inferstream.metrics import Metrics
from inferstream.monitoring._files import Written
from inferstream.monitoring.table import remove_temporary, table_dir, write_batch, written_offsets
from inferstream.schemas.columnar import decode_predictions
from inferstream.schemas.records import Prediction
from inferstream.streams.metrics import TableMetrics
from inferstream.tracing import Batch, flush, header_of, parse, spans_for

log = logging.getLogger("inferstream.table")


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


class ParquetTableSink:
    """Buffers predictions per partition and writes them to the inference table on ``flush()``."""

    def __init__(
        self, settings: Settings, root: Path | None = None, *, max_rows: int = 50_000, max_delay_s: float = 5.0
    ) -> None:
        self.root = root or table_dir(settings)
        self.topic = settings.topics.platform_topics()["predictions"]
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._buffer: dict[int, list[tuple[int, Prediction]]] = {}
        # The trace id of each buffered record that carried a traceparent, by partition and offset.
        self._traces: dict[int, dict[int, str]] = {}
        self._buffered = 0
        self._records = 0  # records buffered (a prediction batch is one record of many rows)
        self._oldest: float | None = None
        self._written: dict[int, Written] = {}
        #: rows written to files since start
        self.rows_written = 0
        #: records written to files since start
        self.records_written = 0

    def setup(self) -> None:
        """Create the table directory, drop half-written files, learn what is written already."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = remove_temporary(self.root)
        if removed:
            log.warning("removed %d half-written table files left by a crash", removed)
        self._written = written_offsets(self.root, self.topic)

    def already_written(self, partition: int, offset: int) -> bool:
        """True when a file holds this record already (a replay after a crash)."""
        return offset in self._written.get(partition, Written())

    def add(self, partition: int, offset: int, prediction: Prediction) -> None:
        """Buffer one prediction; SinkBackpressureError when the buffer is full."""
        self.add_rows(partition, offset, [prediction])

    def add_rows(self, partition: int, offset: int, predictions: list[Prediction], trace_id: str | None = None) -> None:
        """Buffer the rows of one record (all or none); SinkBackpressureError when they do not fit.

        A record's rows always go into one file: a crash after a flush then replays whole records.
        ``trace_id``: the record's, from its ``traceparent`` header (the table's ``trace_id`` column).
        """
        if self._buffered and self._buffered + len(predictions) > self.max_rows:
            raise SinkBackpressureError(0.0, f"table sink buffer holds {self._buffered} rows: flush first")
        self._buffer.setdefault(partition, []).extend((offset, prediction) for prediction in predictions)
        if trace_id is not None:
            self._traces.setdefault(partition, {})[offset] = trace_id
        self._buffered += len(predictions)
        self._records += 1
        if self._oldest is None:
            self._oldest = time.monotonic()

    def due(self) -> bool:
        """True when the buffer is full or its oldest row waited ``max_delay_s``."""
        return self._buffered >= self.max_rows or (
            self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay_s
        )

    def flush(self) -> list[Path]:
        """Write every buffered partition's batch as renamed-into-place files; their paths."""
        written: list[Path] = []
        for partition, rows in sorted(self._buffer.items()):
            written += write_batch(self.root, self.topic, partition, rows, self._traces.get(partition))
            self.rows_written += len(rows)
            done = self._written.get(partition, Written())
            self._written[partition] = Written(max(rows[-1][0], done.up_to), done.beyond)
        self._buffer.clear()
        self._traces.clear()
        self._buffered = 0
        self.records_written += self._records
        self._records = 0
        self._oldest = None
        return written

    @property
    def buffered(self) -> int:
        """Rows waiting for the next flush."""
        return self._buffered


class InferenceTableSink:
    """Runs the table sink on the predictions topic until ``stop()`` (one consumer group, N copies)."""

    def __init__(
        self,
        settings: Settings,
        *,
        root: Path | None = None,
        max_rows: int = 50_000,
        max_delay_s: float = 5.0,
        metrics: Metrics | None = None,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.sink = ParquetTableSink(settings, root, max_rows=max_rows, max_delay_s=max_delay_s)
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        self._table_metrics = self.metrics.part(TableMetrics)
        self.group_id = group_id or settings.topics.group("table")
        self.stats = SinkStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        # Spans when tracing is on: the raw traceparent of each record buffered, and when the first was read.
        self._spans = spans_for(settings.tracing, "inferstream-table")
        self._span_name = f"table {self.sink.topic}"
        self._buffered_traces: list[bytes | None] = []
        self._first_read: float | None = None

    def run(self) -> SinkStats:
        """Consume, buffer, flush and commit until ``stop()``; flushes what is buffered on the way out."""
        TopicAdmin(self.settings).ensure_platform_topics()
        self.sink.setup()
        consumer = Consumer(
            self.settings,
            [self.sink.topic],
            group_id=self.group_id,
            from_beginning=True,
            metrics=self.metrics,
            stage="table",
        )
        dlq = DeadLetterWriter(self.settings, stage="table", metrics=self.metrics)
        # The last record read per partition: what the next commit covers.
        pending: dict[int, confluent_kafka.Message] = {}
        self.ready.set()
        try:
            while not self._stop.is_set() and not consumer.stopping:
                for message in consumer.consume(1000, 0.2):
                    pending[message.partition() or 0] = message
                    self._take(message, dlq)
                if self.sink.due():
                    self._flush(consumer, dlq, pending)
            self._flush(consumer, dlq, pending)
        finally:
            dlq.close()
            consumer.close()
            flush()  # the last spans, when tracing is on
        return self.stats

    def _take(self, message: confluent_kafka.Message, dlq: DeadLetterWriter) -> None:
        self.stats.consumed += 1
        partition, offset = message.partition() or 0, message.offset() or 0
        if self.sink.already_written(partition, offset):
            self.stats.skipped += 1
            self.metrics.handled("table", "skipped")
            return
        try:
            value = message.value()
            if value is None:
                raise ContractError("prediction has no value (a tombstone?)")
            headers = message.headers()
            predictions = decode_predictions(value, headers)  # a prediction batch gives its rows
        except Exception as exc:  # about this record alone (decoding raises ContractError for its bytes)
            dlq.send_message(message, exc)
            self.stats.dead_letters += 1
            return
        raw = header_of(headers)
        trace = parse(raw)  # a malformed traceparent is no trace, never an error
        trace_id = trace.trace_id if trace is not None else None
        try:
            self.sink.add_rows(partition, offset, predictions, trace_id)
        except SinkBackpressureError:
            self._write(dlq)  # never buffer past max_rows; committed with the next flush
            self.sink.add_rows(partition, offset, predictions, trace_id)
        if self._spans is not None:
            if self._first_read is None:
                self._first_read = time.monotonic()
            self._buffered_traces.append(raw)

    def _write(self, dlq: DeadLetterWriter) -> None:
        # Dead letters are acknowledged before the files that cover their offsets exist: a
        # restart skips every offset up to a complete batch's last, dead-lettered ones too.
        dlq.flush()
        before, rows_before = self.sink.records_written, self.sink.rows_written
        started = time.monotonic()
        span = self._write_span(started)
        files = self.sink.flush()
        if span is not None:
            span.child("write", started, time.monotonic())
            span.end()
        self.stats.files += files
        self._table_metrics.files.inc(len(files))
        self._table_metrics.rows.inc(self.sink.rows_written - rows_before)
        self.stats.written, self.stats.rows = self.sink.records_written, self.sink.rows_written
        self.metrics.records_out.labels("inference-table", "table").inc(self.sink.records_written - before)
        self.metrics.handled("table", "out", self.sink.records_written - before)
        self.metrics.stage_seconds.labels("table", "write").observe(time.monotonic() - started)

    def _write_span(self, started: float) -> Batch | None:
        """The span of the write about to start, over the records buffered (None: tracing off, or none)."""
        if self._spans is None or self._first_read is None:
            return None
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": self.sink.topic,
            "messaging.batch.message_count": len(self._buffered_traces),
            "inferstream.rows": self.sink.buffered,
        }
        span = self._spans.batch(self._span_name, self._buffered_traces, self._first_read, attributes)
        span.child("batch wait", self._first_read, started)
        self._buffered_traces = []
        self._first_read = None
        return span

    def _flush(self, consumer: Consumer, dlq: DeadLetterWriter, pending: dict[int, confluent_kafka.Message]) -> None:
        if not pending:
            return
        self._write(dlq)
        consumer.commit(pending.values())
        pending.clear()

    def stop(self) -> None:
        """Flush, commit and return from ``run()``."""
        self._stop.set()
