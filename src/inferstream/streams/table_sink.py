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
import time
from pathlib import Path
from typing import Any, ClassVar

import confluent_kafka

from inferstream.config import Settings
from inferstream.metrics import Metrics
from inferstream.monitoring.table import remove_temporary, table_dir, write_batch, written_offsets
from inferstream.schemas.columnar import decode_predictions
from inferstream.schemas.records import Prediction
from inferstream.streams.file_sink import FileSink, PartitionBuffer
from inferstream.streams.metrics import TableMetrics
from inferstream.tracing import Batch, flush, header_of, parse, spans_for

log = logging.getLogger("inferstream.table")


class ParquetTableSink(PartitionBuffer[Prediction]):
    """Buffers predictions per partition and writes them to the inference table on ``flush()``."""

    def __init__(
        self, settings: Settings, root: Path | None = None, *, max_rows: int = 50_000, max_delay_s: float = 5.0
    ) -> None:
        topic = settings.topics.platform_topics()["predictions"]
        super().__init__(root or table_dir(settings), topic, max_rows=max_rows, max_delay_s=max_delay_s)
        # The trace id of each buffered record that carried a traceparent, by partition and offset.
        self._traces: dict[int, dict[int, str]] = {}
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

    def add(self, partition: int, offset: int, prediction: Prediction) -> None:
        """Buffer one prediction; SinkBackpressureError when the buffer is full."""
        self.add_rows(partition, offset, [prediction])

    def add_rows(self, partition: int, offset: int, predictions: list[Prediction], trace_id: str | None = None) -> None:
        """Buffer the rows of one record (all or none); SinkBackpressureError when they do not fit.

        A record's rows always go into one file: a crash after a flush then replays whole records.
        ``trace_id``: the record's, from its ``traceparent`` header (the table's ``trace_id`` column).
        """
        self._hold(partition, offset, predictions, "table sink")
        if trace_id is not None:
            self._traces.setdefault(partition, {})[offset] = trace_id

    def flush(self) -> list[Path]:
        """Write every buffered partition's batch as renamed-into-place files; their paths."""
        records, traces, self._traces = self._records, self._traces, {}
        written: list[Path] = []
        for partition, rows in self._take():
            written += write_batch(self.root, self.topic, partition, rows, traces.get(partition))
            self._wrote(partition, rows)
            self.rows_written += len(rows)
        self.records_written += records
        return written


class InferenceTableSink(FileSink[ParquetTableSink]):
    """Runs the table sink on the predictions topic until ``stop()`` (one consumer group, N copies)."""

    stage: ClassVar[str] = "table"
    record: ClassVar[str] = "prediction"

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
        buffer = ParquetTableSink(settings, root, max_rows=max_rows, max_delay_s=max_delay_s)
        super().__init__(settings, buffer, metrics, group_id or settings.topics.group("table"))
        self._table_metrics = self.metrics.part(TableMetrics)
        # Spans when tracing is on: the raw traceparent of each record buffered, and when the first was read.
        self._spans = spans_for(settings.tracing, "inferstream-table")
        self._span_name = f"table {buffer.topic}"
        self._buffered_traces: list[bytes | None] = []
        self._first_read: float | None = None

    def decode(self, value: bytes, headers: Any) -> list[Prediction]:
        """The record's predictions (a prediction batch gives its rows)."""
        return decode_predictions(value, headers)

    def add(self, partition: int, offset: int, decoded: Any, message: confluent_kafka.Message) -> None:
        """Buffer the rows, with the record's trace id (a malformed traceparent is no trace, never an error)."""
        raw = header_of(message.headers())
        trace = parse(raw)
        self.buffer.add_rows(partition, offset, decoded, trace.trace_id if trace is not None else None)
        if self._spans is not None:
            if self._first_read is None:
                self._first_read = time.monotonic()
            self._buffered_traces.append(raw)

    def write(self) -> None:
        """Write the buffered rows as files; count them (and record the write's span when tracing is on)."""
        sink = self.buffer
        before, rows_before = sink.records_written, sink.rows_written
        started = time.monotonic()
        span = self._write_span(started)
        files = sink.flush()
        if span is not None:
            span.child("write", started, time.monotonic())
            span.end()
        self.stats.files += files
        self._table_metrics.files.inc(len(files))
        self._table_metrics.rows.inc(sink.rows_written - rows_before)
        self.stats.written, self.stats.rows = sink.records_written, sink.rows_written
        self.metrics.records_out.labels("inference-table", "table").inc(sink.records_written - before)
        self.metrics.handled("table", "out", sink.records_written - before)
        self.metrics.stage_seconds.labels("table", "write").observe(time.monotonic() - started)

    def closed(self) -> None:
        """Export the last spans, when tracing is on."""
        flush()

    def _write_span(self, started: float) -> Batch | None:
        """The span of the write about to start, over the records buffered (None: tracing off, or none)."""
        if self._spans is None or self._first_read is None:
            return None
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": self.buffer.topic,
            "messaging.batch.message_count": len(self._buffered_traces),
            "inferstream.rows": self.buffer.buffered,
        }
        span = self._spans.batch(self._span_name, self._buffered_traces, self._first_read, attributes)
        span.child("batch wait", self._first_read, started)
        self._buffered_traces = []
        self._first_read = None
        return span
