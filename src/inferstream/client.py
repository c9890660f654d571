"""The Python SDK: produce records, subscribe to topics, manage topics and dead letters.

>>> from inferstream import Client
>>> with Client() as client:                                         # doctest: +SKIP
...     client.topics.ensure_platform_topics()
...     client.produce("events", [{"id": "e1", "type": "review", "text": "great"}])
...     for message in client.subscribe("events", from_beginning=True, max_records=1):
...         print(message.record)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import difflib
import gc
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.files import SourceRecord
from inferstream.connectors.kafka._util import headers_of
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.connectors.kafka.dlq import ATTEMPT_HEADER, DeadLetterFilter, DeadLetterWriter, from_message
from inferstream.connectors.kafka.groups import GroupAdmin
from inferstream.connectors.kafka.producer import DeliveryFailure, Producer
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.connectors.kafka.replies import ReplyListener
from inferstream.errors import (
    ContractError,
    DeliveryError,
    FieldProblem,
    KafkaError,
    RecordValidationError,
    RequestTimeoutError,
    TopicError,
)
from inferstream.metrics import Metrics
from inferstream.schemas._types import utcnow
from inferstream.schemas.codec import Codec, codec_for
from inferstream.schemas.jsonpolicy import INT_MAX, INT_MIN
from inferstream.schemas.records import (
    Contract,
    DeadLetter,
    DriftAlert,
    Embedding,
    EmbeddingRequest,
    InferenceRequest,
    Prediction,
    contract_named,
)
from inferstream.serving.routes import RouteTable

if TYPE_CHECKING:
    from inferstream.search import Filters, Passage, Searcher, SearchResult

OnError = Literal["fail", "skip", "dlq"]
Progress = Callable[[int], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was not produced: where it was, why, and where it went."""

    line: int | None
    reason: str
    fields: tuple[str, ...] = ()
    dead_lettered: bool = False


