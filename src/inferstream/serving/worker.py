"""The inference worker: Kafka requests in, micro-batched ONNX inference, predictions out.

Two threads share a bounded backlog. The consumer thread reads requests and adds
each fetch to the backlog at once (in partition order); while the backlog is full it
stops fetching (librdkafka's own prefetch is bounded too), and pauses its partitions if
that lasts. The inference thread closes a batch at ``max_batch_size`` or when its
oldest request has waited ``max_queue_delay_ms``, decodes and checks its requests (bad
ones marked; one thread does all of a request's Python work, where two taking turns on
the GIL cost more), runs the model, produces one prediction per request to the
predictions topic and to the request's reply-to, dead-letters what cannot be
served, waits for the broker's acknowledgement and only then marks the batch's
offsets for commit (the consumer thread stores them: a consumer handle is used
from one thread). At-least-once: a crash redelivers, never loses. An embedder's
consumer thread decodes the texts as it reads them and, where the model leaves the CPU
free (a GPU, spare cores), tokenises them too (the tokenizer runs outside the GIL), so
the next batch is tokenised while the model runs this one (see :func:`tokenises_ahead`).

Options (:class:`WorkerOptions`):

- ``exactly_once``: Kafka transactions of up to 250 ms of batches — their predictions,
  replies and dead letters, and their input offsets (sent with the group's metadata,
  which fences a zombie copy). Readers of those topics use ``read_committed`` (the
  default here), so a crash leaves no duplicates: the coordinator aborts the open
  transaction after ``transaction.timeout.ms`` and its requests are served again. A
  transaction that fails is aborted and the worker starts afresh (:class:`WorkerRunner`).
  A rebalance waits for the open transaction to commit before the partitions go.
- ``shadow_of``: serve as a shadow — read the given primary versions' request topics
  in a group of its own, and write only to ``predictions-shadow`` (no replies).
- ``chain``: serve as one step of a model chain — read the step's topic in the step's
  group, and send outputs on as its :class:`~inferstream.serving.chain_link.ChainLink` says
  (the next step's requests, or the chain's predictions from the last step).

A columnar request (``inference-batch-request``, JSON or Arrow: many rows in one record)
is scored as one model run of its own and answered with one ``prediction-batch`` record
(:mod:`inferstream.serving.columnar`). Tabular models take them, as primaries or shadows;
embedders and chain steps dead-letter them with the reason.

Traces: each output (prediction, reply, embedding, the next chain step's request) carries
its request's ``traceparent`` on; with ``tracing.enabled``, each batch is a span of its own
(:mod:`inferstream.tracing`) and the outputs in its trace name it as their parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import confluent_kafka
import numpy as np
import orjson
from orjson import Fragment

from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.connectors.kafka.producer import Producer
from inferstream.errors import ContractError, ModelError, TransactionError
from inferstream.metrics import Metrics
from inferstream.schemas.codec import Codec, Headers, codec_for
from inferstream.schemas.columnar import (
    ColumnarRequest,
    arrow_fields,
    decode_request,
    form_of,
    headers_for,
    is_batch_request,
)
from inferstream.schemas.records import (
    Embedding,
    EmbeddingRequest,
    InferenceRequest,
    Latency,
    Lineage,
    Prediction,
    PredictionBatch,
    RequestError,
)
from inferstream.serving.columnar import ColumnarScorer
from inferstream.serving.config import GPU_PROVIDERS, TabularPreprocessing, TextPreprocessing, VectorPreprocessing
from inferstream.serving.metrics import InferenceMetrics
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.preprocess import Prepared, TabularPreprocessor, VectorPreprocessor
from inferstream.serving.repository import ModelVersion
from inferstream.serving.text import TextPrepared, TextPreprocessor, bucket_by_length, pool
from inferstream.tracing import TRACEPARENT, Batch, carried, header_of, spans_for

if TYPE_CHECKING:
    from tokenizers import Encoding

    from inferstream.serving.chain_link import ChainLink

log = logging.getLogger("inferstream.serving")

_COMMIT_EVERY_S = 1.0
# A backlog full for this long pauses the partitions (pausing drops librdkafka's prefetched
# records, which are fetched again on resume: worth it only when the model stalls).
_PAUSE_AFTER_S = 5.0
# librdkafka's prefetch per consumer (its default is 64 MB): with the backlog, the memory bound.
_PREFETCH_KBYTES = 16 * 1024
# Exactly-once: the longest a transaction stays open while requests keep coming.
_TRANSACTION_S = 0.25
_TRANSACTION_TIMEOUT_MS = 10_000
# A copy that dies is out of its group after this (Kafka's default is 45 s): its partitions go to
# the others or its successor that much sooner (exactly-once: while the coordinator aborts the dead
# copy's transaction). Heartbeats come from librdkafka's own thread, so a busy worker keeps them.
_SESSION_TIMEOUT_MS = 10_000
# Exactly-once: the longest a rebalance waits for the open transaction to commit before it goes on.
_REVOKE_DRAIN_S = 60.0
# Exactly-once: the client's own limits on a transaction's offsets and commit, and past what the
# worker takes the commit for stuck (librdkafka can wait on a group coordinator that went away with
# a broker restart far past its timeout): it gives up on this producer and starts afresh.
_SEND_OFFSETS_S = 10.0
_COMMIT_S = 20.0
_STUCK_S = _SEND_OFFSETS_S + _COMMIT_S + 10.0


@dataclass(slots=True)
class _Item:
    message: confluent_kafka.Message
    request: InferenceRequest | EmbeddingRequest | ColumnarRequest | None
    error: Exception | None
    received: float
    #: The request's raw ``traceparent`` header (checked when its outputs are written), or None.
    trace: bytes | None = None
    #: An embedder's request: its text's tokens, encoded by the consumer thread while the model ran.
    tokens: Encoding | None = None
    #: Not decoded yet: the inference thread decodes it when it takes it (see ``_consume_loop``).
    raw: bool = False
    #: A tabular request's inputs as JSON text, as they came: its prediction echoes them as they are.
    echo: bytes | None = None


class _Backlog:
    """Decoded requests waiting for the inference thread, oldest first.

    The consumer thread adds whole fetches (one lock and one wake-up per fetch, not per
    record); the inference thread takes a batch once it is full or its oldest request
    has waited the model's max queue delay.
    """

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._ready = threading.Condition()
        self._taken = 0  # requests taken and not yet served

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being served."""
        return not self._items and not self._taken

    def add(self, items: list[_Item]) -> None:
        """Append one fetch's requests and wake the inference thread."""
        with self._ready:
            self._items.extend(items)
            self._ready.notify()

    def take(self, limit: int, max_delay_s: float, wait_s: float) -> list[_Item]:
        """Up to ``limit`` requests: waits ``wait_s`` for a first one, then until full or its delay is up."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: self._items, wait_s):
                return []
            deadline = self._items[0].received + max_delay_s
            while len(self._items) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._ready.wait(remaining):
                    break
            pop = self._items.popleft
            batch = [pop() for _ in range(min(limit, len(self._items)))]
            self._taken = len(batch)
            return batch

    def served(self) -> None:
        """The batch last taken is served."""
        self._taken = 0

    def drop(self, partitions: set[tuple[str, int]] | None = None) -> int:
        """Forget the requests not taken yet (of these partitions; all when None); how many.

        They follow everything taken in their partitions, so no offset stored later passes
        them: whoever reads the partitions next (this worker after a restart, or another
        member after a rebalance) serves them.
        """
        with self._ready:
            before = len(self._items)
            if partitions is None:
                self._items.clear()
            else:
                self._items = deque(
                    item
                    for item in self._items
                    if (item.message.topic() or "", item.message.partition() or 0) not in partitions
                )
            return before - len(self._items)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker serves, beyond its model's own config."""

    #: Kafka transactions around consume → predict → produce → offsets.
    exactly_once: bool = False
    #: Serve as a shadow of these primary versions (their request topics; outputs to predictions-shadow).
    shadow_of: tuple[str, ...] = ()
    #: This copy's number among its replicas: part of its transactional id.
    instance: int = 0
    #: Serve as this step of a chain (its topic and group; outputs to the next step or as the chain's).
    chain: ChainLink | None = None


