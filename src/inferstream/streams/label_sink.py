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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.metrics import Metrics
from inferstream.monitoring.label_expiry import overdue, read_expired, write_expired
from inferstream.monitoring.label_table import read_labels, remove_temporary_labels, write_labels, written_label_offsets
from inferstream.monitoring.table import read_table, table_dir, table_files
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Label
from inferstream.streams.file_sink import FileSink, PartitionBuffer

log = logging.getLogger("inferstream.labels")

STAGE = "labels"


class LabelBuffer(PartitionBuffer[Label]):
    """Buffers labels per partition and writes them to the label table on ``flush()``."""

    def __init__(self, settings: Settings, root: Path | None = None, *, max_rows: int, max_delay_s: float) -> None:
        topic = settings.topics.platform_topics()["labels"]
        super().__init__(root or table_dir(settings), topic, max_rows=max_rows, max_delay_s=max_delay_s)
        #: labels written to files since start
        self.labels_written = 0

    def setup(self) -> None:
        """Drop half-written files, learn which offsets the files hold already."""
        removed = remove_temporary_labels(self.root)
        if removed:
            log.warning("removed %d half-written label files left by a crash", removed)
        self._written = written_label_offsets(self.root, self.topic)

    def add(self, partition: int, offset: int, label: Label) -> None:
        """Buffer one label; SinkBackpressureError when the buffer is full."""
        self._hold(partition, offset, (label,), "label")

    def flush(self) -> list[Path]:
        """Write every buffered partition's batch as a renamed-into-place file; their paths."""
        written = []
        for partition, rows in self._take():
            path = write_labels(self.root, self.topic, partition, rows)
            if path is not None:
                written.append(path)
            self._wrote(partition, rows)
            self.labels_written += len(rows)
        return written


class LabelTableSink(FileSink[LabelBuffer]):
    """Runs the label buffer on the labels topic until ``stop()`` (one consumer group, N copies)."""

    stage: ClassVar[str] = STAGE
    record: ClassVar[str] = "label"

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
        buffer = LabelBuffer(settings, root, max_rows=max_rows, max_delay_s=max_delay_s)
        super().__init__(settings, buffer, metrics, group_id or settings.topics.group("label-table"))
        self.horizon_s = horizon_s or settings.monitoring.label_horizon_s
        self.sweep_s = sweep_s or settings.monitoring.label_sweep_s
        #: label records dead-lettered past the horizon since start
        self.expired = 0
        self._next_sweep = 0.0
        self._codec = codec_for(Label)

    def decode(self, value: bytes, headers: Any) -> Label:
        """The label."""
        return self._codec.decode(value, headers=headers)

    def add(self, partition: int, offset: int, decoded: Any, message: confluent_kafka.Message) -> None:
        """Buffer the label."""
        self.buffer.add(partition, offset, decoded)

    def write(self) -> None:
        """Write the buffered labels as files and count them."""
        before = self.buffer.labels_written
        self.stats.files += self.buffer.flush()
        self.stats.written = self.stats.rows = self.buffer.labels_written
        self.metrics.handled(STAGE, "out", self.buffer.labels_written - before)

    def tick(self, dlq: DeadLetterWriter) -> None:
        """Sweep for labels past the horizon every ``sweep_s``."""
        if time.monotonic() >= self._next_sweep:
            self._sweep(dlq)
            self._next_sweep = time.monotonic() + self.sweep_s

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