@dataclass
class ProduceReport:
    """What ``produce`` did: read = produced + rejected, always."""

    topic: str
    read: int = 0
    produced: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def dead_lettered(self) -> int:
        """Rejected records that went to the dead-letter topic."""
        return sum(1 for r in self.rejected if r.dead_lettered)

    @property
    def records_per_s(self) -> float:
        """Produced records per second."""
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Received:
    """A consumed record: where it was, its bytes, and its decoded contract record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    record: Contract | None = None
    error: str | None = None


@dataclass
class ReplayReport:
    """What a dead-letter replay did."""

    read: int = 0
    replayed: int = 0
    exhausted: int = 0
    unrecoverable: int = 0
    filtered: int = 0


class Client:
    """The entry point of the SDK; one per process is plenty (it is thread-safe to produce)."""

    def __init__(self, settings: Settings | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings or Settings.load()
        self.metrics = metrics
        self._producer: Producer | None = None
        self._admin: TopicAdmin | None = None
        self._groups: GroupAdmin | None = None
        self._known_topics: set[str] = set()
        #: Names this client's reply topic (``replies.<client_id>``).
        self.client_id = f"{self.settings.kafka.client_id}-{uuid.uuid4().hex[:12]}"
        self._replies: ReplyListener | None = None
        self._replies_lock = threading.Lock()
        self._routes: RouteTable | None = None
        self._searcher: Searcher | None = None

    # -- topics -----------------------------------------------------------------------

    @property
    def topics(self) -> TopicAdmin:
        """Topic administration (create, list, describe, ensure the platform's topics)."""
        if self._admin is None:
            self._admin = TopicAdmin(self.settings)
        return self._admin

    @property
    def groups(self) -> GroupAdmin:
        """Consumer groups: their lag per partition, and resetting their offsets (``reset``)."""
        if self._groups is None:
            self._groups = GroupAdmin(self.settings)
        return self._groups

    def topic(self, name: str) -> str:
        """The full name of a topic: logical platform names get the prefix, others pass as given."""
        topics = self.settings.topics
        if name in topics.platform_topics():
            return topics.platform_topics()[name]
        logical = topics.logical(name)
        if logical.startswith(f"{topics.requests_prefix}.") or logical.startswith(f"{topics.replies_prefix}."):
            return topics.name(logical)
        return name

    def contract_for(self, topic: str) -> type[Contract] | None:
        """The contract of a platform topic, or None for a topic the platform does not own."""
        topics = self.settings.topics
        logical = topics.logical(self.topic(topic))
        by_topic: dict[str, str] = {
            topics.events: "event",
            topics.predictions: "prediction",
            topics.predictions_shadow: "prediction",
            topics.embeddings: "embedding",
            topics.control: "route",
            topics.drift_alerts: "drift-alert",
            topics.dead_letters: "dead-letter",
        }
        if logical in by_topic:
            return contract_named(by_topic[logical])
        if logical.startswith(f"{topics.requests_prefix}."):
            return contract_named("inference-request")
        if logical.startswith(f"{topics.replies_prefix}."):
            return contract_named("prediction")
        return None

    # -- producing --------------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        """The client's shared producer (idempotent, batched)."""
        if self._producer is None:
            self._producer = Producer(self.settings, metrics=self.metrics)
        return self._producer

    def produce(
        self,
        topic: str,
        records: Iterable[Mapping[str, Any] | Contract],
        *,
        schema: str | None = None,
        on_error: OnError = "fail",
        headers: Sequence[tuple[str, bytes]] = (),
        progress: Progress | None = None,
    ) -> ProduceReport:
        """Validate records against the topic's contract and produce them, keyed by their id.

        ``on_error``: ``fail`` raises at the first invalid record (records before it
        are produced), ``skip`` leaves invalid ones out, ``dlq`` sends them to the
        dead-letter topic with the reason. Returns counts; read = produced + rejected.
        """
        return self._produce(
            topic, records, schema=schema, on_error=on_error, headers=headers, progress=progress, lines=False
        )

    def produce_file(
        self,
        topic: str,
        records: Iterable[SourceRecord],
        *,
        schema: str | None = None,
        on_error: OnError = "fail",
        headers: Sequence[tuple[str, bytes]] = (),
        progress: Progress | None = None,
    ) -> ProduceReport:
        """Like ``produce`` for records read from a file: errors name the file line."""
        return self._produce(
            topic, records, schema=schema, on_error=on_error, headers=headers, progress=progress, lines=True
        )

    def _produce(
        self,
        topic: str,
        records: Iterable[SourceRecord | Mapping[str, Any] | Contract],
        *,
        schema: str | None,
        on_error: OnError,
        headers: Sequence[tuple[str, bytes]],
        progress: Progress | None,
        lines: bool,
        batch_size: int = 2000,
    ) -> ProduceReport:
        full = self.topic(topic)
        # A misspelt topic is the likeliest mistake: say so before anything else (with dlq,
        # records for a missing topic are dead-lettered instead).
        exists = self._topic_exists(full)
        if not exists and on_error != "dlq":
            raise TopicError(self.missing_topic_message(full))
        contract = contract_named(schema) if schema else self.contract_for(full)
        if contract is None:
            raise ContractError(
                f"{full} is not a platform topic, so its contract is unknown: pass schema= (--schema) "
                "with one of event, inference-request, embedding-request, prediction, embedding, drift-alert, route"
            )
        codec = codec_for(contract)
        report = ProduceReport(topic=full)
        started = time.perf_counter()
        sink = _ProduceSink(self, full, codec, on_error, [*headers, codec.header], report, lines)
        sink.missing_topic = not exists
        batch: list[SourceRecord | Mapping[str, Any] | Contract] = []
        try:
            try:
                for item in records:
                    batch.append(item)
                    if len(batch) >= batch_size:
                        sink.send(batch)
                        if progress is not None:
                            progress(len(batch))
                        batch = []
                if batch:
                    sink.send(batch)
                    if progress is not None:
                        progress(len(batch))
            finally:
                sink.finish()
                report.elapsed_s = time.perf_counter() - started
        except Exception as exc:
            # Counted once the producer was flushed: these are acknowledged by the broker.
            produced = f"{report.produced} record was" if report.produced == 1 else f"{report.produced} records were"
            exc.add_note(f"{produced} produced to {full} before the failure")
            raise
        return report

    def _topic_exists(self, topic: str) -> bool:
        if topic in self._known_topics:
            return True
        if self.topics.exists(topic):
            self._known_topics.add(topic)
            return True
        return False

    def missing_topic_message(self, topic: str) -> str:
        """Why ``topic`` (a full name that does not exist) cannot be used, with the closest topic's name."""
        create = f"create it with `inferstream topics create {topic}`"
        guess = self.closest_topic(topic)
        if guess is not None:
            return f"topic {topic} does not exist; did you mean {guess}? ({create})"
        if topic in self.settings.topics.platform_topics().values():
            create = "create the platform's topics with `inferstream topics create --platform`"
        return f"topic {topic} does not exist: {create}"

    def closest_topic(self, topic: str) -> str | None:
        """The platform topic, or existing topic under the prefix, whose name is closest to ``topic`` (difflib).

        Names are compared without the prefix (a shared prefix would make every name look
        alike), and also whole when ``topic`` has another prefix or none.
        """
        topics = self.settings.topics
        candidates = set(topics.platform_topics().values())
        with contextlib.suppress(KafkaError):  # the platform's names still help
            candidates.update(n for n in self.topics.list(timeout=5.0) if n.startswith(topics.prefix))
        candidates.discard(topic)
        spellings: dict[str, str] = {}
        for candidate in sorted(candidates):
            spellings.setdefault(topics.logical(candidate), candidate)
            if not topic.startswith(topics.prefix):
                spellings.setdefault(candidate, candidate)
        matches = difflib.get_close_matches(topics.logical(topic), spellings, n=1)
        return spellings[matches[0]] if matches else None

    # -- request/reply ----------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | None = None,
        timeout: float = 10.0,
        request_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Prediction:
        """Send one request to ``model`` and wait for its prediction.

        ``name:version`` or ``version=`` asks that version; a bare name is routed by the
        model's route on the control topic (``inferstream models route``), by request id.

        The request carries this client's reply topic and a deadline ``timeout`` from
        now, so a worker that gets to it late dead-letters it instead of answering.
        Raises ``RequestTimeoutError`` when no prediction arrives in time. Safe to call
        from many threads at once.
        """
        reply = self._ask(model, version, {"inputs": dict(inputs)}, InferenceRequest, timeout, request_id, attributes)
        if not isinstance(reply, Prediction):
            raise ContractError(f"{model} answered with a {reply.schema_name}, not a prediction: use embed()")
        return reply

    def embed(
        self,
        model: str,
        text: str,
        *,
        version: str | None = None,
        document_id: str | None = None,
        timeout: float = 10.0,
        attributes: Mapping[str, str] | None = None,
    ) -> Embedding:
        """Embed one text with an embedder (``name:version``) and wait for the vector.

        The embedding also goes to the embeddings topic (and so to the index) under
        ``document_id`` (a fresh id by default).
        """
        request_id = uuid.uuid4().hex
        fields = {"text": text, "document_id": document_id or request_id}
        reply = self._ask(model, version, fields, EmbeddingRequest, timeout, request_id, attributes)
        if not isinstance(reply, Embedding):
            raise ContractError(f"{model} answered with a {reply.schema_name}, not an embedding: use predict()")
        return reply

    def _ask(
        self,
        model: str,
        version: str | None,
        fields: dict[str, Any],
        contract: type[InferenceRequest] | type[EmbeddingRequest],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Prediction | Embedding:
        name, _, pinned = model.partition(":")
        request_id = request_id or uuid.uuid4().hex
        chosen = version or pinned or self.routes.resolve(name, request_id)
        replies = self._reply_listener()
        codec = codec_for(contract)
        request = codec.validate(
            {
                "request_id": request_id,
                "model": name,
                "version": chosen,
                "reply_to": replies.topic,
                "deadline": utcnow() + timedelta(seconds=timeout),
                "attributes": dict(attributes or {}),
                **fields,
            }
        )
        future = replies.expect(request.request_id)
        topic = self.settings.topics.request_topic(name, chosen)
        deadline = time.monotonic() + timeout
        try:
            self.producer.produce(topic, codec.encode(request), request.key(), [codec.header])
            try:
                self.producer.flush(timeout)
            except DeliveryError as exc:
                if not exc.retriable or time.monotonic() < deadline:
                    raise
                raise RequestTimeoutError(
                    f"request {request.request_id} to {name}:{chosen} was not even acknowledged by the broker "
                    f"within {timeout:g}s: is the broker reachable and not overloaded?"
                ) from None
            return future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError:
            raise RequestTimeoutError(
                f"no answer to request {request.request_id} from {name}:{chosen} within {timeout:g}s: "
                f"is a worker serving {topic}? (a request it could not serve is on the dead-letter topic: "
                "`inferstream dlq list`)"
            ) from None
        finally:
            replies.forget(request.request_id)

    @property
    def routes(self) -> RouteTable:
        """The models' routes (from the control topic, kept current): alias → version by request id."""
        with self._replies_lock:
            if self._routes is None:
                self._routes = RouteTable(self.settings).start()
            return self._routes

    def _reply_listener(self) -> ReplyListener:
        with self._replies_lock:
            if self._replies is None:
                self._replies = ReplyListener(self.settings, self.client_id)
            return self._replies

    # -- subscribing ------------------------------------------------------------------

    def subscribe(
        self,
        topic: str | Sequence[str],
        *,
        group: str | None = None,
        from_beginning: bool = False,
        max_records: int | None = None,
        idle_timeout: float | None = None,
        decode: bool = True,
        schema: str | None = None,
        stop_at_end: bool = False,
    ) -> Subscription:
        """Iterate over a topic's records; offsets are committed as you go (at-least-once).

        Without ``group`` an ephemeral group is used (so nothing is resumed); with one,
        a restart resumes after the last record handed out. A group with nothing committed
        starts at the beginning (``from_beginning``) or at the end as of this call: records
        produced after ``subscribe()`` returns are all seen, however long the join takes. ``idle_timeout`` ends the
        iteration after that many seconds without a record, not counting the group join (up to 30 s);
        ``max_records`` after N; ``stop_at_end`` once every partition of this subscription is read up to
        its end offset as of this call (records produced later are left for the next read; then
        ``Subscription.reached_end`` is True).
        """
        names = [topic] if isinstance(topic, str) else list(topic)
        full = [self.topic(name) for name in names]
        if stop_at_end:  # the ends are read now: say which topic is missing, with the closest name
            for name in full:
                if not self._topic_exists(name):
                    raise TopicError(self.missing_topic_message(name))
        contract = contract_named(schema) if schema else self.contract_for(full[0])
        return Subscription(
            self.settings,
            full,
            group=group or f"inferstream-subscribe-{uuid.uuid4().hex[:12]}",
            from_beginning=from_beginning,
            max_records=max_records,
            idle_timeout=idle_timeout,
            codec=codec_for(contract) if decode and contract is not None else None,
            metrics=self.metrics,
            stop_at_end=stop_at_end,
        )

    def subscribe_predictions(
        self,
        model: str | None = None,
        version: str | None = None,
        *,
        shadow: bool = False,
        **options: Any,
    ) -> Iterator[Prediction]:
        """Predictions of one model (``name`` or ``name:version``), as they arrive.

        ``options`` are those of :meth:`subscribe` (group, from_beginning, idle_timeout, ...).
        """
        name, _, pinned = (model or "").partition(":")
        wanted_version = version or pinned or None
        topic = "predictions-shadow" if shadow else "predictions"
        with self.subscribe(topic, schema="prediction", **options) as stream:
            for message in stream:
                record = message.record
                if not isinstance(record, Prediction):
                    continue
                if (name and record.model != name) or (wanted_version and record.version != wanted_version):
                    continue
                yield record

    # -- drift alerts -----------------------------------------------------------------

    def alerts(
        self,
        *,
        monitor: str | None = None,
        from_beginning: bool = False,
        group: str | None = None,
        idle_timeout: float | None = None,
        max_records: int | None = None,
    ) -> Iterator[DriftAlert]:
        """Drift alerts as they arrive (of one monitor when given); a replayed window's repeat is dropped."""
        # Imported on use: the monitoring package pulls in scipy, which the SDK need not pay for.
        from inferstream.monitoring.alerts import unique_alerts

        with self.subscribe(
            "drift-alerts", schema="drift-alert", group=group, from_beginning=from_beginning, idle_timeout=idle_timeout
        ) as stream:
            yield from unique_alerts((m.record for m in stream), monitor=monitor, max_records=max_records)

    # -- dead letters -----------------------------------------------------------------

    def dead_letters(
        self,
        *,
        max_records: int | None = None,
        source_topic: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[DeadLetter]:
        """The records on the dead-letter topic now, oldest first (at most ``max_records`` of them).

        Only those from ``source_topic``, failed in ``stage``, whose error class or message
        contains ``reason`` (case-insensitive), dead-lettered at or after ``since`` and before
        ``until`` (naive times are UTC), when given.
        """
        wanted = self._letter_filter(source_topic, stage, reason, since, until)
        topic = self.settings.topics.platform_topics()["dead-letters"]
        count = 0
        for message in read_bounded(self.settings, topic):
            letter = from_message(message)
            if not wanted.matches(letter):
                continue
            yield letter
            count += 1
            if max_records is not None and count >= max_records:
                return

    def _letter_filter(
        self,
        source_topic: str | None,
        stage: str | None,
        reason: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> DeadLetterFilter:
        return DeadLetterFilter(
            source_topic=self.topic(source_topic) if source_topic else None,
            stage=stage,
            reason=reason,
            since=since,
            until=until,
        )

    def replay_dead_letters(
        self,
        *,
        source_topic: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_records: int | None = None,
        group: str = "inferstream-dlq-replay",
        idle_timeout: float = 5.0,
    ) -> ReplayReport:
        """Re-send dead letters to their source topic with the attempt count raised.

        The filters are those of :meth:`dead_letters`; ``max_records`` counts the dead
        letters read, filtered out or not. Dead letters at ``dead_letters.max_attempts``
        stay where they are (no loops); truncated ones are replayed from their spill file
        when there is one. Progress is kept in ``group``, so each dead letter is replayed once.
        """
        report = ReplayReport()
        max_attempts = self.settings.dead_letters.max_attempts
        wanted = self._letter_filter(source_topic, stage, reason, since, until)
        subscription = self.subscribe(
            self.settings.topics.platform_topics()["dead-letters"],
            group=group,
            from_beginning=True,
            max_records=max_records,
            idle_timeout=idle_timeout,
            decode=False,
        )
        producer = self.producer
        with subscription:
            for message in (m for batch in subscription.raw() for m in batch):
                report.read += 1
                letter = from_message(message)
                if not wanted.matches(letter):
                    report.filtered += 1
                    continue
                if letter.attempt >= max_attempts:
                    report.exhausted += 1
                    continue
                if not _TOPIC_NAME.fullmatch(letter.source_topic) or not self._topic_exists(letter.source_topic):
                    # Nowhere to send it back to (no source, or a topic gone): it stays, counted.
                    log.warning("dead letter %s: source topic %r cannot take it back", letter.id, letter.source_topic)
                    report.unrecoverable += 1
                    continue
                payload = letter.payload
                if letter.truncated:
                    spilled = _read_spill(letter)
                    if spilled is None:
                        report.unrecoverable += 1
                        continue
                    payload = spilled
                headers = [(k, v) for k, v in letter.original_headers if k != ATTEMPT_HEADER]
                headers.append((ATTEMPT_HEADER, str(letter.attempt + 1).encode()))
                producer.produce(letter.source_topic, payload, key=letter.original_key, headers=headers)
                report.replayed += 1
                subscription.before_commit(producer.flush)
        return report

    # -- lifecycle --------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until everything produced is acknowledged (raises DeliveryError otherwise)."""
        if self._producer is not None:
            self._producer.flush()

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        filters: Filters | None = None,
        hybrid: bool = False,
        num_candidates: int | None = None,
    ) -> SearchResult:
        """Search the vector index (Elasticsearch, or the embedded store) for ``text``.

        The query is embedded with the model version that built the index; ``hybrid``
        fuses kNN with BM25 on the text (reciprocal rank fusion). See :mod:`inferstream.search`.
        """
        return self.searcher.search(text, k, filters=filters, hybrid=hybrid, num_candidates=num_candidates)

    def retrieve(self, question: str, k: int = 5, *, filters: Filters | None = None) -> list[Passage]:
        """Passages (text + source) for a RAG prompt: hybrid search over the index."""
        return self.searcher.retrieve(question, k, filters=filters)

    @property
    def searcher(self) -> Searcher:
        """The client's searcher (opens the index on first use)."""
        if self._searcher is None:
            from inferstream.search import Searcher

            self._searcher = Searcher(self.settings)
        return self._searcher

    def close(self) -> None:
        """Flush and release the producer (and the reply listener, routes and searcher)."""
        if self._routes is not None:
            routes, self._routes = self._routes, None
            routes.close()
        if self._searcher is not None:
            searcher, self._searcher = self._searcher, None
            searcher.close()
        if self._replies is not None:
            replies, self._replies = self._replies, None
            replies.close()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            producer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_spill(letter: DeadLetter) -> bytes | None:
    from pathlib import Path

    if not letter.spill_path:
        return None
    path = Path(letter.spill_path)
    return path.read_bytes() if path.is_file() else None


class _ProduceSink:
    """Validates batches, produces the good records and handles the bad per ``on_error``."""

    def __init__(
        self,
        client: Client,
        topic: str,
        codec: Codec[Any],
        on_error: OnError,
        headers: list[tuple[str, bytes]],
        report: ProduceReport,
        lines: bool,
    ) -> None:
        self.client = client
        self.topic = topic
        self.codec = codec
        self.on_error = on_error
        self.headers = headers
        self.report = report
        self.lines = lines
        self.missing_topic = False
        self._dlq: DeadLetterWriter | None = None

    @property
    def dlq(self) -> DeadLetterWriter:
        if self._dlq is None:
            self._dlq = DeadLetterWriter(
                self.client.settings, stage="produce", producer=self.client.producer, metrics=self.client.metrics
            )
        return self._dlq

    def send(self, batch: Sequence[SourceRecord | Mapping[str, Any] | Contract]) -> None:
        # A batch's records are acyclic and freed by reference counting: keeping the cyclic
        # collector out of the way while thousands of them are alive saves ~1.5 µs a record.
        with paused_gc():
            self._send_batch(batch)

    def _send_batch(self, batch: Sequence[SourceRecord | Mapping[str, Any] | Contract]) -> None:
        first = self.report.read + 1
        self.report.read += len(batch)
        if not any(isinstance(item, SourceRecord) for item in batch):
            # The SDK's path: mappings or records, positions by index.
            self._send(batch, [None] * len(batch), first)
            return
        values: list[Any] = []
        where: list[SourceRecord | None] = []
        for item in batch:
            if isinstance(item, SourceRecord):
                if item.error is not None:
                    if self.on_error == "fail":  # the records before it are produced first
                        self._send(values, where, first)
                        values, where = [], []
                    problem = RecordValidationError(
                        self.codec.name,
                        [FieldProblem(field="", reason=item.error)],
                        line=item.line if self.lines else None,
                        raw=item.raw,
                    )
                    self.reject(item, problem, item.error, ())
                    continue
                values.append(item.value)
                where.append(item)
            else:
                values.append(item)
                where.append(None)
        self._send(values, where, first)

    def _send(self, values: Sequence[Any], where: Sequence[SourceRecord | None], first: int) -> None:
        result = self.codec.validate_batch(values)
        records, positions, errors = result.records, result.positions, result.errors
        if errors and self.on_error == "fail":
            # Records before the first bad one are produced, then the bad one raises.
            first_bad = min(errors)
            self._produce_records([r for i, r in zip(positions, records, strict=True) if i < first_bad])
            errors = {first_bad: errors[first_bad]}
        for index, invalid in errors.items():
            source = where[index]
            line = source.line if source is not None else first + index
            problem = RecordValidationError(self.codec.name, invalid.problems, line=line if self.lines else None)
            reason = "; ".join(str(p) for p in problem.problems)
            self.reject(source, problem, reason, problem.fields, original=values[index], position=line)
        if self.missing_topic:
            for index, record in zip(positions, records, strict=True):
                self.reject(
                    where[index],
                    TopicError(f"topic {self.topic} does not exist"),
                    f"topic {self.topic} does not exist",
                    (),
                    original=record,
                    position=first + index,
                )
            return
        self._produce_records(records)

    def _produce_records(self, records: Sequence[Contract]) -> None:
        if not records:
            return
        contract = self.codec.contract
        if contract.key is Contract.key:  # the key is the key field (librdkafka encodes str keys)
            keys: list[bytes | str | None] = [getattr(r, contract.key_field) for r in records]
        else:
            keys = [r.key() for r in records]
        producer = self.client.producer
        producer.produce_many(self.topic, self.codec.encode_many(records), keys, self.headers)
        self.report.produced += len(records)
        producer.poll(0)

    def reject(
        self,
        source: SourceRecord | None,
        error: Exception,
        reason: str,
        fields: tuple[str, ...],
        original: Any = None,
        position: int | None = None,
    ) -> None:
        line = source.line if source is not None else position
        if self.on_error == "fail":
            self.client.producer.flush()
            raise error
        dead = False
        if self.on_error == "dlq":
            raw = source.raw if source is not None and source.raw else _raw_of(original, self.codec)
            value = source.value if source is not None and source.value is not None else original
            key = _key_of(value, self.codec)
            self.dlq.send(payload=raw, error=error, source_topic=self.topic, key=key, stage="produce")
            dead = True
        self.report.rejected.append(Rejected(line=line, reason=reason, fields=fields, dead_lettered=dead))

    def finish(self) -> None:
        producer = self.client.producer
        try:
            producer.flush()
        except DeliveryError as exc:
            self._delivery_failures(list(exc.failures))
        if self._dlq is not None:
            self._dlq.flush()

    def _delivery_failures(self, failures: list[DeliveryFailure]) -> None:
        # Records the broker refused (too large, topic gone): dead-letter or report them.
        own = [f for f in failures if f.topic == self.topic]
        if len(own) != len(failures):
            raise DeliveryError(f"{len(failures) - len(own)} dead letters were not delivered", failures=failures)
        self.report.produced -= len(own)
        # Delivery reports do not carry headers back: every record here had the sink's.
        own = self._with_headers(self._retry_alone(self._with_headers(own)))
        for failure in own:
            reason = f"{failure.reason} ({failure.code})"
            if self.on_error == "fail":
                raise failure.error()
            dead = False
            if self.on_error == "dlq":
                self.dlq.send(
                    payload=failure.value,
                    error=failure.error(),
                    source_topic=self.topic,
                    key=failure.key,
                    headers=failure.headers,
                    stage="produce",
                )
                dead = True
            self.report.rejected.append(Rejected(line=None, reason=reason, dead_lettered=dead))
        if self._dlq is not None:
            self._dlq.flush()

    def _with_headers(self, failures: list[DeliveryFailure]) -> list[DeliveryFailure]:
        return [f if f.headers else dataclasses.replace(f, headers=list(self.headers)) for f in failures]

    def _retry_alone(self, failures: list[DeliveryFailure]) -> list[DeliveryFailure]:
        """Resend records refused as too large one by one: the broker refuses a whole batch
        when the batch is too large, so most of its records fit when sent alone."""
        producer = self.client.producer
        remaining = []
        for failure in failures:
            if failure.code != "MSG_SIZE_TOO_LARGE" or failure.tag == _ALONE:
                remaining.append(failure)
                continue
            producer.produce(failure.topic, failure.value, failure.key, failure.headers, tag=_ALONE)
            try:
                producer.flush()
                self.report.produced += 1
            except DeliveryError as exc:
                remaining.extend(exc.failures)
        return remaining


_ALONE = "sent-alone"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_REPR = 1 << 20
#: Seconds of a subscription's group join that its idle timeout does not count.
_JOIN_ALLOWANCE_S = 30.0


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _key_of(value: Any, codec: Codec[Any]) -> bytes | None:
    # Keep the bad record's key when it has a usable id, so its dead letter is findable.
    if isinstance(value, Contract):
        return value.key()
    if isinstance(value, Mapping):
        key = value.get(codec.contract.key_field)
        if isinstance(key, str) and key:
            return key.encode("utf-8", "backslashreplace")  # a lone surrogate must not stop the dead letter
        if isinstance(key, int) and INT_MIN <= key <= INT_MAX:
            return str(key).encode()
    return None


def _raw_of(original: Any, codec: Codec[Any]) -> bytes:
    # The bytes a bad record would have had: JSON, as close as its values allow.
    import json

    try:
        if isinstance(original, Contract):
            return codec.encode(original)
        return json.dumps(original, default=str, separators=(",", ":")).encode()
    except (ContractError, ValueError, RecursionError):  # a lone surrogate, a huge or deep value
        return repr(original)[:_MAX_REPR].encode("utf-8", "backslashreplace")


class Subscription:
    """An iterator over consumed records that commits what it has handed out."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        group: str,
        from_beginning: bool,
        max_records: int | None,
        idle_timeout: float | None,
        codec: Codec[Any] | None,
        metrics: Metrics | None,
        batch_size: int = 500,
        stop_at_end: bool = False,
    ) -> None:
        self.consumer = Consumer(
            settings,
            topics,
            group_id=group,
            from_beginning=from_beginning,
            metrics=metrics,
            stage="subscribe",
            starts_now=True,
            # The end of a partition is reported: one with nothing left to read is done too.
            overrides={"enable.partition.eof": True} if stop_at_end else None,
        )
        self._ends: dict[tuple[str, int], int] | None = None
        if stop_at_end:
            try:
                self._ends = self.consumer.end_offsets()
            except BaseException:
                self.consumer.close()
                raise
        #: True once the iteration ended at the end offsets read at the start (``stop_at_end``).
        self.reached_end = False
        self.group = group
        self._codec = codec
        self._max = max_records
        self._idle = idle_timeout
        self._batch_size = batch_size
        self._buffer: list[confluent_kafka.Message] = []
        self._index = 0
        self._handed = 0
        self._before_commit: Callable[[], None] | None = None
        self._closed = False
        self._uncommitted = False
        self._last_commit = time.monotonic()
        self._first_poll: float | None = None
        #: Longest time between commits to the broker while iterating.
        self.commit_interval_s = 1.0

    def before_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before each commit (e.g. flush a producer the loop feeds)."""
        self._before_commit = hook

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Received:
        if self._closed:
            raise StopIteration
        try:
            if self._max is not None and self._handed >= self._max:
                raise StopIteration
            if self._index >= len(self._buffer):
                self._commit()
                self._fill()
        except StopIteration:
            self.close()  # exhausted: commit and leave the group so others can take over
            raise
        message = self._buffer[self._index]
        self._index += 1
        self._handed += 1
        return self._received(message)

    def raw(self) -> Iterator[list[confluent_kafka.Message]]:
        """Batches of raw messages (the fastest way through), committed as you go."""
        try:
            while not self._closed and (self._max is None or self._handed < self._max):
                self._commit()
                try:
                    self._fill()
                except StopIteration:
                    return
                batch = self._buffer[self._index :]
                if self._max is not None:
                    batch = batch[: self._max - self._handed]
                self._index += len(batch)
                self._handed += len(batch)
                yield batch
        finally:
            self.close()

    def _fill(self) -> None:
        waited = 0.0
        while True:
            if self.consumer.stopping:
                raise StopIteration
            if self._at_ends():
                self.reached_end = True
                raise StopIteration
            timeout = 1.0 if self._idle is None else min(1.0, max(self._idle - waited, 0.05))
            started = time.monotonic()
            if self._first_poll is None:
                self._first_poll = started
            batch = self._within_ends(self.consumer.consume(self._batch_size, timeout))
            if batch:
                self._buffer, self._index = batch, 0
                return
            # Idle time counts once the group has given this subscription its partitions (or
            # after _JOIN_ALLOWANCE_S of joining): a slow join is not an idle stream.
            counted_from = started if self.consumer.assignment() else self._first_poll + _JOIN_ALLOWANCE_S
            waited += max(time.monotonic() - max(started, counted_from), 0.0)
            if self._idle is not None and waited >= self._idle:
                raise StopIteration

    def _within_ends(self, batch: list[confluent_kafka.Message]) -> list[confluent_kafka.Message]:
        # With stop_at_end: a partition is done at its last record before the end read at the
        # start; records after it are not handed out (nor committed: the next read starts there).
        ends = self._ends
        if ends is None:
            return batch
        kept = []
        for message in batch:
            where = (message.topic() or "", message.partition() or 0)
            offset = message.offset() or 0
            end = ends.get(where, 0)  # a partition added since the start: all of it came after
            if offset < end:
                kept.append(message)
            if offset + 1 >= end:
                self.consumer.at_end.add(where)
        return kept

    def _at_ends(self) -> bool:
        if self._ends is None:
            return False
        owned = self.consumer.assignment()
        return bool(owned) and all(where in self.consumer.at_end for where in owned)

    def _commit(self, *, force: bool = False) -> None:
        # Offsets of handed-out records are stored each batch and committed to the broker
        # at most every `commit_interval_s` (and on close): a synchronous commit per batch
        # would cost more than reading the batch.
        handed = self._buffer[: self._index]
        if handed:
            if self._before_commit is not None:
                self._before_commit()
            self.consumer.store(handed)
            self._buffer, self._index = self._buffer[self._index :], 0
            self._uncommitted = True
        now = time.monotonic()
        if self._uncommitted and (force or now - self._last_commit >= self.commit_interval_s):
            self.consumer.commit()
            self._uncommitted = False
            self._last_commit = now

    def _received(self, message: confluent_kafka.Message) -> Received:
        value = message.value()
        headers = headers_of(message)
        record: Contract | None = None
        error = None
        if self._codec is not None and value is not None:
            try:
                record = self._codec.decode(value, headers=headers)
            except ContractError as exc:
                error = str(exc)
        _ts_type, ts = message.timestamp()
        key = message.key()
        return Received(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            timestamp_ms=ts if ts and ts > 0 else None,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
            record=record,
            error=error,
        )

    def stop(self) -> None:
        """End the iteration after the current record (thread- and signal-safe)."""
        self.consumer.stop()

    def close(self) -> None:
        """Commit what was handed out and leave the group (done for you when iteration ends)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit(force=True)
        finally:
            self.consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