@dataclass
class WorkerStats:
    """Counts since the worker started: requests = predictions + dead letters (records, columnar ones too)."""

    requests: int = 0
    predictions: int = 0
    dead_letters: int = 0
    #: Rows scored in columnar requests (each is one request and one prediction above).
    columnar_rows: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def mean_batch_size(self) -> float:
        """Mean requests per model run."""
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0


class InferenceWorker:
    """Serves one model version from its request topic; N copies share it as one group."""

    def __init__(
        self,
        settings: Settings,
        version: ModelVersion,
        *,
        metrics: Metrics | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        config = version.config
        self.options = options = options or WorkerOptions()
        self.version = version
        self.embedder = config.kind == "embedder"
        self.shadow = bool(options.shadow_of)
        if self.shadow and self.embedder:
            raise ModelError(f"{config.ref} is an embedder: only classifiers and regressors run as shadows")
        self.settings = settings
        self.config = config
        self.model = OnnxModel(version)
        self.metrics = metrics or Metrics()
        self._model_metrics = self.metrics.part(InferenceMetrics).bind(config.name, config.version)
        # Looked up once, not per call: a columnar request is one record of many rows, served alone.
        self._served_out = self.metrics.records_handled.labels("serve", "out")
        self._compute_seconds = self.metrics.stage_seconds.labels("serve", "compute")
        self.stats = WorkerStats()
        topics = settings.topics
        served = options.shadow_of or (config.version,)
        self.request_topics = [topics.request_topic(config.name, v) for v in served]
        self.request_topic = self.request_topics[0]
        self.output_topic = topics.platform_topics()["predictions-shadow" if self.shadow else config.output_topic]
        self.group_id = topics.worker_group(config.name, config.version, shadow=self.shadow)
        #: The model and version its requests name (a chain's, for a chain's step).
        self.serves = (config.name, config.version)
        if options.chain is not None:
            link = options.chain
            self.request_topics, self.request_topic = [link.input_topic], link.input_topic
            self.group_id, self.serves = link.group_id, (link.chain, link.version)
            self.output_topic = link.next_topic or self.output_topic
        #: Exactly-once: this copy's transactional id, new each start as Kafka Streams does under
        #: exactly-once v2 (the group generation sent with the offsets fences zombies).
        self.transactional_id = f"{self.group_id}-{options.instance}-{uuid.uuid4().hex[:8]}"
        self._backlog = _Backlog()
        # Batches whose outputs are acknowledged, for the consumer thread to store: the
        # consumer handle is used from that one thread only.
        self._done: queue.SimpleQueue[list[confluent_kafka.Message]] = queue.SimpleQueue()
        # Batches whose outputs are in flight, oldest first: sequence → [records unacknowledged,
        # the batch's input messages]. Touched by the inference thread only (acks arrive in
        # its producer polls), so the next batch runs while the broker acknowledges this one.
        self._in_flight: dict[int, list[Any]] = {}
        self._sequence = 0
        # The open transaction (exactly-once): when it began, and the next offset of each input partition.
        self._transaction_started: float | None = None
        self._transaction_offsets: dict[tuple[str, int], int] = {}
        # The consumer's group metadata (member id, generation) as of its last assignment: read
        # on the consumer thread, sent with each transaction's offsets by the inference thread.
        self._group_metadata: Any = None
        self._stop = threading.Event()
        self._consumer_done = threading.Event()
        # Exactly-once: when the transaction being committed started committing (None: none is).
        self._committing: float | None = None
        self._paused = False
        self._request_codec: Codec[Any] = codec_for(
            EmbeddingRequest if self.embedder and options.chain is None else InferenceRequest
        )
        # A plain tabular worker reads its requests as views (no record built) and echoes their
        # inputs' JSON text in its predictions (not encoded again): ~2.5 µs a request less.
        self._read_request = (
            self._request_codec.viewer("inputs")
            if isinstance(config.preprocessing, TabularPreprocessing) and options.chain is None
            else self._read_record
        )
        self._prediction_codec = codec_for(Prediction)
        self._prediction_header = [self._prediction_codec.header]
        self._embedding_codec = codec_for(Embedding)
        # Where this version came from, in every output: as fields (predictions, chain steps) and as a part.
        self._lineage_fields = config.lineage
        self._lineage = Lineage.model_validate(self._lineage_fields) if self._lineage_fields else None
        self._error_codec = codec_for(RequestError)
        self._columnar_headers = {form: headers_for(PredictionBatch, form) for form in ("json", "arrow")}
        # Error replies go to reply topics only (a hostile request cannot aim them at another topic).
        self._replies_prefix = topics.reply_topic("")
        self._labels = config.outputs.labels
        self._label_names = np.asarray(self._labels, dtype=object) if self._labels else None
        # Columnar requests: tabular models only (a chain's steps and embedders refuse them).
        self._columnar = (
            ColumnarScorer(config)
            if isinstance(config.preprocessing, TabularPreprocessing) and options.chain is None
            else None
        )
        # Spans when tracing is on (None: outputs only carry their request's traceparent on).
        self._spans = spans_for(settings.tracing, "inferstream-serve")
        self._batch_trace: Batch | None = None
        self.ready = threading.Event()
        #: Set when a batch could not be served: the worker stops, and nothing after it is committed.
        self.failure: Exception | None = None

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Load the model (refusing to start if it cannot), then serve until ``stop()``."""
        self.model.load()  # a missing, corrupt or GPU-less model stops us before consuming
        self._tokenise_ahead = tokenises_ahead(self.model.providers, self.config.runtime.intra_op_threads)
        self._preprocessor: TabularPreprocessor | TextPreprocessor | VectorPreprocessor
        if isinstance(self.config.preprocessing, TextPreprocessing):
            self._preprocessor = TextPreprocessor(self.config, self.version.directory).load()
        elif isinstance(self.config.preprocessing, VectorPreprocessing):
            self._preprocessor = VectorPreprocessor(self.config)
        else:
            self._preprocessor = TabularPreprocessor(self.config)
        admin = TopicAdmin(self.settings)
        for served in () if self.options.chain else self.options.shadow_of or (self.config.version,):
            admin.ensure_request_topic(self.config.name, served)
        exactly_once = self.options.exactly_once
        consumer_overrides: dict[str, Any] = {"queued.max.messages.kbytes": _PREFETCH_KBYTES}
        if "session.timeout.ms" not in self.settings.kafka.consumer_overrides:
            consumer_overrides["session.timeout.ms"] = _SESSION_TIMEOUT_MS
        self._consumer = Consumer(
            self.settings,
            self.request_topics,
            group_id=self.group_id,
            from_beginning=True,
            metrics=self.metrics,
            stage="serve",
            on_assign=self._on_assign if exactly_once else None,
            on_revoke=self._on_revoke,
            overrides=consumer_overrides,
        )
        overrides: dict[str, Any] = {"linger.ms": 1, "topic.metadata.propagation.max.ms": 2000}
        if self.options.exactly_once:
            overrides["transactional.id"] = self.transactional_id
            # A copy that dies with a transaction open holds read_committed readers (and its
            # successor's first offset fetch) until the coordinator aborts it after this.
            overrides["transaction.timeout.ms"] = overrides["delivery.timeout.ms"] = _TRANSACTION_TIMEOUT_MS
        self._producer = Producer(
            self.settings,
            metrics=self.metrics,
            stage="serve",
            on_ack=self._acked,
            # A reply topic that is gone is known after 2 s, not 30: its batch waits for that.
            overrides=overrides,
        )
        if self.options.exactly_once:
            self._producer.raw.init_transactions(30)
        self._dlq = DeadLetterWriter(self.settings, stage="serve", producer=self._producer, metrics=self.metrics)
        self._inference = inference = threading.Thread(
            target=self._infer_loop, name=f"infer-{self.config.ref}", daemon=True
        )
        inference.start()
        self.ready.set()
        try:
            self._consume_loop()
        finally:
            self._consumer_done.set()
            while inference.is_alive() and not self._stuck():
                inference.join(0.5)
            self._consumer.close()
            if self.failure is None:
                self._producer.close()
            elif not self._stuck():  # (a stuck commit holds the producer inside the client: leave it be)
                with contextlib.suppress(Exception):  # its failure is raised below; closing raises it again
                    self._producer.close(5)
        if isinstance(self.failure, TransactionError):
            raise self.failure
        if self.failure is not None:
            raise ModelError(f"{self.config.ref} stopped: {self.failure}") from self.failure
        return self.stats

    def _stuck(self) -> bool:
        """True (and the worker failing) once a transaction's commit has hung past any timeout of its own."""
        started = self._committing
        if started is None or time.monotonic() - started < _STUCK_S:
            return False
        if not isinstance(self.failure, TransactionError) or "stuck" not in str(self.failure):
            log.error(
                "a transaction's commit has not returned for %.0f s (the broker restarted?); "
                "starting afresh from the last committed transaction",
                time.monotonic() - started,
            )
            self.failure = TransactionError(f"a transaction's commit was stuck for over {_STUCK_S:.0f} s")
            self._stop.set()
        return True

    def stop(self) -> None:
        """Stop consuming, finish the batch being served, commit, and return from ``run()``.

        Requests read but not taken into a batch yet are left to the next start (their
        offsets are not committed): a slow model stops in one batch, not a whole backlog.
        """
        self._stop.set()

    # -- consumer thread --------------------------------------------------------------

    def _consume_loop(self) -> None:
        capacity = self.config.batching.queue_size
        fetch_size = max(capacity // 4, self.config.batching.max_batch_size)
        last_commit = time.monotonic()
        full_since = 0.0
        while not self._stop.is_set() and not self._stuck():
            self._store_done()
            if len(self._backlog) >= capacity:
                # Backpressure: stop fetching; pause the partitions only if the model stalls,
                # so consume() keeps this member in its group (max.poll.interval.ms).
                full_since = full_since or time.monotonic()
                if not self._paused and time.monotonic() - full_since >= _PAUSE_AFTER_S:
                    self._consumer.raw.pause(self._consumer.raw.assignment())
                    self._paused = True
                if not self._paused:
                    time.sleep(0.001)
                    continue
            else:
                full_since = 0.0
                if self._paused and len(self._backlog) <= capacity // 2:
                    self._consumer.raw.resume(self._consumer.raw.assignment())
                    self._paused = False
            # Large fetches: each call costs a GIL hand-over with the busy inference thread.
            messages = self._consumer.consume(fetch_size, 0.05)
            if messages:
                received = time.monotonic()
                items = [_Item(message, None, None, received, raw=True) for message in messages]
                if isinstance(self._preprocessor, TextPreprocessor):
                    # Texts: decoded here (and tokenised, where that leaves the model its cores),
                    # while the model runs the batch before.
                    self._decode_all(items)
                    if self._tokenise_ahead:
                        _tokenise(self._preprocessor, items)
                # Other requests are decoded by the inference thread: one thread holds the GIL for
                # all of a request's Python work, instead of two taking turns (~3 µs a request less).
                self._backlog.add(items)
            if time.monotonic() - last_commit >= _COMMIT_EVERY_S:
                self._consumer.commit(asynchronous=True)
                last_commit = time.monotonic()
        dropped = self._backlog.drop()
        if dropped:
            log.info("stopping: %d requests read but not served are left to the next start", dropped)
        while not self._backlog.idle and self.failure is None and not self._stuck():
            time.sleep(0.005)  # the inference thread finishes the batch it took
        deadline = time.monotonic() + 30
        while self._in_flight and self.failure is None and time.monotonic() < deadline:
            self._store_done()  # acknowledgements of the last batches are still arriving
            time.sleep(0.01)
        self._store_done()
        self._consumer.commit()

    def _on_assign(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        # Exactly-once: the generation these partitions came with fences this copy's offsets once
        # the group moves on. Read here, on the consumer thread: the consumer serves one caller at a
        # time, and a call from the inference thread waits for a gap between polls that a busy
        # consumer thread never leaves (it hung there until the worker stopped).
        self._group_metadata = self._consumer.raw.consumer_group_metadata()

    def _on_revoke(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        # The partitions go to another member, which reads them from the committed offsets. What
        # was read but not taken into a batch is its to serve; the batch in hand is served here and
        # its offsets stored before they go (the consumer commits them after this), so the next
        # owner does not serve it again. Exactly-once: the open transaction commits first, under the
        # generation its offsets were read in, or the next owner would serve those requests again.
        revoked = {(tp.topic or "", tp.partition or 0) for tp in partitions}
        dropped = self._backlog.drop(revoked)
        if dropped:
            log.info("partitions revoked: %d requests read but not served are left to their next owner", dropped)
        deadline = time.monotonic() + _REVOKE_DRAIN_S
        while (
            (not self._backlog.idle or self._transaction_started is not None or self._in_flight)
            and self.failure is None
            and self._inference.is_alive()
            and time.monotonic() < deadline
            and not self._stuck()
        ):
            self._store_done()
            time.sleep(0.005)
        self._store_done()

    def _store_done(self) -> None:
        # Called on every pass of the consumer loop: no exception raised when there is nothing.
        done = self._done
        while not done.empty():  # this thread alone takes from it
            self._consumer.store(done.get_nowait())

    def _decode(self, item: _Item, wall: datetime) -> None:
        """Fill in a raw item's request (or its error) from its message; the deadline is checked against ``wall``."""
        # Any failure here is about this record (the codec raises ContractError for whatever the
        # bytes and headers hold): it is dead-lettered with the reason, never stops the worker.
        item.raw = False
        message = item.message
        value = message.value()
        try:
            if value is None:
                raise ContractError("request has no value (a tombstone?)")
            headers = message.headers()
            request: InferenceRequest | EmbeddingRequest | ColumnarRequest
            if headers and headers[0] != self._request_codec.header and is_batch_request(headers):
                if self._columnar is None:
                    raise ContractError(
                        f"{self.config.ref} does not take columnar requests"
                        + (" inside a chain" if self.options.chain else " (tabular models only)")
                    )
                request = decode_request(value, headers)
            else:
                request, item.echo = self._read_request(value, headers)
            if request.model != self.serves[0] or (
                request.version != self.serves[1] and request.version not in self.options.shadow_of
            ):
                raise ContractError(
                    f"request is for {request.model}:{request.version}, this topic serves {':'.join(self.serves)}"
                )
            if request.deadline is not None and request.deadline < wall:
                raise TimeoutError(f"deadline {request.deadline.isoformat()} passed before the request was served")
        except Exception as exc:
            item.error = exc
            return
        item.request, item.trace = request, header_of(headers)

    def _read_record(self, value: bytes, headers: Headers | None) -> tuple[Any, None]:
        return self._request_codec.decode(value, headers=headers), None

    def _decode_all(self, batch: Sequence[_Item]) -> None:
        """Decode the requests of ``batch`` still raw, their deadlines checked now."""
        wall = datetime.now(UTC)
        decode = self._decode
        for item in batch:
            if item.raw:
                decode(item, wall)

    # -- inference thread -------------------------------------------------------------

    def _next_batch(self) -> list[_Item]:
        batching = self.config.batching
        # Texts: take several model batches at once and regroup them by length, so each is
        # padded only to its own longest text (16 batches: 0.52 → 0.65 of raw sorted, quick run).
        limit = batching.max_batch_size * (batching.length_buckets if self.embedder else 1)
        return self._backlog.take(limit, batching.max_queue_delay_ms / 1000, 0.05)

    def _infer_loop(self) -> None:
        while not (self._consumer_done.is_set() and self._backlog.idle):
            try:
                self._producer.poll(0)
            except confluent_kafka.KafkaException as exc:  # a fatal producer error (fenced)
                self.failure = self.failure or TransactionError(f"the producer failed: {error_of(exc).str()}")
                self._stop.set()
            self._check_failures()
            batch = self._next_batch()
            if not batch:
                if self._transaction_started is not None and self.failure is None:
                    self._guarded(self._commit_transaction, 0)
                continue
            try:
                if self.failure is None:  # after a failure nothing more is stored: all is redelivered
                    self._serve(batch)
            except Exception as exc:
                log.exception("serving a batch of %d failed; stopping, the batch will be redelivered", len(batch))
                self.failure = exc
                self._stop.set()
            finally:
                self._backlog.served()
        if self.failure is None:
            self._guarded(self._commit_transaction, 0)
        with contextlib.suppress(confluent_kafka.KafkaException):  # raised only after a fatal error, kept above
            self._producer.flush_quietly()
        self._check_failures()

    def _guarded(self, step: Any, size: int) -> None:
        try:
            step()
        except Exception as exc:
            log.exception("serving failed (%d requests); stopping, they will be redelivered", size)
            self.failure = exc
            self._stop.set()

    def _serve(self, batch: Sequence[_Item]) -> None:
        if batch[0].raw:
            self._decode_all(batch)
        if not self.options.exactly_once:
            self._serve_batch(batch)
            return
        # One transaction spans the batches of up to _TRANSACTION_S (or until no request comes
        # for a moment): a commit costs a round of coordinator markers, too dear for every batch.
        if self._transaction_started is None:
            self._producer.raw.begin_transaction()
            self._transaction_started = time.monotonic()
        try:
            self._serve_batch(batch)
        except Exception as exc:
            self._abort(exc)
            raise
        for item in batch:
            message = item.message
            self._transaction_offsets[(message.topic() or "", message.partition() or 0)] = (message.offset() or 0) + 1
        if time.monotonic() - self._transaction_started >= _TRANSACTION_S:
            self._commit_transaction()

    def _commit_transaction(self) -> None:
        if self._transaction_started is None:
            return
        producer = self._producer.raw
        log.debug("committing a transaction open for %.0f ms", (time.monotonic() - self._transaction_started) * 1000)
        self._committing = time.monotonic()
        try:
            producer.send_offsets_to_transaction(
                [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in self._transaction_offsets.items()],
                self._group_metadata,
                _SEND_OFFSETS_S,
            )
            log.debug("offsets sent")
            producer.commit_transaction(_COMMIT_S)
            log.debug("transaction committed")
        except confluent_kafka.KafkaException as exc:
            self._abort(exc)
        finally:
            self._committing = None
        self._transaction_started = None
        self._transaction_offsets.clear()
        self._check_failures()

    def _abort(self, exc: Exception) -> None:
        count = len(self._transaction_offsets)
        self._transaction_started = None
        self._transaction_offsets.clear()
        with contextlib.suppress(confluent_kafka.KafkaException):
            self._producer.raw.abort_transaction(30)
        if isinstance(exc, confluent_kafka.KafkaException):
            raise TransactionError(
                f"a transaction ({count} partitions' batches) failed and was aborted: {error_of(exc).str()}"
            ) from exc

    def _serve_batch(self, batch: Sequence[_Item]) -> None:
        if self._spans is None:
            self._serve_traced(batch)
            return
        started = time.monotonic()
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": self.request_topic,
            "messaging.batch.message_count": len(batch),
            "inferstream.model": self.config.name,
            "inferstream.version": self.config.version,
        }
        traces = [item.trace for item in batch]
        self._batch_trace = trace = self._spans.batch(f"serve {self.config.ref}", traces, batch[0].received, attributes)
        trace.child("batch wait", batch[0].received, started)
        try:
            self._serve_traced(batch)
        finally:
            self._batch_trace = None
            trace.end()

    def _serve_traced(self, batch: Sequence[_Item]) -> None:
        started = time.monotonic()
        self._sequence += 1
        tag = self._sequence
        # One extra count, released below once everything of the batch is queued.
        self._in_flight[tag] = [1, [item.message for item in batch]]
        good = [item for item in batch if item.request is not None]
        for item in batch:
            if item.error is not None:
                self._dead_letter(item, item.error, tag)
        if any(isinstance(item.request, ColumnarRequest) for item in good):
            queued: list[float] = []
            totals: list[float] = []
            for item in good:
                if isinstance(item.request, ColumnarRequest):
                    self._serve_columnar(item, item.request, started, tag, queued, totals)
            if queued:  # counted once for the batch's answers, as the per-record path does
                self._served(len(queued))
                self._model_metrics.latencies(queued, totals)
            good = [item for item in good if not isinstance(item.request, ColumnarRequest)]
        prepared: Prepared
        if isinstance(self._preprocessor, TextPreprocessor):
            texts = [
                (item.request, item.tokens)
                for item in good
                if isinstance(item.request, EmbeddingRequest | InferenceRequest)
            ]
            prepared = self._preprocessor.prepare([request for request, _ in texts], [tokens for _, tokens in texts])
        else:
            # Inference requests, all of them (a tabular one may be a view that reads as its record:
            # schemas/compiled_view.py); their positions in ``good`` are the prepared positions.
            requests: list[Any] = [item.request for item in good]
            prepared = self._preprocessor.prepare(requests)
        for index, reason in prepared.errors.items():
            self._dead_letter(good[index], ValueError(reason), tag)
        if prepared.positions and isinstance(prepared, TextPrepared):
            self._embed([good[i] for i in prepared.positions], prepared, started, tag)
        elif prepared.positions:
            items = [good[i] for i in prepared.positions]
            compute_start = time.monotonic()
            outputs, failed = self._run_model(prepared.feeds, len(items))
            compute_ms = (time.monotonic() - compute_start) * 1000
            for row, exc in failed.items():
                self._dead_letter(items[row], exc, tag)
            if failed:
                items = [item for row, item in enumerate(items) if row not in failed]
            if items:
                self._emit(items, outputs, started, compute_ms, tag)
            self._observe(len(items), compute_ms)
        if prepared.positions:
            self.metrics.stage_seconds.labels("serve", "queue").observe(max(started - batch[0].received, 0.0))
        self.stats.requests += len(batch)
        self._acked(tag)  # the extra count: offsets move once every output is acknowledged

    def _serve_columnar(
        self, item: _Item, request: ColumnarRequest, started: float, tag: int, queued: list[float], totals: list[float]
    ) -> None:
        # One record, many rows: one model run of its own, one answer in the form asked. An answered
        # request's queue and end-to-end times go to ``queued`` and ``totals`` (metrics once a batch).
        assert self._columnar is not None
        try:
            feeds = self._columnar.feeds(request)
        except ValueError as exc:
            self._dead_letter(item, exc, tag)
            return
        compute_start = time.monotonic()
        outputs, failed = self._run_model(feeds, 1)  # a failure is this record's: dead-lettered, as one row's
        compute_ms = (time.monotonic() - compute_start) * 1000
        if failed:
            self._dead_letter(item, failed[0], tag)
            return
        self._observe(request.rows, compute_ms)
        head = request.head
        now = datetime.now(UTC)
        queue_s = max(started - item.received, 0.0)
        total_s = max((now - head.event_time).total_seconds(), 0.0)
        fields = {
            "request_id": head.request_id,
            "event_time": head.event_time,
            "model": self.config.name,
            "version": self.config.version,
            "rows": request.rows,
            "latency": {"queue_ms": queue_s * 1000, "compute_ms": compute_ms, "total_ms": total_s * 1000},
            "predicted_at": now,
            "shadow": self.shadow,
            "source_event_id": head.source_event_id,
            "attributes": head.attributes,
            "lineage": self._lineage_fields,
        }
        try:
            value = self._columnar.encode(request, outputs, fields)
        except ContractError as exc:
            self._dead_letter(item, exc, tag)
            return
        key, headers = head.request_id.encode(), self._columnar_headers[request.form]
        if item.trace is not None:
            headers = self._trace_headers(item, headers) or headers
        self._in_flight[tag][0] += 1
        self._producer.produce(self.output_topic, value, key, headers, tag=tag)
        if head.reply_to and not self.shadow:  # users never see a shadow's outputs
            self._in_flight[tag][0] += 1
            self._producer.produce(head.reply_to, value, key, headers, tag=tag)
        self.stats.columnar_rows += request.rows
        queued.append(queue_s)
        totals.append(total_s)

    def _run_model(self, feeds: dict[str, Any], count: int) -> tuple[dict[str, Any], dict[int, Exception]]:
        """The model's outputs for the rows that ran, and the error of each row that could not.

        A batch that fails is run again row by row: a row that fails alone is about that
        request (dead-lettered); when every row fails, the model is at fault and this raises
        (the worker stops and the batch is served again after a restart).
        """
        trace = self._batch_trace
        try:
            if trace is None:
                return self.model.run(feeds), {}
            start = time.monotonic()
            outputs = self.model.run(feeds)
            trace.child("inference", start, time.monotonic())
            return outputs, {}
        except Exception as exc:
            if count == 1:
                return {}, {0: exc}
            log.warning("a batch of %d failed in the model (%s); running its rows one by one", count, exc)
        ran: list[dict[str, Any]] = []
        failed: dict[int, Exception] = {}
        for row in range(count):
            try:
                ran.append(self.model.run({name: array[row : row + 1] for name, array in feeds.items()}))
            except Exception as exc:
                failed[row] = exc
        if not ran:
            raise ModelError(f"{self.config.ref} fails on every request of a batch: {failed[0]}") from failed[0]
        return {name: np.concatenate([out[name] for out in ran]) for name in ran[0]}, failed

    def _served(self, count: int) -> None:
        self.stats.predictions += count
        self._served_out.inc(count)
        self._model_metrics.served(count)

    def _observe(self, size: int, compute_ms: float) -> None:
        # batch_size{stage="serve"} is the consumer's (records per consumed batch); rows per
        # model run are inference_batch_size{model,version}.
        self.stats.batches += 1
        self.stats.batch_sizes.append(size)
        self._model_metrics.executed(size, compute_ms / 1000)
        self._compute_seconds.observe(compute_ms / 1000)

    def _embed(self, items: Sequence[_Item], prepared: TextPrepared, started: float, tag: int) -> None:
        # Similar lengths together: each model batch is padded only to its own longest text. The
        # outputs go out in the order the requests came, so two updates of one document in a batch
        # reach the embeddings topic (and the index) oldest first.
        spec = self.config.outputs
        assert spec.embedding is not None
        vectors: list[Any] = [None] * len(items)
        compute: list[float] = [0.0] * len(items)
        failed: dict[int, Exception] = {}
        batching = self.config.batching
        for bucket in bucket_by_length(prepared.lengths, batching.max_batch_size, batching.max_batch_tokens):
            rows = np.asarray(bucket)
            width = int(prepared.lengths[rows].max())
            feeds = {name: array[rows, :width] for name, array in prepared.feeds.items()}
            compute_start = time.monotonic()
            outputs, bad = self._run_model(feeds, len(bucket))
            ok = [i for i in range(len(bucket)) if i not in bad]
            if ok:
                mask = prepared.attention_mask[rows[ok], :width]
                pooled = pool(outputs[spec.embedding], mask, spec.pooling, spec.normalize)
                for i, vector in zip(ok, pooled, strict=True):
                    vectors[bucket[i]] = vector
            failed.update((bucket[i], exc) for i, exc in bad.items())
            compute_ms = (time.monotonic() - compute_start) * 1000
            for row in bucket:
                compute[row] = compute_ms
            self._observe(len(ok), compute_ms)
        for row, exc in failed.items():
            self._dead_letter(items[row], exc, tag)
        done = [row for row in range(len(items)) if row not in failed]
        if self.options.chain is not None:  # a chain's step: vectors go on, never to embeddings
            self._forward(
                [items[row] for row in done],
                [{"embedding": vectors[row]} for row in done],
                started,
                [compute[row] for row in done],
                tag,
            )
            return
        now = datetime.now(UTC)
        produce_start = time.monotonic()
        header = [self._embedding_codec.header]
        queued: list[float] = []
        totals: list[float] = []
        for row in done:
            item = items[row]
            request = item.request
            assert isinstance(request, EmbeddingRequest)
            queue_s = max(started - item.received, 0.0)
            total_s = max((now - request.event_time).total_seconds(), 0.0)
            embedding = Embedding.model_construct(
                id=request.document_id,
                event_time=request.event_time,
                model=self.config.name,
                version=self.config.version,
                vector=vectors[row],
                text=request.text,
                request_id=request.request_id,
                latency=Latency.model_construct(
                    queue_ms=queue_s * 1000, compute_ms=compute[row], total_ms=total_s * 1000
                ),
                attributes=request.attributes,
                lineage=self._lineage,
            )
            try:
                value = self._embedding_codec.encode(embedding)
            except ContractError as exc:
                self._dead_letter(item, exc, tag)
                continue
            self._in_flight[tag][0] += int(request.index) + bool(request.reply_to)
            headers = (self._trace_headers(item, header) if item.trace is not None else None) or header
            if request.index:
                self._producer.produce(self.output_topic, value, request.document_id.encode(), headers, tag=tag)
            if request.reply_to:
                self._producer.produce(request.reply_to, value, request.request_id.encode(), headers, tag=tag)
            self._served(1)
            queued.append(queue_s)
            totals.append(total_s)
        self._produced(produce_start)
        self._model_metrics.latencies(queued, totals)

    def _acked(self, tag: Any, count: int = 1) -> None:
        entry = self._in_flight.get(tag)
        if entry is None:
            return
        entry[0] -= count
        # Hand batches over in order, so a stored offset never passes an unacknowledged output.
        while self._in_flight:
            oldest = next(iter(self._in_flight))
            remaining, messages = self._in_flight[oldest]
            if remaining > 0:
                return
            del self._in_flight[oldest]
            if not self.options.exactly_once:  # else the batch's transaction committed its offsets
                self._done.put(messages)

    def _check_failures(self) -> None:
        for failure in self._producer.take_failures():
            if failure.topic not in (self.output_topic, self._dlq.topic):
                # A reply topic gone (its client closed): the prediction is on the output topic.
                log.warning("reply to %s not delivered: %s", failure.topic, failure.reason)
                self._acked(failure.tag)
                continue
            if self.failure is None:
                self.failure = failure.error()
                self._stop.set()

    def _emit(
        self, items: Sequence[_Item], outputs: dict[str, Any], started: float, compute_ms: float, tag: int
    ) -> None:
        if self.options.chain is not None:  # a chain's step: serving/chain_link.py shapes what it writes
            self._forward(items, self._outputs(outputs, len(items)), started, [compute_ms] * len(items), tag)
            return
        now = datetime.now(UTC)
        produce_start = time.monotonic()
        rows = self._outputs(outputs, len(items))
        # Built from a validated request and our own outputs: encoded from its fields
        # (~1 µs a record; constructing and serialising the model costs ~10 µs).
        encode = self._prediction_codec.encode_fields
        name, version, shadow, lineage = self.config.name, self.config.version, self.shadow, self._lineage_fields
        values: list[bytes] = []
        keys: list[bytes] = []
        queued: list[float] = []
        totals: list[float] = []
        # Each record's own headers (None: the shared ones), once a request carried a traceparent.
        own: list[list[tuple[str, bytes]] | None] | None = None
        for item, row in zip(items, rows, strict=True):
            request: InferenceRequest = item.request  # type: ignore[assignment]  # prepared: InferenceRequests
            queue_s = started - item.received  # received before this batch started: never negative
            total_s = (now - request.event_time).total_seconds()
            if total_s < 0.0:  # an event time ahead of this clock
                total_s = 0.0
            try:
                value = encode(
                    {
                        "request_id": request.request_id,
                        "event_time": request.event_time,
                        "model": name,
                        "version": version,
                        "inputs": request.inputs if item.echo is None else Fragment(item.echo),
                        "outputs": row,
                        "latency": {"queue_ms": queue_s * 1000, "compute_ms": compute_ms, "total_ms": total_s * 1000},
                        "predicted_at": now,
                        "shadow": shadow,
                        "chain": [],
                        "source_event_id": request.source_event_id,
                        "attributes": request.attributes,
                        "lineage": lineage,
                    }
                )
            except ContractError as exc:  # a value JSON cannot carry: this request alone is refused
                self._dead_letter(item, exc, tag)
                continue
            key = request.request_id.encode()
            values.append(value)
            keys.append(key)
            queued.append(queue_s)
            totals.append(total_s)
            headers = None
            if item.trace is not None:
                headers = self._trace_headers(item, self._prediction_header)
                if headers is not None and own is None:
                    own = [None] * (len(values) - 1)
            if own is not None:
                own.append(headers)
            if request.reply_to and not shadow:  # users never see a shadow's outputs
                self._in_flight[tag][0] += 1
                self._producer.produce(request.reply_to, value, key, headers or self._prediction_header, tag=tag)
        self._in_flight[tag][0] += len(values)
        self._producer.produce_many(self.output_topic, values, keys, self._prediction_header, tag=tag, headers_of=own)
        self._produced(produce_start)
        self._served(len(values))
        self._model_metrics.latencies(queued, totals)

    def _trace_headers(self, item: _Item, headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
        """``headers`` and the traceparent of ``item``'s outputs; None when its request carried no valid one."""
        value = carried(self._batch_trace, item.trace)
        return None if value is None else [*headers, (TRACEPARENT, value)]

    def _produced(self, start: float) -> None:
        # Tracing on: the batch's "produce" span (outputs built and queued to the producer).
        if self._batch_trace is not None:
            self._batch_trace.child("produce", start, time.monotonic())

    def _outputs(self, outputs: dict[str, Any], count: int) -> list[dict[str, Any]]:
        # Each output a column first (numpy, then one tolist), then the rows zipped from the columns.
        spec = self.config.outputs
        columns: dict[str, list[Any]] = {}
        if spec.label:
            labels = np.asarray(outputs[spec.label])
            names = self._label_names
            columns["label"] = (
                names[labels.reshape(count).astype(np.intp)].tolist() if names is not None else labels.tolist()
            )
        if spec.probabilities:
            probabilities = np.asarray(outputs[spec.probabilities], dtype=np.float64).round(6).tolist()
            classes = self._labels
            if classes and len(classes) == 2:
                first, second = classes
                columns["probabilities"] = [{first: a, second: b} for a, b in probabilities]
            elif classes:
                columns["probabilities"] = [dict(zip(classes, values, strict=True)) for values in probabilities]
            else:
                columns["probabilities"] = probabilities
        if spec.score:
            columns["score"] = np.asarray(outputs[spec.score]).reshape(count).tolist()
        keys = list(columns)
        if not keys:
            return [{} for _ in range(count)]
        if len(keys) == 1:
            (key,) = keys
            return [{key: value} for value in columns[key]]
        if len(keys) == 2:  # a label and its probabilities: a dict display is ~3x dict(zip(...))
            first, second = keys
            return [{first: a, second: b} for a, b in zip(*columns.values(), strict=True)]
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def _forward(
        self,
        items: Sequence[_Item],
        rows: Sequence[dict[str, Any]],
        started: float,
        compute_ms: Sequence[float],
        tag: int,
    ) -> None:
        # One step of a chain: the next step's requests, or (last step) the chain's predictions + replies.
        link = self.options.chain
        assert link is not None
        now = datetime.now(UTC)
        produce_start = time.monotonic()
        header = [link.header]
        values: list[bytes] = []
        keys: list[bytes] = []
        queued: list[float] = []
        totals: list[float] = []
        own: list[list[tuple[str, bytes]] | None] = []
        for item, row, compute in zip(items, rows, compute_ms, strict=True):
            request = item.request
            assert isinstance(request, InferenceRequest)
            queue_s = max(started - item.received, 0.0)
            try:
                values.append(link.output(request, row, queue_s * 1000, compute, now, self._lineage_fields))
            except ContractError as exc:
                self._dead_letter(item, exc, tag)
                continue
            keys.append(request.request_id.encode())
            queued.append(queue_s)
            totals.append(max((now - request.event_time).total_seconds(), 0.0))
            headers = self._trace_headers(item, header) if item.trace is not None else None
            own.append(headers)
            if link.last and request.reply_to:
                self._in_flight[tag][0] += 1
                self._producer.produce(request.reply_to, values[-1], keys[-1], headers or header, tag=tag)
        self._in_flight[tag][0] += len(values)
        self._producer.produce_many(self.output_topic, values, keys, header, tag=tag, headers_of=own)
        self._produced(produce_start)
        self._served(len(values))
        self._model_metrics.latencies(queued, totals)

    def _dead_letter(self, item: _Item, error: Exception, tag: int) -> None:
        self._in_flight[tag][0] += 1
        self._dlq.send_message(item.message, error, tag=tag)
        self.stats.dead_letters += 1
        self._model_metrics.failed()
        # The caller waiting on a reply topic learns why at once, instead of at its timeout.
        request = item.request
        reply_to = request.reply_to if request is not None else _reply_to_of(item.message)
        if not reply_to or self.shadow or not reply_to.startswith(self._replies_prefix):
            return
        request_id = request.request_id if request is not None else _request_id_of(item.message)
        if request_id is None:
            return
        model, version = (request.model, request.version) if request is not None else self.serves
        message = item.message
        refusal = RequestError(
            request_id=request_id,
            model=model[:256],
            version=version[:256],
            stage="serve",
            error_class=type(error).__name__,
            error_message=(str(error) or type(error).__name__)[:2000],
            source_topic=message.topic() or "",
            source_partition=message.partition(),
            source_offset=message.offset(),
        )
        try:
            value = self._error_codec.encode(refusal)
        except ContractError:
            return  # nothing JSON can carry: the dead letter alone tells it
        self._in_flight[tag][0] += 1
        self._producer.produce(reply_to, value, request_id.encode(), [self._error_codec.header], tag=tag)


def _reply_to_of(message: confluent_kafka.Message) -> str | None:
    # The reply-to of a request that failed to decode, if its bytes (or its Arrow metadata) still say one.
    value = message.value()
    try:
        fields = arrow_fields(value) if form_of(message.headers()) == "arrow" else orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    reply_to = fields.get("reply_to") if isinstance(fields, dict) else None
    return reply_to if isinstance(reply_to, str) and reply_to.isprintable() else None


def _request_id_of(message: confluent_kafka.Message) -> str | None:
    # Requests are keyed by their id: the key names the request when its value could not be read.
    key = message.key()
    try:
        text = key.decode("utf-8") if isinstance(key, bytes) else key
    except UnicodeDecodeError:
        return None
    return text if isinstance(text, str) and text.strip() and len(text) <= 512 else None


class WorkerRunner:
    """Runs a worker until stopped; an exactly-once worker whose transaction failed starts afresh.

    A fresh worker's producer fences the failed one and its consumer resumes from the
    last committed transaction, so nothing is lost or doubled. More than
    ``max_restarts`` restarts within ten minutes means something is wrong: it raises.
    """

    def __init__(
        self,
        settings: Settings,
        version: ModelVersion,
        *,
        metrics: Metrics | None = None,
        options: WorkerOptions | None = None,
        max_restarts: int = 5,
    ) -> None:
        self._args = (settings, version, metrics, options)
        self.worker = self._make()
        self._stopped = False
        self._max_restarts = max_restarts
        self.restarts: list[float] = []

    def _make(self) -> InferenceWorker:
        settings, version, metrics, options = self._args
        return InferenceWorker(settings, version, metrics=metrics, options=options)

    def run(self) -> WorkerStats:
        """Serve until ``stop()``; the stats of the last worker."""
        while True:
            try:
                return self.worker.run()
            except TransactionError as exc:
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 600] + [now]
                if self._stopped:  # nothing of it is visible; the next start serves it
                    log.warning("%s while stopping; the next start serves it again", exc)
                    return self.worker.stats
                if len(self.restarts) > self._max_restarts:
                    raise
                log.warning("%s; starting the worker again from the last committed transaction", exc)
                self.worker = self._make()

    def stop(self) -> None:
        """Stop the current worker (it finishes the batch in hand)."""
        self._stopped = True
        self.worker.stop()


def tokenises_ahead(providers: list[str], intra_op_threads: int) -> bool:
    """Whether the consumer thread tokenises the next texts while the model runs.

    Where the model leaves the CPU free: on a GPU, or when ONNX Runtime's threads leave
    a core to spare. On the CPU with every core in the model's threads (``intra_op_threads
    = 0``), the tokeniser's threads beside them hold up each of the model's parallel steps
    more than tokenising ahead saves: on 2 cores, 0.91–0.94 of raw ONNX Runtime on sorted
    input with it, 0.98 without. The inference thread then tokenises each batch itself.
    """
    if providers and providers[0] in GPU_PROVIDERS:
        return True
    return 0 < intra_op_threads < (os.cpu_count() or 1)


def _tokenise(text: TextPreprocessor, items: list[_Item]) -> None:
    """Encode the texts of ``items`` (one call, outside the GIL) on the consumer thread.

    The inference thread then pads them while the model runs the batch before: the next
    requests are tokenised while this one is scored. A text the tokenizer cannot encode
    here is left to the inference thread, which encodes it again and refuses it as before.
    """
    wanted = [
        (item, found)
        for item in items
        if isinstance(item.request, EmbeddingRequest | InferenceRequest)
        and (found := text.text_of(item.request))
        and not found.isspace()
    ]
    if not wanted:
        return
    try:
        encodings = text.encode([found for _, found in wanted])
    except Exception:  # about one of the texts: each is encoded (and refused) when served
        return
    for (item, _), encoding in zip(wanted, encodings, strict=True):
        item.tokens = encoding
