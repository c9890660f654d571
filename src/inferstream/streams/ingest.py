"""The ingest processor: events in, embedding and inference requests out, the rest dead-lettered.

A faust-streaming app reads the events topic in the consumer group
``ingest.group``. Each record is decoded and validated against the ``event``
contract, then routed by the rules of ``ingest.rules`` (event type → model
version, by text or by features):

- a rule with ``input = "text"`` makes an ``EmbeddingRequest`` of the event's text
  (document id = event id) on the embedder's request topic;
- a rule with ``input = "features"`` makes an ``InferenceRequest`` of its features;
- a rule with ``input = "inputs"`` makes an ``InferenceRequest`` of its features and its
  text (under ``text``): what a chain that starts with an embedder reads.

Bad bytes, a record that fails its contract, an event type no rule covers, and an
event without the input its rules need go to the dead-letter topic with the
original bytes and the reason; the stream goes on. Counts reconcile: events in =
events routed + dead letters (``IngestStats``).

At-least-once and safe to repeat: a request's id is derived from the event id and
the target model version, so a replay writes the same ids (workers and sinks are
keyed by them). Outputs go through the platform's confluent-kafka ``Producer``;
an event is acknowledged to faust (so its offset may be committed) only once its
outputs are acknowledged by the broker. While the broker refuses them, delivery is
retried with backoff and nothing is committed.

Traces: an event's ``traceparent`` goes on with the requests it makes. With
``tracing.enabled``, each event is a span of its own (``ingest <events topic>``: decoded,
routed, its requests queued; failed when dead-lettered), the child of that header, and its
requests name the span as their parent; an event without one starts its trace here.

The app is built by :func:`build_app`, never at import (faust reads ``sys.argv`` in
its own CLI, which this module does not use); faust's web server is off and its
data directory lies under ``state_dir``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferstream.config import IngestRule, Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.connectors.kafka.producer import DeliveryFailure, Producer
from inferstream.errors import ConfigError, ContractError, DeliveryError, InferstreamError, RoutingError
from inferstream.metrics import Metrics
from inferstream.schemas.codec import Codec, Headers, codec_for
from inferstream.schemas.records import EmbeddingRequest, Event, InferenceRequest
from inferstream.serving.routes import RouteTable
from inferstream.tracing import TRACEPARENT, Batch, carried, flush, header_of, spans_for

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

STAGE = "ingest"
_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: a request for a model version."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def request_id_for(event_id: str, model: str, version: str) -> str:
    """The id of the request an event makes for a model version: the same on every replay."""
    return hashlib.sha256(f"{event_id}\n{model}\n{version}".encode()).hexdigest()[:32]


class IngestRouter:
    """Turns an event record's bytes into requests by the routing rules (no I/O)."""

    def __init__(self, settings: Settings, routes: RouteTable | None = None) -> None:
        self.settings = settings
        #: Resolves rules without a version (the model's route on the control topic).
        self.routes = routes
        self.rules: dict[str, list[IngestRule]] = {}
        for rule in settings.ingest.rules:
            self.rules.setdefault(rule.type, []).append(rule)
        self._events: Codec[Event] = codec_for(Event)
        self._embedding: Codec[EmbeddingRequest] = codec_for(EmbeddingRequest)
        self._inference: Codec[InferenceRequest] = codec_for(InferenceRequest)

    def targets(self) -> set[tuple[str, str]]:
        """The (model, version) pairs the rules write to now (routed ones by their current route)."""
        found: set[tuple[str, str]] = set()
        for rule in (r for rs in self.rules.values() for r in rs):
            if rule.version is not None:
                found.add((rule.model, rule.version))
            elif self.routes is not None and (route := self.routes.get(rule.model)) is not None:
                found.update((rule.model, v.version) for v in route.versions)
        return found

    def topics(self) -> list[str]:
        """The request topics the rules write to."""
        return sorted(self.settings.topics.request_topic(m, v) for m, v in self.targets())

    def route(self, value: bytes | None, headers: Headers | None = None, trace: Batch | None = None) -> list[Output]:
        """The requests an event record makes.

        They carry the event's ``traceparent`` on, or with ``trace`` (the event's span) what
        :func:`inferstream.tracing.carried` says.

        Raises ``ContractError`` (``RecordValidationError`` with the fields at fault)
        for bytes that are not a valid event, ``RoutingError`` for an event no rule covers.
        """
        if not value:
            raise ContractError("the record has no value (an event is a JSON object)")
        event = self._events.decode(value, headers=headers)
        rules = self.rules.get(event.type)
        if not rules:
            covered = ", ".join(sorted(self.rules)) or "none"
            raise RoutingError(
                f"no ingest rule for event type {event.type!r} (types with rules: {covered}); "
                "add one to ingest.rules and replay the dead letter"
            )
        outputs = [output for rule in rules if (output := self._request(event, rule)) is not None]
        if not outputs:
            wanted = " or ".join(sorted({rule.input for rule in rules}))
            raise RoutingError(f"event {event.id!r} of type {event.type!r} has no {wanted}, which its rules route")
        # The event's trace goes on with the requests it makes (a malformed traceparent is dropped).
        carry = carried(trace, header_of(headers))
        if carry is not None:
            for output in outputs:
                output.headers.append((TRACEPARENT, carry))
        return outputs

    def _request(self, event: Event, rule: IngestRule) -> Output | None:
        if rule.version is not None:
            version = rule.version
            request_id = request_id_for(event.id, rule.model, version)
        else:  # routed: the id does not depend on the version, the version on the id
            if self.routes is None:
                raise RoutingError(f"the rule for {event.type!r} has no version and no routes were given")
            request_id = request_id_for(event.id, rule.model, "")
            try:
                version = self.routes.resolve(rule.model, request_id)
            except ConfigError as exc:
                raise RoutingError(str(exc)) from None
        common = {
            "request_id": request_id,
            "event_time": event.event_time,
            "model": rule.model,
            "version": version,
            "source_event_id": event.id,
            "attributes": event.attributes,
        }
        topic = self.settings.topics.request_topic(rule.model, version)
        if rule.input == "text":
            if not event.text:
                return None
            embedding = self._embedding.validate({**common, "document_id": event.id, "text": event.text})
            return Output(topic, embedding.key(), self._embedding.encode(embedding), [self._embedding.header])
        inputs: dict[str, object] = dict(event.features or {})
        if rule.input == "inputs" and event.text:
            inputs["text"] = event.text
        if not inputs:
            return None
        inference = self._inference.validate({**common, "inputs": inputs})
        return Output(topic, inference.key(), self._inference.encode(inference), [self._inference.header])


