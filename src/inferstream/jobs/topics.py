"""Export (a bounded range of a topic → Parquet) and replay (Parquet → a topic, rate-limited).

Export reads the end offsets of every partition when the job starts, then reads
each partition in a DoFn of its own (one element per partition: a runner spreads
them over workers) from its start offset, or the first offset at ``since``, up to
that end, with :func:`inferstream.connectors.kafka.reader.read_bounded` — a plain
confluent-kafka read, no consumer group and no commits. Beam's Java Kafka
transform would need a jar download and a portable runner. Rows keep the record
exactly: key, value and header bytes, timestamp, partition and offset.

Replay produces the rows of such files to a topic with their keys, values,
headers and timestamps (and partitions, with ``keep_partitions``), in file
order, at most ``rate`` records a second per worker, and fails the job if the
broker does not acknowledge every record. Each file (its index in the job's list
of files) is a unit sent in Kafka transactions of up to 10,000 records or 5 s,
each committed together with the count of the file's records now in the topic
(:class:`~inferstream.connectors.kafka.transactions.ResumableTransactions`, named
``inferstream-replay-<run id>-<file index>``; the run id is drawn when the job
starts and handed to every task). A runner that retries a task (Dask, when a
worker dies) runs the file again under the same transactional id, which fences the
first attempt and aborts the transaction it left open; the retry goes on after
the last committed record. A task that committed its last transaction and died
before the runner recorded it done is run again too: it finds the whole file
counted and sends nothing. So a ``read_committed`` reader — the platform's
:class:`~inferstream.connectors.kafka.consumer.Consumer` (the serving workers
reading replayed requests among them) and every other reader of librdkafka's
default — sees each record of the files once; a ``read_uncommitted`` reader (aiokafka's
default, the ingest processor's) also sees the aborted transaction's records (up to
one transaction's worth per death).

Why several transactions per file, not one: an open transaction holds every
``read_committed`` reader of its partitions at its first record until it ends, and
the coordinator aborts one that outlives ``transaction.timeout.ms`` (30 s here;
the broker allows 15 min at most), which a paced or large file would (a paced
file commits before a wait that would keep its transaction open past 5 s). The
30 s, plus the broker's check interval
(``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s by default),
is also how long readers wait on a dead attempt's transaction that no retry fences
(the job failed for good). Transactions hold no records in memory: the
producer frees each once acknowledged, as without them. Each file costs one
``init_transactions()`` (a round trip to the transaction coordinator) and each
transaction one commit. The counts (consumer groups of those names) are deleted
when the job succeeds (those of a failed job expire with the broker's
``offsets.retention.minutes``); a job that fails leaves what its transactions
committed in the topic, and a new run (a new run id) sends every file from its
start again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import apache_beam as beam
import confluent_kafka
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics.metric import Metrics

from inferstream.config import Settings
from inferstream.connectors.kafka._util import partition_bounds
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.reader import read_bounded, warn_gap
from inferstream.connectors.kafka.transactions import ResumableTransactions, forget
from inferstream.errors import ConfigError, TopicError
from inferstream.jobs._pipeline import (
    NAMESPACE,
    JobResult,
    check_inputs,
    file_checksum,
    join_parts,
    make_pipeline,
    run,
    write_parquet,
)

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0
_CHUNK_ROWS = 10_000
# Replay: the longest a transaction stays open (read_committed readers of its partitions wait for it).
_COMMIT_EVERY_S = 5.0
# read_bounded reads every partition past its start: a start beyond any end leaves a partition out.
_BEYOND = 1 << 62

#: Columns of an exported topic.
RECORD_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
    ]
)


def log_bounds(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Every partition's (log start, end) offsets now (the low and high watermarks)."""
    conf = {**settings.kafka.base_config(), "group.id": "inferstream-export", "enable.auto.commit": False}
    consumer = confluent_kafka.Consumer(conf)
    try:
        bounds = partition_bounds(consumer, topic, _TIMEOUT_S)
        if bounds is None:
            raise TopicError(f"topic {topic} does not exist: check the name (and the topic prefix in the settings)")
        return bounds
    finally:
        consumer.close()


