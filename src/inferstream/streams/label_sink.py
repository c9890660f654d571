"""The label table sink: ``labels`` topic → Parquet files beside the inference table, committed after the rename.

A consumer group of its own reads the labels topic. Records buffer per partition
(``setup() → add() → flush()``); a flush writes each partition's batch as one file
(temporary name, fsync, rename, see :mod:`inferstream.monitoring.label_table`) and only
then are the offsets committed, so nothing is committed past a label not written. After
a crash the sink skips the offsets its files hold already, so a replay writes no label
twice. A record that is not a valid label goes to the dead-letter topic with the reason.
``stats`` reconciles: consumed = written + dead_letters + skipped.

Labels are not matched to predictions here: readers of the inference table join them
(:mod:`inferstream.monitoring.label_join`), so a label may come before its prediction,
hours after it, or more than once. Every ``monitoring.label_sweep_s`` the sink sweeps:
label records whose id names no prediction ``monitoring.label_horizon_s`` after their
label time are dead-lettered with the reason and kept in the ledger of
:mod:`inferstream.monitoring.label_expiry` (``expired`` counts them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.errors import ContractError
from inferstream.metrics import Metrics
from inferstream.monitoring._files import Written
from inferstream.monitoring.label_expiry import overdue, read_expired, write_expired
from inferstream.monitoring.label_table import read_labels, remove_temporary_labels, write_labels, written_label_offsets
from inferstream.monitoring.table import read_table, table_dir, table_files
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Label
from inferstream.streams.table_sink import SinkBackpressureError, SinkStats

log = logging.getLogger("inferstream.labels")

STAGE = "labels"


class LabelBuffer:
    """Buffers labels per partition and writes them to the label table on ``flush()``."""

    def __init__(self, settings: Settings, root: Path | None = None, *, max_rows: int, max_delay_s: float) -> None:
        self.root = root or table_dir(settings)
        self.topic = settings.topics.platform_topics()["labels"]
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._buffer: dict[int, list[tuple[int, Label]]] = {}
        self._buffered = 0
        self._oldest: float | None = None
        self._written: dict[int, Written] = {}
        #: labels written to files since start
        self.labels_written = 0

    def setup(self) -> None:
        """Drop half-written files, learn which offsets the files hold already."""
        removed = remove_temporary_labels(self.root)
        if removed:
            log.warning("removed %d half-written label files left by a crash", removed)
        self._written = written_label_offsets(self.root, self.topic)

    def already_written(self, partition: int, offset: int) -> bool:
        """True when a file holds this record already (a replay after a crash)."""
        return offset in self._written.get(partition, Written())

    def add(self, partition: int, offset: int, label: Label) -> None:
        """Buffer one label; SinkBackpressureError when the buffer is full."""
        if self._buffered >= self.max_rows:
            raise SinkBackpressureError(0.0, f"label buffer holds {self._buffered} labels: flush first")
        self._buffer.setdefault(partition, []).append((offset, label))
        self._buffered += 1
        if self._oldest is None:
            self._oldest = time.monotonic()

    def due(self) -> bool:
        """True when the buffer is full or its oldest label waited ``max_delay_s``."""
        return self._buffered >= self.max_rows or (
            self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay_s
        )

    def flush(self) -> list[Path]:
        """Write every buffered partition's batch as a renamed-into-place file; their paths."""
        written = []
        for partition, rows in sorted(self._buffer.items()):
            path = write_labels(self.root, self.topic, partition, rows)
            if path is not None:
                written.append(path)
            self._written[partition] = Written(max(rows[-1][0], self._written.get(partition, Written()).up_to))
        self.labels_written += self._buffered
        self._buffer.clear()
        self._buffered = 0
        self._oldest = None
        return written