@dataclass
class IngestStats:
    """What the processor did; ``events == routed + dead_letters`` always."""

    events: int = 0
    routed: int = 0
    requests: int = 0
    dead_letters: int = 0


class IngestProcessor:
    """Routes event records and keeps their outputs until the broker acknowledged them.

    ``handle()`` queues one record's outputs (or its dead letter); ``deliver()``
    blocks until everything queued is acknowledged, retrying with backoff. The faust
    agent acknowledges events only after ``deliver()`` returned.
    """

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        routed = any(rule.version is None for rule in settings.ingest.rules)
        self._routes = RouteTable(settings).start() if routed else None
        self.router = IngestRouter(settings, self._routes)
        self.metrics = metrics
        self.events_topic = settings.topics.platform_topics()["events"]
        self.producer = Producer(settings, metrics=metrics, stage=STAGE)
        self.dead_letters = DeadLetterWriter(settings, stage=STAGE, producer=self.producer, metrics=metrics)
        self.stats = IngestStats()
        # Spans when tracing is on (None: requests only carry their event's traceparent on).
        self._spans = spans_for(settings.tracing, "inferstream-ingest")
        self._span_name = f"ingest {self.events_topic}"

    def ensure_topics(self) -> None:
        """Create the request topics of the rules (idempotent); fail clearly without events."""
        if not self.router.rules:
            log.warning("ingest.rules is empty: every event will be dead-lettered")
        admin = TopicAdmin(self.settings)
        if not admin.exists(self.events_topic):
            raise ConfigError(
                f"topic {self.events_topic} does not exist: create it with `inferstream topics create --platform`"
            )
        for model, version in self.router.targets():
            admin.ensure_request_topic(model, version)

    def handle(
        self,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: Headers | None,
        partition: int | None,
        offset: int | None,
    ) -> None:
        """Route one event record: queue its requests, or its dead letter."""
        trace = None if self._spans is None else self._span_of(headers, partition, offset)
        try:
            self._route(value, key, headers, partition, offset, trace)
        finally:
            if trace is not None:
                trace.end()

    def _span_of(self, headers: Headers | None, partition: int | None, offset: int | None) -> Batch:
        """The event's span (tracing on), the child of its ``traceparent``, else a new trace's root."""
        assert self._spans is not None
        attributes: dict[str, Any] = {"messaging.system": "kafka", "messaging.destination.name": self.events_topic}
        if partition is not None and offset is not None:
            attributes["messaging.destination.partition.id"] = str(partition)
            attributes["messaging.kafka.offset"] = offset
        return self._spans.record(self._span_name, header_of(headers), time.monotonic(), attributes)

    def _route(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        partition: int | None,
        offset: int | None,
        trace: Batch | None,
    ) -> None:
        self.stats.events += 1
        if self.metrics is not None:
            self.metrics.records_in.labels(self.events_topic, STAGE).inc()
        try:
            outputs = self.router.route(value, headers, trace)
        except Exception as exc:  # anything about this record: dead-lettered, the stream goes on
            if trace is not None:
                trace.fail(exc)
            if not isinstance(exc, ContractError):
                log.warning("event at %s offset %s could not be routed: %r", partition, offset, exc)
            self.dead_letters.send(
                payload=value,
                error=exc,
                source_topic=self.events_topic,
                key=key,
                headers=headers,
                partition=partition,
                offset=offset,
            )
            self.stats.dead_letters += 1
            return
        for output in outputs:
            self.producer.produce(output.topic, output.value, output.key, output.headers)
        self.stats.routed += 1
        self.stats.requests += len(outputs)
        if self.metrics is not None:
            self.metrics.handled(STAGE, "out")

    def deliver(self) -> None:
        """Wait until every queued record is acknowledged; retry what failed, with backoff.

        A record the broker can never take (too large, topic gone) is dead-lettered
        instead; while the broker is down this keeps waiting, so nothing is acknowledged.
        """
        attempt = 0
        while True:
            try:
                self.producer.flush()
                return
            except DeliveryError as exc:
                failures = list(exc.failures)
            delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            attempt += 1
            log.warning(
                "%d ingest output(s) not delivered (%s); retrying in %.1fs, nothing is committed meanwhile",
                len(failures) or 1,
                failures[0].reason if failures else "broker unreachable",
                delay,
            )
            time.sleep(delay)
            self._resend(failures)

    def _resend(self, failures: Iterable[DeliveryFailure]) -> None:
        for failure in failures:
            if failure.retriable or failure.topic == self.dead_letters.topic:
                self.producer.produce(failure.topic, failure.value, failure.key, failure.headers)
                continue
            # The request can never be written (too large, topic gone): keep it as a dead letter.
            self.dead_letters.send(
                payload=failure.value,
                error=failure.error(),
                source_topic=failure.topic,
                key=failure.key,
                headers=failure.headers,
            )

    def close(self) -> None:
        """Deliver what is queued and release the producer (and the routes)."""
        self.deliver()
        self.producer.close()
        if self._routes is not None:
            self._routes.close()


