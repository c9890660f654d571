"""The index sink: keeps a vector index in sync with the ``embeddings`` topic.

::

    embeddings ──batch consume──▶ decode / check ──▶ store.add(Upsert | Delete)
                                      │ bad                   │ at flush_max_records, flush_interval_ms,
                                      │                       │ or flush_idle_ms without a record and
                                      │                       │ none known to be on its way (drained)
                                      ▼                       ▼
                                 dead-letters ◀── refused ── store.flush() ──▶ commit offsets

A record is an :class:`~inferstream.schemas.records.Embedding` (upsert, keyed by its
id) or a null value (a tombstone: delete the document named by the key). What
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
from dataclasses import dataclass
from datetime import UTC, datetime

import confluent_kafka
import numpy as np

from inferstream.config import Settings
from inferstream.connectors.kafka._util import headers_of
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.connectors.stores import open_store
from inferstream.connectors.vectors import (
    Delete,
    Document,
    IndexMeta,
    Op,
    Rejection,
    Upsert,
    VectorStore,
)
from inferstream.errors import CommitError, ContractError, SinkBackpressureError
from inferstream.metrics import Metrics
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Embedding
from inferstream.serving.index_meta import index_meta
from inferstream.streams.metrics import IndexMetrics

log = logging.getLogger(__name__)

STAGE = "index"


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

    @property
    def reconciles(self) -> bool:
        """Every consumed record was written or dead-lettered."""
        return self.records == self.upserts + self.deletes + self.dead_letters


class _RejectedError(Exception):
    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.error_class = error_class


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
        self._codec = codec_for(Embedding)
        self._consumer: Consumer | None = None
        self._dlq: DeadLetterWriter | None = None
        # Messages consumed since the last commit, and the message behind each buffered op.
        self._uncommitted: list[confluent_kafka.Message] = []
        self._op_messages: list[confluent_kafka.Message] = []
        self._ops: list[Op] = []
        self._first_uncommitted = 0.0
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
        )
        if stop_on_signals:
            consumer.stop_on_signals()
        if self._stop.is_set():
            consumer.stop()
        self._dlq = DeadLetterWriter(self.settings, stage=STAGE, metrics=self.metrics)
        log.info("indexing %s into %s (%s, group %s)", self.topic, self.store.location, self.meta.ref, self.group_id)
        self.ready.set()
        interval = self.config.flush_interval_ms / 1000
        idle = self.config.flush_idle_ms / 1000
        idle_since = time.monotonic()
        try:
            while not consumer.stopping:
                room = max(min(self.config.flush_max_records, self.store.max_buffered - self.store.pending), 1)
                # Wait for the next record no longer than until the pending ones are due, or than
                # flush_idle_ms: a topic that gives nothing for that long is drained for now.
                wait = min(self._first_uncommitted + interval - time.monotonic(), idle) if self._uncommitted else 0.5
                batch = consumer.consume(room, max(wait, 0.005))
                now = time.monotonic()
                if batch:
                    idle_since = now
                    if not self._uncommitted:
                        self._first_uncommitted = now
                    for message in batch:
                        self._add(message)
                if self._uncommitted and (
                    (not batch and not consumer.behind())  # drained, not a fetch on its way
                    or self.store.pending >= self.config.flush_max_records
                    or self.store.pending >= self.store.max_buffered
                    or now - self._first_uncommitted >= interval
                ):
                    self._flush()
                if not consumer.assignment():
                    idle_since = now  # idle counts from the first assignment (joining the group takes a while)
                elif idle_timeout is not None and not self._uncommitted and now - idle_since >= idle_timeout:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Leave the group (committing only what was flushed), flush dead letters, close the store."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None
        self.store.close()

    # -- records --------------------------------------------------------------------------

    def _add(self, message: confluent_kafka.Message) -> None:
        self.stats.records += 1
        self._uncommitted.append(message)
        try:
            op = self._op_of(message)
        except _RejectedError as exc:
            self._dead_letter(message, str(exc), exc.error_class)
            return
        except Exception as exc:  # whatever else this record's bytes cause: about it alone
            self._dead_letter(message, str(exc) or type(exc).__name__, type(exc).__name__)
            return
        self.store.add(op)
        self._ops.append(op)
        self._op_messages.append(message)

    def _op_of(self, message: confluent_kafka.Message) -> Op:
        value = message.value()
        if value is None:
            key = message.key()
            document_id: str | None
            if isinstance(key, bytes):
                try:
                    document_id = key.decode("utf-8")
                except UnicodeDecodeError:  # replacing bytes would delete another document
                    raise _RejectedError("tombstone whose key is not UTF-8: no document id", "InvalidId") from None
            else:
                document_id = key
            if not document_id or not document_id.strip():
                raise _RejectedError("tombstone without a key: no document id to delete", "MissingId")
            return Delete(document_id)
        try:
            embedding = self._codec.decode(value, headers=headers_of(message))
        except ContractError as exc:
            raise _RejectedError(str(exc), type(exc).__name__) from None
        meta = self.meta
        if (embedding.model, embedding.version) != (meta.model, meta.version):
            raise _RejectedError(
                f"embedding of {embedding.model}:{embedding.version}, but index {self.config.index} holds "
                f"{meta.ref} vectors (queries are embedded with {meta.ref}); index it into another index",
                "ModelMismatch",
            )
        if embedding.dims != meta.dims:
            raise _RejectedError(
                f"vector has {embedding.dims} dims; index {self.config.index} holds "
                f"{meta.dims}-dim vectors of {meta.ref}",
                "DimensionMismatch",
            )
        if meta.similarity == "cosine" and not np.any(embedding.vector):
            raise _RejectedError("cosine similarity cannot take a zero-magnitude vector", "ZeroVector")
        return Upsert(
            Document(
                id=embedding.id,
                vector=embedding.vector,
                model=embedding.model,
                version=embedding.version,
                event_time=embedding.event_time,
                text=embedding.text,
                attributes=embedding.attributes,
            )
        )

    @property
    def in_flight(self) -> int:
        """Records consumed and not yet written (or dead-lettered) and committed."""
        return len(self._uncommitted)

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
        assert self._consumer is not None
        assert self._dlq is not None
        started = time.monotonic()
        refused: list[Rejection] = []

        def flush() -> None:
            refused.extend(self.store.flush())

        if not self._retrying(flush, f"writing {self.store.pending} records"):
            return  # stopping: nothing committed, the records come again
        rejected = {r.position: r for r in refused}
        upserts = deletes = 0
        written_at = datetime.now(UTC)
        freshness: list[float] = []
        for position, (op, message) in enumerate(zip(self._ops, self._op_messages, strict=True)):
            rejection = rejected.get(position)
            if rejection is not None:
                self._dead_letter(message, rejection.reason, rejection.error_class)
            elif isinstance(op, Delete):
                deletes += 1
            else:
                upserts += 1
                freshness.append(max((written_at - op.document.event_time).total_seconds(), 0.0))
        self._dlq.flush()
        written = len(self._ops) - len(rejected)
        if written:
            self.metrics.records_out.labels(self.config.index, STAGE).inc(written)
        try:
            self._consumer.commit(self._uncommitted)
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
        self._freshness.observe_many(freshness)
        self.stats.flushes += 1
        self.metrics.stage_seconds.labels(STAGE, "flush").observe(time.monotonic() - started)
        self._uncommitted, self._ops, self._op_messages = [], [], []

    def _retrying(self, action: Callable[[], None], doing: str) -> bool:
        """Run ``action`` until it stops raising backpressure; False if asked to stop meanwhile."""
        delay = self.config.retry_backoff_min_ms / 1000
        ceiling = self.config.retry_backoff_max_ms / 1000
        paused: list[confluent_kafka.TopicPartition] = []
        try:
            while True:
                try:
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