class LabelTableSink:
    """Runs the label buffer on the labels topic until ``stop()`` (one consumer group, N copies)."""

    def __init__(
        self,
        settings: Settings,
        *,
        root: Path | None = None,
        max_rows: int = 50_000,
        max_delay_s: float = 5.0,
        metrics: Metrics | None = None,
        group_id: str | None = None,
        horizon_s: float | None = None,
        sweep_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.buffer = LabelBuffer(settings, root, max_rows=max_rows, max_delay_s=max_delay_s)
        self.horizon_s = horizon_s or settings.monitoring.label_horizon_s
        self.sweep_s = sweep_s or settings.monitoring.label_sweep_s
        #: label records dead-lettered past the horizon since start
        self.expired = 0
        self._next_sweep = 0.0
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        self.group_id = group_id or settings.topics.group("label-table")
        self.stats = SinkStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._codec = codec_for(Label)

    def run(self) -> SinkStats:
        """Consume, buffer, flush and commit until ``stop()``; flushes what is buffered on the way out."""
        TopicAdmin(self.settings).ensure_platform_topics()
        self.buffer.setup()
        consumer = Consumer(
            self.settings,
            [self.buffer.topic],
            group_id=self.group_id,
            from_beginning=True,
            metrics=self.metrics,
            stage=STAGE,
        )
        dlq = DeadLetterWriter(self.settings, stage=STAGE, metrics=self.metrics)
        pending: dict[int, confluent_kafka.Message] = {}  # the last record read per partition
        self.ready.set()
        try:
            while not self._stop.is_set() and not consumer.stopping:
                for message in consumer.consume(1000, 0.2):
                    pending[message.partition() or 0] = message
                    self._take(message, dlq)
                if self.buffer.due():
                    self._flush(consumer, dlq, pending)
                if time.monotonic() >= self._next_sweep:
                    self._sweep(dlq)
                    self._next_sweep = time.monotonic() + self.sweep_s
            self._flush(consumer, dlq, pending)
        finally:
            dlq.close()
            consumer.close()
        return self.stats

    def _take(self, message: confluent_kafka.Message, dlq: DeadLetterWriter) -> None:
        self.stats.consumed += 1
        partition, offset = message.partition() or 0, message.offset() or 0
        if self.buffer.already_written(partition, offset):
            self.stats.skipped += 1
            self.metrics.handled(STAGE, "skipped")
            return
        try:
            value = message.value()
            if value is None:
                raise ContractError("label has no value (a tombstone?)")
            label = self._codec.decode(value, headers=message.headers())
        except Exception as exc:  # about this record alone: its bytes go to the dead-letter topic
            dlq.send_message(message, exc)
            self.stats.dead_letters += 1
            return
        try:
            self.buffer.add(partition, offset, label)
        except SinkBackpressureError:
            self._write(dlq)  # never buffer past max_rows; committed with the next flush
            self.buffer.add(partition, offset, label)

    def _write(self, dlq: DeadLetterWriter) -> None:
        # Dead letters are acknowledged before the files that cover their offsets exist: a
        # restart skips every offset up to a file's last, dead-lettered ones too.
        dlq.flush()
        before = self.buffer.labels_written
        self.stats.files += self.buffer.flush()
        self.stats.written = self.stats.rows = self.buffer.labels_written
        self.metrics.handled(STAGE, "out", self.buffer.labels_written - before)

    def _sweep(self, dlq: DeadLetterWriter) -> None:
        """Dead-letter the label records past the horizon with no prediction, then add them to the ledger."""
        root = self.buffer.root
        if not table_files(root):
            return  # no inference table here (yet, or a sink pointed elsewhere): nothing is judged missing
        now = datetime.now(UTC)
        predictions = read_table(root, columns=["request_id", "source_event_id"], labels=False)
        due = overdue(read_labels(root), read_expired(root), predictions, now, self.horizon_s)
        for row in due.to_pylist():
            label = Label(
                id=row["id"],
                id_type=row["id_type"],
                label=json.loads(row["label"]),
                label_time=row["label_time"],
                source=row["source"],
            )
            dlq.send(
                payload=self._codec.encode(label),
                error=f"no prediction with {row['id_type']} id {row['id']!r} in the inference table "
                f"{self.horizon_s:g} s after the label's time ({row['label_time'].isoformat()})",
                error_class="LabelHorizonError",
                source_topic=self.buffer.topic,
                key=label.key(),
                headers=[self._codec.header],
                partition=row["_partition"],
                offset=row["_offset"],
            )
        if due.num_rows:
            dlq.flush()  # dead-lettered before the ledger says so: a crash between sends them again
            write_expired(root, due, now)
            self.expired += due.num_rows
            log.info("dead-lettered %d labels with no prediction past the horizon", due.num_rows)

    def _flush(self, consumer: Consumer, dlq: DeadLetterWriter, pending: dict[int, confluent_kafka.Message]) -> None:
        if not pending:
            return
        self._write(dlq)
        consumer.commit(pending.values())
        pending.clear()

    def stop(self) -> None:
        """Flush, commit and return from ``run()``."""
        self._stop.set()
