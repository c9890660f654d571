"""The Python SDK: produce records, subscribe to topics, manage topics and dead letters.

>>> from inferstream import Client
>>> with Client() as client:                                         # doctest: +SKIP
...     client.topics.ensure_platform_topics()
...     client.produce("events", [{"id": "e1", "type": "review", "text": "great"}])
...     for message in client.subscribe("events", from_beginning=True, max_records=1):
...         print(message.record)

:class:`Client` is a facade: each concern lives in a private module of :mod:`inferstream._client` (producing,
subscribing, request/reply, labels, dead letters), search in :mod:`inferstream.search`: new features add modules,
not lines.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from inferstream._client.alerts import alerts as alerts_of
from inferstream._client.batches import predict_batch
from inferstream._client.core import Core, Lazy
from inferstream._client.dead_letters import ReplayReport, letter_filter, read_dead_letters, replay_dead_letters
from inferstream._client.forward import forward
from inferstream._client.labels import produce_labels
from inferstream._client.produce import produce
from inferstream._client.produce_report import OnError, ProduceReport, Progress, Rejected
from inferstream._client.produce_sink import paused_gc
from inferstream._client.requests import Requests
from inferstream._client.retrieval_eval import evaluate_retrieval
from inferstream._client.subscribe import Received, Subscription, open_subscription, predictions_of
from inferstream._client.topics import TopicNames
from inferstream.closing import Closing
from inferstream.config import Settings
from inferstream.connectors.files import SourceRecord
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.groups import GroupAdmin
from inferstream.connectors.kafka.producer import Producer
from inferstream.metrics import Metrics
from inferstream.schemas.records import Contract, DeadLetter, Embedding, Prediction
from inferstream.search import Searcher
from inferstream.serving.routes import RouteTable

__all__ = [
    "Client",
    "OnError",
    "ProduceReport",
    "Progress",
    "Received",
    "Rejected",
    "ReplayReport",
    "Subscription",
    "paused_gc",
]


class Client(Closing):
    """The entry point of the SDK; one per process is plenty (it is thread-safe to produce)."""

    def __init__(self, settings: Settings | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings or Settings.load()
        self.metrics = metrics
        #: Names this client's reply topic (``replies.<client_id>``).
        self.client_id = f"{self.settings.kafka.client_id}-{uuid.uuid4().hex[:12]}"
        # Each resource opens on first use: a client that only produces never reads the routes.
        self._producer = Lazy(lambda: Producer(self.settings, metrics=self.metrics))
        self._admin = Lazy(lambda: TopicAdmin(self.settings))
        self._groups = Lazy(lambda: GroupAdmin(self.settings))
        self._routes = Lazy(lambda: RouteTable(self.settings).start())
        self._searcher = Lazy(lambda: Searcher(self.settings))
        self._names = TopicNames(self.settings, self._admin.get)
        self._core = Core(self.settings, self.metrics, self._names, self._producer.get)
        self._requests = Requests(self._core, self.client_id, self._routes.get)

    @property
    def topics(self) -> TopicAdmin:
        """Topic administration (create, list, describe, ensure the platform's topics)."""
        return self._admin.get()

    @property
    def groups(self) -> GroupAdmin:
        """Consumer groups: their lag per partition, and resetting their offsets (``reset``)."""
        return self._groups.get()

    #: The client's topic names: :class:`~inferstream._client.topics.TopicNames` says what each does.
    topic = forward("_names", TopicNames.full)
    contract_for = forward("_names", TopicNames.contract_for)
    missing_topic_message = forward("_names", TopicNames.missing_message)
    closest_topic = forward("_names", TopicNames.closest)

    @property
    def producer(self) -> Producer:
        """The client's shared producer (idempotent, batched)."""
        return self._producer.get()

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
        return produce(self._core, topic, records, schema, on_error, headers, progress, lines=False)

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
        return produce(self._core, topic, records, schema, on_error, headers, progress, lines=True)

    #: Ground-truth labels to the labels topic: :func:`inferstream._client.labels.produce_labels`.
    produce_labels = forward("_core", produce_labels)

    def flush(self) -> None:
        """Wait until everything produced is acknowledged (raises DeliveryError otherwise)."""
        producer = self._producer.opened
        if producer is not None:
            producer.flush()

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
        return self._requests.prediction(model, version, inputs, timeout, request_id, attributes)

    async def predict_async(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | None = None,
        timeout: float = 10.0,
        request_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Prediction:
        """``predict()`` for asyncio code: sent from the event loop, the answer awaited without a thread."""
        return await self._requests.prediction_async(model, version, inputs, timeout, request_id, attributes)

    def embed(
        self,
        model: str,
        text: str,
        *,
        version: str | None = None,
        document_id: str | None = None,
        timeout: float = 10.0,
        attributes: Mapping[str, str] | None = None,
        index: bool = True,
    ) -> Embedding:
        """Embed one text with an embedder (``name:version``) and wait for the vector.

        The embedding also goes to the embeddings topic (and so to the index) under
        ``document_id`` (a fresh id by default); ``index=False`` only answers this call.
        """
        return self._requests.embedding(model, version, text, document_id, timeout, attributes, index)

    warm = forward("_requests", Requests.warm)  # the request path opened ahead of a first predict()

    #: Bulk scoring, many rows in one request: :func:`inferstream._client.batches.predict_batch`.
    predict_batch = forward("_requests", predict_batch)

    @property
    def routes(self) -> RouteTable:
        """The models' routes (from the control topic, kept current): alias → version by request id."""
        return self._routes.get()

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
        return open_subscription(
            self._core, topic, group, from_beginning, max_records, idle_timeout, decode, schema, stop_at_end
        )

    def subscribe_predictions(
        self, model: str | None = None, version: str | None = None, *, shadow: bool = False, **options: Any
    ) -> Iterator[Prediction]:
        """Predictions of one model (``name`` or ``name:version``), as they arrive.

        ``options`` are those of :meth:`subscribe` (group, from_beginning, idle_timeout, ...).
        """
        name, _, pinned = (model or "").partition(":")
        with self.subscribe("predictions-shadow" if shadow else "predictions", schema="prediction", **options) as s:
            yield from predictions_of(s, name, version or pinned or None)

    #: Drift alerts as they arrive: :func:`inferstream._client.alerts.alerts`.
    alerts = forward("_core", alerts_of)

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
        wanted = letter_filter(self._core, source_topic, stage, reason, since, until)
        yield from read_dead_letters(self._core, wanted, max_records)

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
        wanted = letter_filter(self._core, source_topic, stage, reason, since, until)
        return replay_dead_letters(self._core, wanted, max_records=max_records, group=group, idle_timeout=idle_timeout)

    #: Search the vector index for a text: :meth:`inferstream.search.Searcher.search`, on :attr:`searcher`.
    search = forward("searcher", Searcher.search)
    #: Passages for a RAG prompt: :meth:`inferstream.search.Searcher.retrieve`, on :attr:`searcher`.
    retrieve = forward("searcher", Searcher.retrieve)
    #: Retrieval quality against labels and exact search: :func:`inferstream._client.retrieval_eval.evaluate_retrieval`.
    evaluate_retrieval = forward("searcher", evaluate_retrieval)

    @property
    def searcher(self) -> Searcher:
        """The client's searcher (opens the index on first use)."""
        return self._searcher.get()

    def close(self) -> None:
        """Flush and release the producer (and the reply listener, routes and searcher)."""
        self._routes.close()
        self._searcher.close()
        self._requests.close()
        self._producer.close()