class ReadPartition(beam.DoFn):
    """A partition number → Arrow tables of its records from the start to the end read at job start.

    Records the broker deletes between the job's start and their read (retention
    passing old timestamps, ``delete-records``) are counted as ``rows_expired``.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        ends: dict[int, int],
        since: datetime | None,
        start_offsets: dict[int, int],
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.ends = ends
        self.since = since
        self.start_offsets = start_offsets
        self.read = Metrics.counter(NAMESPACE, "rows_in")
        self.expired = Metrics.counter(NAMESPACE, "rows_expired")

    def process(self, partition: int) -> Iterator[pa.Table]:
        """Every record of one partition in range, in chunks."""
        end = self.ends[partition]
        starts = {p: _BEYOND for p in self.ends if p != partition}
        if partition in self.start_offsets:
            starts[partition] = self.start_offsets[partition]
        rows: list[confluent_kafka.Message] = []
        for message in read_bounded(
            self.settings, self.topic, since=self.since, start_offsets=starts, on_gap=self._gap
        ):
            if (message.offset() or 0) >= end:  # written after the job started
                break
            rows.append(message)
            if len(rows) >= _CHUNK_ROWS:
                yield self._table(rows)
                rows = []
            if (message.offset() or 0) + 1 >= end:
                break
        if rows:
            yield self._table(rows)

    def _gap(self, partition: int, first: int, low: int) -> None:
        # Only what the job meant to read counts: records past the end read at its start do not.
        until = min(low, self.ends[partition])
        if until > first:
            warn_gap(self.topic)(partition, first, until)
            self.expired.inc(until - first)

    def _table(self, messages: list[confluent_kafka.Message]) -> pa.Table:
        self.read.inc(len(messages))
        return pa.Table.from_arrays(
            [
                pa.array([m.topic() for m in messages], pa.string()),
                pa.array([m.partition() for m in messages], pa.int32()),
                pa.array([m.offset() for m in messages], pa.int64()),
                pa.array([m.timestamp()[1] for m in messages], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                pa.array([m.key() for m in messages], pa.binary()),
                pa.array([m.value() for m in messages], pa.binary()),
                pa.array(
                    [[{"key": k, "value": v} for k, v in (m.headers() or [])] for m in messages],
                    RECORD_SCHEMA.field("headers").type,
                ),
            ],
            schema=RECORD_SCHEMA,
        )


def export_topic(
    settings: Settings,
    topic: str,
    out: Path,
    *,
    since: datetime | None = None,
    start_offsets: dict[int, int] | None = None,
    flags: Sequence[str] = (),
) -> JobResult:
    """Write ``topic`` (the platform name, e.g. ``predictions``, or a full name) from a start to its end now."""
    name = settings.topics.platform_topics().get(topic, topic)
    started = time.perf_counter()
    bounds = log_bounds(settings, name)
    ends = {p: high for p, (_low, high) in bounds.items()}
    unknown = set(start_offsets or {}) - set(ends)
    if unknown:
        raise ConfigError(f"topic {name} has partitions {sorted(ends)}, not {sorted(unknown)}")
    # Each partition from its log start now (or the offset asked for): what the broker deletes
    # before the job reaches it is counted, not skipped in silence.
    starts = {p: low for p, (low, _high) in bounds.items()} | dict(start_offsets or {})
    pipeline = make_pipeline(flags)
    records = (
        pipeline
        | "partitions" >> beam.Create(sorted(ends))
        | "read" >> beam.ParDo(ReadPartition(settings, name, ends, since, starts))
    )
    write_parquet(records, out, RECORD_SCHEMA, "write", keys=("partition", "offset"))
    counters = run(pipeline)
    join_parts(out, RECORD_SCHEMA)
    count = counters.get("rows_in", 0)
    return JobResult(
        "export",
        rows_in=count,
        rows_out=count,
        outputs=[out],
        elapsed_s=time.perf_counter() - started,
        expired=counters.get("rows_expired", 0),
        checksum=file_checksum(out),
    )


def unit_name(run_id: str, index: int) -> str:
    """The transactional id (and progress group) of replay run ``run_id``'s file number ``index``: every attempt's."""
    return f"inferstream-replay-{run_id}-{index}"


class ProduceRows(beam.DoFn):
    """(index, exported file) → its records produced to a topic in transactions, paced; a retry goes on after them.

    Each transaction holds up to ``chunk_rows`` records or ``commit_every_s`` seconds of
    them, and commits them with the count of the file's records now in the topic
    (:class:`~inferstream.connectors.kafka.transactions.ResumableTransactions`, named by
    :func:`unit_name`). Yields the file's record count.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        rate: float | None,
        keep_partitions: bool,
        run_id: str,
        *,
        chunk_rows: int = _CHUNK_ROWS,
        commit_every_s: float = _COMMIT_EVERY_S,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.rate = rate
        self.keep_partitions = keep_partitions
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.commit_every_s = commit_every_s
        self.sent = Metrics.counter(NAMESPACE, "rows_out")
        self.read = Metrics.counter(NAMESPACE, "rows_in")

    def process(self, element: tuple[int, str]) -> Iterator[int]:
        """Produce the rows of one file not committed yet; raises if any record is not acknowledged."""
        index, path = element
        file = pq.ParquetFile(path)
        missing = {"key", "value", "timestamp"} - set(file.schema_arrow.names)
        if missing:
            raise ConfigError(
                f"{path} lacks column(s) {sorted(missing)}: replay reads the files of `inferstream job export`"
            )
        total = int(file.metadata.num_rows)
        unit = ResumableTransactions(self.settings, unit_name(self.run_id, index), self.topic, stage="replay")
        try:
            done = unit.start()
            if done > total:
                raise ConfigError(
                    f"{path}: {done} records of file {index} of replay run {self.run_id} are in {self.topic}, "
                    f"but the file has {total}: a run resumed with other files"
                )
            if done:
                log.info("%s: %d of its %d records were committed by an earlier attempt; going on", path, done, total)
            self._produce(unit, file, done)
        finally:
            unit.close()
        # The file's records are all in the topic now, whichever attempt committed them.
        self.read.inc(total)
        self.sent.inc(total)
        yield total

    def _produce(self, unit: ResumableTransactions, file: pq.ParquetFile, done: int) -> None:
        producer = unit.producer
        began = time.monotonic()
        sent = 0
        opened = 0.0  # when the open transaction began (0: none is open)
        in_transaction = 0
        first = 0  # the file's row number of the batch's first row
        for batch in file.iter_batches(batch_size=_CHUNK_ROWS):
            if first + batch.num_rows <= done:
                first += batch.num_rows
                continue
            if first < done:  # resume inside this batch
                batch = batch.slice(done - first)
                first = done
            columns = batch.to_pydict()
            count = batch.num_rows
            stamps = pa.array(columns["timestamp"], pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
            headers = columns.get("headers") or [None] * count
            partitions = columns.get("partition") if self.keep_partitions else None
            for i in range(count):
                if self.rate:
                    # Pace against the attempt's start: bursts after a stall stay within the average rate.
                    ahead = sent / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        if opened and time.monotonic() + ahead - opened >= self.commit_every_s:
                            # A slow rate never keeps a transaction open past its time.
                            self._commit(unit, first + i)
                            opened, in_transaction = 0.0, 0
                        producer.poll(ahead)
                if not opened:
                    unit.begin()
                    opened = time.monotonic()
                producer.produce(
                    self.topic,
                    columns["value"][i],
                    columns["key"][i],
                    [(h["key"], h["value"]) for h in headers[i] or ()],
                    partition=partitions[i] if partitions else None,
                    timestamp_ms=stamps[i],
                )
                sent += 1
                in_transaction += 1
                if in_transaction >= self.chunk_rows or time.monotonic() - opened >= self.commit_every_s:
                    self._commit(unit, first + i + 1)
                    opened, in_transaction = 0.0, 0
            first += count
        if opened:
            self._commit(unit, first)

    def _commit(self, unit: ResumableTransactions, count: int) -> None:
        """Commit the open transaction: the file's first ``count`` records are in the topic."""
        unit.commit(count)


def replay(
    settings: Settings,
    inputs: Sequence[Path],
    topic: str,
    *,
    rate: float | None = None,
    keep_partitions: bool = False,
    flags: Sequence[str] = (),
) -> JobResult:
    """Produce the records of exported files to ``topic`` (platform name or full name), each record once."""
    if rate is not None and rate <= 0:
        raise ConfigError(f"rate must be above 0 records a second, not {rate}")
    paths = check_inputs(inputs)
    name = settings.topics.platform_topics().get(topic, topic)
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:12]
    pipeline = make_pipeline(flags)
    _ = (
        pipeline
        | "files" >> beam.Create(list(enumerate(paths)))
        | "produce" >> beam.ParDo(ProduceRows(settings, name, rate, keep_partitions, run_id))
    )
    warnings = _retention_warnings(settings, name, paths)
    for warning in warnings:
        log.warning("%s", warning)
    counters = run(pipeline)
    forget(settings, [unit_name(run_id, i) for i in range(len(paths))])
    return JobResult(
        "replay",
        rows_in=counters.get("rows_in", 0),
        rows_out=counters.get("rows_out", 0),
        outputs=[Path(name)],
        elapsed_s=time.perf_counter() - started,
        warnings=warnings,
    )


def _retention_warnings(settings: Settings, topic: str, paths: Sequence[str]) -> list[str]:
    """Replayed records keep their timestamps: those older than the topic's retention are deleted soon after."""
    retention = TopicAdmin(settings).config_value(topic, "retention.ms")
    if retention is None or int(retention) < 0:
        return []
    cutoff_ms = time.time() * 1000 - int(retention)
    old = 0
    for path in paths:
        stamps = pq.read_table(path, columns=["timestamp"]).column("timestamp").cast(pa.int64())
        old += pc.sum(pc.less(stamps, cutoff_ms)).as_py() or 0
    if not old:
        return []
    return [
        f"{old} replayed records are older than the retention of {topic} ({int(retention) / 86_400_000:g} days): "
        "the broker deletes them at its next retention check (within minutes). Replay into a topic made with "
        "`inferstream topics create NAME --config retention.ms=-1` (or a longer retention) to keep them."
    ]