def build_app(settings: Settings, *, metrics: Metrics | None = None) -> tuple[faust.App, IngestProcessor]:
    """The faust app of the ingest processor and the processor it drives (nothing starts here)."""
    import faust

    processor = IngestProcessor(settings, metrics=metrics)
    config = settings.ingest
    servers = [server.strip() for server in settings.kafka.bootstrap_servers.split(",") if server.strip()]
    app = faust.App(
        config.group,
        broker=[f"kafka://{server}" for server in servers],
        broker_credentials=_credentials(settings),
        datadir=str(settings.state_dir / "faust"),
        web_enabled=False,
        web_bind="127.0.0.1",
        # Topics are the platform's to create; faust's leader topic is not needed here.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=config.commit_interval_s,
        # faust keeps its own 60 s otherwise: a killed processor's partitions would wait that long.
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_max_poll_interval=settings.kafka.max_poll_interval_ms / 1000,
        # At shutdown, events whose outputs are not acknowledged yet stay unacknowledged
        # (their offsets uncommitted: replayed next time, with the same request ids)
        # instead of faust waiting for them forever once the flush timer has stopped.
        stream_wait_empty=False,
        store="memory://",
        autodiscover=False,
    )
    app.transport = _read_committed_transport(app)
    topic = app.topic(
        processor.events_topic, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    pending: list[Any] = []
    lock = asyncio.Lock()

    async def deliver(stream: Any) -> None:
        async with lock:
            if not pending:
                return
            batch = pending[:]
            del pending[:]
            # Blocking work (waiting for acknowledgements) stays off the event loop.
            await asyncio.to_thread(processor.deliver)
            for event in batch:
                await stream.ack(event)

    streams: list[Any] = []

    @app.agent(topic, name="ingest")
    async def ingest(stream: Any) -> None:
        manual = stream.noack()
        streams.append(manual)
        async for event in manual.events():
            message = event.message
            processor.handle(
                message.value,
                key=message.key,
                headers=list(message.headers or ()),
                partition=message.partition,
                offset=message.offset,
            )
            pending.append(event)
            if len(pending) >= config.batch_size:
                await deliver(manual)

    async def flush() -> None:
        # Events arriving slower than a batch still get delivered (and acknowledged) soon.
        for stream in streams:
            await deliver(stream)

    app.timer(interval=config.flush_interval_s)(flush)

    return app, processor


def _read_committed_transport(app: Any) -> Any:
    """faust's Kafka transport, its consumer reading committed records only.

    faust reads ``read_uncommitted`` unless its own processing is transactional, so the
    records of an aborted transaction (a replay cut short and run again, an
    exactly-once worker's batch rolled back) would be ingested, and their committed
    copies after them. Every other consumer of the platform reads committed records
    (``KafkaSettings.consumer_config``); this makes ingest one of them.
    """
    from faust.transport.drivers import aiokafka as driver

    class Thread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._isolation_level = "read_committed"  # read by start(), which builds the fetcher
            return consumer

    class ReadCommittedConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return Thread(self, loop=self.loop, beacon=self.beacon)

    class ReadCommittedTransport(driver.Transport):
        Consumer = ReadCommittedConsumer

    return ReadCommittedTransport(app.conf.broker_consumer, app)


def run(settings: Settings, *, metrics: Metrics | None = None) -> IngestStats:
    """Run the ingest processor until SIGINT/SIGTERM; returns its counts."""
    import faust

    app, processor = build_app(settings, metrics=metrics)
    processor.ensure_topics()
    worker = faust.Worker(app, loglevel="WARNING", override_logging=False, redirect_stdouts=False)
    code: Any = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # faust's worker ends the process its own way: keep the code
        code = exc.code
    finally:
        processor.close()
        flush()  # the last spans, when tracing is on
    if code not in (None, 0):
        raise InferstreamError(f"the ingest processor crashed (exit code {code}): see the log above")
    return processor.stats


def _credentials(settings: Settings) -> Any:
    import faust

    security = settings.kafka.security
    if security.protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if security.protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(security.ssl_ca_location) if security.ssl_ca_location else None)
        if security.ssl_certificate_location and security.ssl_key_location:
            password = security.ssl_key_password.get_secret_value() if security.ssl_key_password else None
            context.load_cert_chain(
                str(security.ssl_certificate_location), str(security.ssl_key_location), password=password
            )
    if security.protocol == "SSL":
        return faust.SSLCredentials(context)
    if security.sasl_mechanism in (None, "OAUTHBEARER"):
        raise ConfigError("the ingest processor supports SASL PLAIN and SCRAM; set kafka.security.sasl_mechanism")
    password = security.sasl_password.get_secret_value() if security.sasl_password else None
    return faust.SASLCredentials(
        username=security.sasl_username, password=password, mechanism=security.sasl_mechanism, ssl_context=context
    )


__all__ = [
    "IngestProcessor",
    "IngestRouter",
    "IngestStats",
    "Output",
    "build_app",
    "request_id_for",
    "run",
]
