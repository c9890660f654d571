"""The index sink: keeps a vector index in sync with the ``embeddings`` topic.

::

    embeddings ──batch consume──▶ decode / check ──▶ store.extend(columns)
                                      │ bad                   │ at flush_max_records, flush_interval_ms,
                                      │                       │ or flush_idle_ms without a record and
                                      │                       │ none known to be on its way (drained)
                                      ▼                       ▼
                                 dead-letters ◀── refused ── store.flush() ──▶ commit offsets
                                                             (writer thread)

Writes are double-buffered: while one batch is written by the writer thread, the
next is consumed and decoded. One write is out at a time and a batch goes to the
store only once the one before it is written, so writes land in offset order (a
later update of an id always wins); a batch's dead letters and offsets go out once
it is written (while the next one is), in order, so no offset is committed past a
record not yet written.

A record is an :class:`~inferstream.schemas.records.Embedding` (upsert, keyed by its
id) or a null value (a tombstone: delete the document named by the key). A consumed
batch is decoded into columns (:mod:`inferstream.streams.index_decode`: ids, one
float32 block of vectors, texts, ...), with no record object built for a valid one. What
cannot be indexed goes to the dead-letter topic with its original bytes and the
reason: an invalid record (missing id, NaN in the vector, malformed JSON), a
vector of the wrong dims or of another model than the index holds, a tombstone
without a key, and what the store itself refuses (a mapping conflict). Input
count = written + dead letters, always (``IndexStats.reconciles``).

Offsets are committed only after the store acknowledged the flush and the dead
letters are on the broker. While the store is unreachable or overloaded
(``SinkBackpressureError``) consumption is paused and the flush retried with
doubling backoff; nothing is committed, so nothing is lost, and re-sent
documents overwrite themselves (the document id is the embedding id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

import confluent_kafka
import numpy as np

from inferstream.config import Settings
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.connectors.stores import open_store
from inferstream.connectors.vectors import IndexMeta, Ops, Rejection, VectorStore
from inferstream.errors import CommitError, SinkBackpressureError
from inferstream.metrics import Metrics
from inferstream.serving.index_meta import index_meta
from inferstream.streams.index_decode import Decoded, IndexDecoder
from inferstream.streams.metrics import IndexMetrics

log = logging.getLogger(__name__)

STAGE = "index"
#: Records decoded between two chances for the writer thread to take the GIL.
YIELD_EVERY = 64
#: While a write is out, how often the loop looks whether it is done (seconds).
WRITE_POLL_S = 0.001
#: Bytes one fetch may bring from a partition: a flush batch of embeddings, not 1 MB.
FETCH_BYTES = 8 * 1024 * 1024


@dataclass
class IndexStats:
    """What the sink did; ``records == upserts + deletes + dead_letters`` once flushed."""

    records: int = 0
    upserts: int = 0
    deletes: int = 0
    dead_letters: int = 0
    flushes: int = 0
    retries: int = 0
    commit_failures: int = 0
    #: ``time.perf_counter()`` when the first record came, and when the last write was committed.
    first_record_at: float | None = None
    last_write_at: float | None = None

    @property
    def reconciles(self) -> bool:
        """Every consumed record was written or dead-lettered."""
        return self.records == self.upserts + self.deletes + self.dead_letters


@dataclass
class _Batch:
    """Records consumed since the last flush: every message (to commit) and the ops decoded from them."""

    messages: list[confluent_kafka.Message] = field(default_factory=list)
    decoded: list[Decoded] = field(default_factory=list)  # one a consumed batch, rows in offset order
    started: float = 0.0  # when its first record came (monotonic)
    #: Once handed to the store: the ops as one set of columns (positions are rows) and each row's record.
    ops: Ops | None = None
    op_messages: list[confluent_kafka.Message] = field(default_factory=list)

    def seal(self) -> Ops:
        """The decoded ops as one set of columns, in offset order."""
        self.ops = Ops.concat([d.ops for d in self.decoded])
        self.op_messages = [m for d in self.decoded for m in d.messages]
        self.decoded = []
        return self.ops


class IndexSink:
    """Consumes embeddings and writes them to a vector store (Elasticsearch or embedded).

    >>> sink = IndexSink(settings)            # doctest: +SKIP
    >>> sink.run()                            # until stop(), SIGINT or SIGTERM
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: VectorStore | None = None,
        meta: IndexMeta | None = None,
        metrics: Metrics | None = None,
        group_id: str | None = None,
        from_beginning: bool = True,
    ) -> None:
        self.settings = settings
        self.config = settings.elasticsearch
        self.meta = meta or index_meta(settings)
        self.store = store or open_store(settings)
        self.metrics = metrics or Metrics(namespace=settings.metrics.namespace)
        index_metrics = self.metrics.part(IndexMetrics)
        self._indexed = index_metrics.indexed.labels(self.config.index)
        self._deleted = index_metrics.deleted.labels(self.config.index)
        self._freshness = index_metrics.freshness.labels(self.config.index)
        self.topic = settings.topics.platform_topics()["embeddings"]
        self.group_id = group_id or self.config.group_id or settings.topics.group(f"index-{self.config.index}")
        self.from_beginning = from_beginning
        self.stats = IndexStats()
        #: Set once the index is set up and the consumer subscribed.
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._decoder = IndexDecoder(self.meta, self.config.index)
        self._consumer: Consumer | None = None
        self._dlq: DeadLetterWriter | None = None
        # Double-buffered: one batch fills (consumed, decoded) while the one before is written
        # by a thread of its own; a batch is handed to the store only once the write before it
        # is done, so writes land in offset order and a later update of an id always wins.
        self._pending = _Batch()
        self._writing: _Batch | None = None
        self._write: Future[list[Rejection]] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._backoff_logged = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """End the loop after the current batch (thread- and signal-safe); unflushed records are redelivered."""
        self._stop.set()
        if self._consumer is not None:
            self._consumer.stop()

    def run(self, *, idle_timeout: float | None = None, stop_on_signals: bool = False) -> IndexStats:
        """Index until ``stop()`` (or ``idle_timeout`` seconds without a record); returns the counts."""
        if not self._retrying(lambda: self.store.setup(self.meta), "setting up the index"):
            return self.stats
        self._consumer = consumer = Consumer(
            self.settings,
            [self.topic],
            group_id=self.group_id,
            from_beginning=self.from_beginning,
            metrics=self.metrics,
            stage=STAGE,
            overrides=self._fetch_overrides(),
        )
        if stop_on_signals:
            consumer.stop_on_signals()
        if self._stop.is_set():
            consumer.stop()
        self._dlq = DeadLetterWriter(self.settings, stage=STAGE, metrics=self.metrics)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="index-writer")
        log.info("indexing %s into %s (%s, group %s)", self.topic, self.store.location, self.meta.ref, self.group_id)
        self.ready.set()
        interval = self.config.flush_interval_ms / 1000
        idle = self.config.flush_idle_ms / 1000
        idle_since = last_record = time.monotonic()
        try:
            while not consumer.stopping:
                if self._write is not None and self._write.done() and not self._finish_write():
                    break  # asked to stop while the store was down
                pending = self._pending
                # A batch holds flush_max_records records at most: the store writes them as one.
                limit = min(self.config.flush_max_records, self.store.max_buffered)
                room = max(limit - len(pending.messages), 1)
                # Wait for the next record no longer than until the pending ones are due, or than
                # flush_idle_ms since the last one: a topic that gives nothing for that long is
                # drained for now. While a write is out and half a batch waits (it goes out as soon
                # as the store is free, see below), look again every WRITE_POLL_S; polling more
                # often than that otherwise would only take the GIL from the writer thread. When
                # nothing else waits, take what is there and otherwise wait for the write.
                if pending.messages:
                    wait = min(pending.started + interval, last_record + idle) - time.monotonic()
                else:
                    wait = 0.0 if self._write is not None else 0.5
                if self._write is not None and 2 * len(pending.messages) >= limit:
                    wait = min(wait, WRITE_POLL_S)
                batch = consumer.consume(room, max(wait, 0.0))
                if not batch and not pending.messages and self._write is not None:
                    futures_wait([self._write], timeout=idle)
                    continue
                now = time.monotonic()
                if batch:
                    idle_since = last_record = now
                    if not pending.messages:
                        pending.started = now
                    self._add_batch(batch)
                if pending.messages and (
                    len(pending.messages) >= limit
                    or now - pending.started >= interval
                    # The store has nothing to do and half a batch waits: write it now and gather
                    # the rest while it is written, rather than keep the store idle until the
                    # second half has come and been decoded (the start of a catch-up).
                    or (self._write is None and 2 * len(pending.messages) >= limit)
                    # Drained, not a fetch on its way.
                    or (not batch and now - last_record >= idle and not consumer.behind())
                ):
                    self._flush()
                if not consumer.assignment():
                    idle_since = now  # idle counts from the first assignment (joining the group takes a while)
                elif idle_timeout is not None and not self.in_flight and now - idle_since >= idle_timeout:
                    break
            self._settle_last_write()
        finally:
            self.close()
        return self.stats

    def _fetch_overrides(self) -> dict[str, int]:
        # An embedding is 2-6 KB, so librdkafka's default 1 MB a partition takes several fetch
        # round trips to gather one flush batch; let one fetch bring a batch (unless set).
        if "max.partition.fetch.bytes" in self.settings.kafka.consumer_config(self.group_id):
            return {}
        return {"max.partition.fetch.bytes": FETCH_BYTES}

    def close(self) -> None:
        """Leave the group (committing only what was flushed), flush dead letters, close the store."""
        if self._writer is not None:
            # A write still out finishes (the store is not closed under it); committed only if it
            # was finished above: otherwise its records come again.
            self._writer.shutdown(wait=True)
            self._writer = None
            self._write = self._writing = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None
        self.store.close()

    # -- records --------------------------------------------------------------------------

    def _add_batch(self, batch: list[confluent_kafka.Message]) -> None:
        if self.stats.first_record_at is None:
            self.stats.first_record_at = time.perf_counter()
        self.stats.records += len(batch)
        pending = self._pending
        pending.messages.extend(batch)
        # While a write is out, let the writer thread have the GIL now and then: the store's
        # client hops between Python threads (an event loop, callbacks) during a write, and
        # each hop would otherwise wait out a whole switch interval (5 ms) behind this loop.
        decoded = self._decoder.decode(batch, yield_every=YIELD_EVERY if self._write is not None else 0)
        for refused in decoded.refused:
            self._dead_letter(refused.message, refused.reason, refused.error_class)
        if decoded.messages:
            pending.decoded.append(decoded)

    @property
    def in_flight(self) -> int:
        """Records consumed and not yet written (or dead-lettered) and committed."""
        writing = self._writing
        return len(self._pending.messages) + (len(writing.messages) if writing is not None else 0)

    def _dead_letter(self, message: confluent_kafka.Message, reason: str, error_class: str) -> None:
        assert self._dlq is not None
        self._dlq.send(
            payload=message.value(),
            error=reason,
            error_class=error_class,
            source_topic=message.topic() or self.topic,
            key=message.key(),
            headers=message.headers(),
            partition=message.partition(),
            offset=message.offset(),
        )
        self.stats.dead_letters += 1

    # -- flush and commit -----------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the pending batch to the writer thread, once the write before it is done."""
        assert self._writer is not None
        ops = self._pending.seal()  # while the write before it is still out
        written = None
        if self._write is not None:
            written = self._take_write()
            if written is None:
                return  # stopping: nothing more is written
        batch, self._pending = self._pending, _Batch()
        if len(ops):
            self.store.extend(ops)
        self._writing = batch
        self._write = self._writer.submit(self.store.flush)
        if written is not None:
            # Dead letters and the commit of the batch before, while this one is written: the
            # store is not kept waiting for them, and they still go out in order, each only
            # after its own batch is written.
            self._complete(*written)

    def _finish_write(self) -> bool:
        """Wait for the write out, retrying it while the store pushes back; then dead letters and commit.

        False when asked to stop before the store took it (nothing of it is committed).
        """
        written = self._take_write()
        if written is None:
            return False
        self._complete(*written)
        return True

    def _take_write(self) -> tuple[_Batch, list[Rejection]] | None:
        """The batch out and what the store refused of it, once written (retrying while the store pushes back).

        None when asked to stop before the store took it (nothing of it is committed).
        """
        write, batch = self._write, self._writing
        assert write is not None
        assert batch is not None
        refused: list[Rejection] = []
        try:
            refused = write.result()
        except SinkBackpressureError as exc:

            def flush() -> None:
                refused.extend(self.store.flush())  # what the store kept buffered, again

            if not self._retrying(flush, f"writing {self.store.pending} records", failed=exc):
                self._write = self._writing = None
                return None
        self._write = self._writing = None
        return batch, refused

    def _settle_last_write(self) -> None:
        # Leaving: a write that went through is committed; one the store pushed back is not
        # retried (its records come again to whoever reads the partitions next).
        write, batch = self._write, self._writing
        self._write = self._writing = None
        if write is None or batch is None:
            return
        try:
            refused = write.result()
        except SinkBackpressureError:
            return
        self._complete(batch, refused)

    def _complete(self, batch: _Batch, refused: list[Rejection]) -> None:
        assert self._consumer is not None
        assert self._dlq is not None
        started = time.monotonic()
        rejected = {r.position: r for r in refused}
        written_at = time.time()
        ops = batch.ops
        upserts = deletes = 0
        freshness = np.zeros(0)
        if ops is not None and len(ops):
            for position, rejection in rejected.items():
                message = batch.op_messages[position]
                self._dead_letter(message, rejection.reason, rejection.error_class)
            taken = np.ones(len(ops), dtype=bool)
            taken[list(rejected)] = False
            gone = np.asarray(ops.deletes, dtype=bool)
            deletes = int((gone & taken).sum())
            times = np.fromiter((t.timestamp() for t in ops.event_times), dtype=np.float64, count=len(ops))
            freshness = np.maximum(written_at - times[taken & ~gone], 0.0)
            upserts = len(freshness)
        self._dlq.flush()
        written = upserts + deletes
        if written:
            self.metrics.records_out.labels(self.config.index, STAGE).inc(written)
        try:
            # Not waiting for the broker: a commit that fails is repeated by the next one, and
            # closing commits synchronously; either way only offsets of written records go out.
            self._consumer.commit(batch.messages, asynchronous=True)
        except CommitError as exc:
            # The partitions moved on (a long outage outlived max.poll.interval.ms): the new owner
            # re-reads these records and writes them again, which overwrites, never duplicates.
            self.stats.commit_failures += 1
            log.warning("%s", exc)
        # Counted once written and committed: stats.reconciles means nothing is in flight.
        self.stats.upserts += upserts
        self.stats.deletes += deletes
        self.metrics.handled(STAGE, "out", upserts + deletes)
        self._indexed.inc(upserts)
        self._deleted.inc(deletes)
        self._freshness.observe_many(freshness.tolist())
        self.stats.flushes += 1
        self.stats.last_write_at = time.perf_counter()
        self.metrics.stage_seconds.labels(STAGE, "flush").observe(time.monotonic() - started)

    def _retrying(self, action: Callable[[], None], doing: str, *, failed: SinkBackpressureError | None = None) -> bool:
        """Run ``action`` until it stops raising backpressure; False if asked to stop meanwhile.

        ``failed``: the first try already happened elsewhere and pushed back with this.
        """
        delay = self.config.retry_backoff_min_ms / 1000
        ceiling = self.config.retry_backoff_max_ms / 1000
        paused: list[confluent_kafka.TopicPartition] = []
        try:
            while True:
                try:
                    if failed is not None:
                        first, failed = failed, None
                        raise first
                    action()
                    return True
                except SinkBackpressureError as exc:
                    self.stats.retries += 1
                    now = time.monotonic()
                    if now - self._backoff_logged >= 10:
                        log.warning("%s while %s: %s", self.store.location, doing, exc)
                        self._backoff_logged = now
                    wait = max(exc.retry_after, delay)
                    delay = min(delay * 2, ceiling)
                    paused = self._pause()
                    if self._stop.wait(wait):
                        return False
        finally:
            if paused and self._consumer is not None:
                self._consumer.raw.resume(paused)

    def _pause(self) -> list[confluent_kafka.TopicPartition]:
        # Paused partitions fetch nothing, so the sink holds no more than it already buffered.
        if self._consumer is None:
            return []
        raw = self._consumer.raw
        assignment = list(raw.assignment())
        if assignment:
            raw.pause(assignment)
        return assignment
