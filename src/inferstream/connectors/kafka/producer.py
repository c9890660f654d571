"""An idempotent, batching producer whose delivery failures are never swallowed.

librdkafka reports each record's fate asynchronously. This producer keeps every
failure (with the record's bytes) until ``flush()``, which raises
``DeliveryError`` when any record was not acknowledged, so callers can retry or
dead-letter them. A full local queue is backpressure: ``produce()`` serves
delivery reports and waits instead of failing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import confluent_kafka

from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of, headers_of
from inferstream.errors import DeliveryError, KafkaError
from inferstream.metrics import Metrics

HeaderList = list[tuple[str, bytes | None]]
DeliveryCallback = Callable[[confluent_kafka.KafkaError | None, confluent_kafka.Message], None]

# Errors a producer reports for a record that no retry of the same bytes can fix.
_PERMANENT = {
    confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE,
    confluent_kafka.KafkaError._MSG_TIMED_OUT,
    confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
    confluent_kafka.KafkaError._UNKNOWN_TOPIC,
    confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
    confluent_kafka.KafkaError.INVALID_RECORD,
}


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A record the broker did not acknowledge, with everything needed to retry or dead-letter it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    code: str
    reason: str
    retriable: bool
    tag: Any = None

    def error(self) -> DeliveryError:
        """This failure as an exception."""
        return DeliveryError(
            f"record not delivered to {self.topic}: {self.reason} ({self.code})",
            topic=self.topic,
            code=self.code,
            key=self.key,
            retriable=self.retriable,
        )


#: librdkafka's "any partition" (the configured partitioner picks it from the key).
_ANY_PARTITION = -1


class Producer:
    """Produce bytes with keys and headers; ``flush()`` raises if anything failed.

    >>> with Producer(settings) as producer:          # doctest: +SKIP
    ...     producer.produce("inferstream.events", b'{...}', key=b"e1")
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        stage: str = "produce",
        on_ack: Callable[[Any, int], None] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {**settings.kafka.producer_config(), **(overrides or {})}
        self._producer = confluent_kafka.Producer(conf)
        self._metrics = metrics
        self._stage = stage
        #: Called with a tag and a count when the broker acknowledged that many records of the tag
        #: (one call per record from ``produce()``; per queued batch from ``produce_many()``).
        self._on_ack = on_ack
        self._failures: list[DeliveryFailure] = []
        self.delivered = 0
        self._timeout_s = float(conf.get("delivery.timeout.ms", 120_000)) / 1000.0
        self._closed = False
        # records_out children by topic: a labels() lookup per delivery report costs ~1 µs.
        self._out_counters: dict[str, Any] = {}

    # -- producing --------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        tag: Any = None,
    ) -> None:
        """Queue one record; waits (serving delivery reports) while the local queue is full.

        ``tag`` comes back on the record's ``DeliveryFailure`` (e.g. a line number), or
        to ``on_ack`` once the broker acknowledged the record.
        A record refused at once (larger than ``message.max.bytes``) becomes a failure too.
        """
        callback = self._on_delivery if tag is None else _Tagged(self, tag)
        kwargs: dict[str, Any] = {"on_delivery": callback}
        if key is not None:
            kwargs["key"] = key
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        deadline = 0.0
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                return
            except BufferError:
                # Backpressure: the local queue is full until the broker acknowledges.
                if not deadline:
                    deadline = time.monotonic() + self._timeout_s
                elif time.monotonic() > deadline:
                    raise DeliveryError(
                        f"producer queue stayed full for {self._timeout_s:.0f}s: is the broker reachable?",
                        topic=topic,
                        retriable=True,
                    ) from None
                self._producer.poll(0.05)
            except confluent_kafka.KafkaException as exc:
                error = error_of(exc)
                self._record_failure(topic, key, value, list(headers or ()), error, tag)
                return

    def produce_watched(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> Future[None]:
        """Queue one record; the future is done once the broker acknowledged it, or fails with its ``DeliveryError``.

        The record's fate goes to the future alone, never to ``flush()`` or
        ``take_failures()``: for a caller waiting on its own record while other threads
        produce (request/reply). Reports are served by ``poll()`` or any flush.
        """
        fate: Future[None] = Future()
        self.produce(topic, value, key, headers, tag=_Watched(fate))
        return fate

    def produce_many(
        self,
        topic: str,
        values: Sequence[bytes] | Iterator[bytes],
        keys: Sequence[bytes | str | None],
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        *,
        tag: Any = None,
        headers_of: Sequence[list[tuple[str, bytes]] | None] | None = None,
    ) -> None:
        """Queue many records with the same headers (and tag): the hot path of serving and the SDK.

        Same guarantees as ``produce()`` (backpressure, failures kept for ``flush()``),
        without building arguments per record; ``on_ack`` is called once, with the count,
        when every record queued here is acknowledged (a failed one is a failure instead,
        and no longer awaited): a delivery report costs one small call, not the ~1.7 µs
        of the per-record bookkeeping.
        ``headers_of``: a record's own headers where one is not None (a ``traceparent``).
        ``values`` may be an iterator that encodes as it goes (each value freed once
        queued) and ends early: the records it gave, with the first keys, are queued.
        """
        # Arguments by position (topic, value, key, partition, on_delivery, callback, timestamp,
        # headers): parsing keywords costs ~0.35 µs a record. tests/integration/test_producer_batches.py
        # checks each lands where it should.
        produce = self._producer.produce
        callback: Any = self._on_delivery if tag is None else _Counted(self, tag, topic)
        header_list: Any = list(headers) if headers else None
        queued = 0
        if headers_of is None:
            for value, key in zip(values, keys, strict=not isinstance(values, Iterator)):
                try:
                    produce(topic, value, key, _ANY_PARTITION, callback, None, 0, header_list)
                    queued += 1
                except (BufferError, confluent_kafka.KafkaException):
                    # Full queue or refused at once: the careful path waits or records it.
                    self.produce(topic, value, key.encode() if isinstance(key, str) else key, headers, tag=tag)
        else:
            for value, key, own in zip(values, keys, headers_of, strict=True):
                these: Any = header_list if own is None else own
                try:
                    produce(topic, value, key, _ANY_PARTITION, callback, None, 0, these)
                    queued += 1
                except (BufferError, confluent_kafka.KafkaException):
                    self.produce(topic, value, key.encode() if isinstance(key, str) else key, these, tag=tag)
        if tag is not None:
            callback.expect(queued)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is acknowledged; raise if any failed.

        Raises ``DeliveryError`` (the first failure's, with ``failures`` attached)
        and clears the failures; ``take_failures()`` before flushing avoids the raise.
        """
        remaining = self._producer.flush(self._timeout_s + 5 if timeout is None else timeout)
        if remaining:
            raise DeliveryError(
                f"{remaining} records still unacknowledged after flush timeout: is the broker reachable?",
                retriable=True,
            )
        failures = self.take_failures()
        if failures:
            first = failures[0]
            raise DeliveryError(
                f"{len(failures)} record(s) not delivered; first: {first.error()}",
                topic=first.topic,
                code=first.code,
                key=first.key,
                retriable=all(f.retriable for f in failures),
                failures=failures,
            )

    def flush_quietly(self, timeout: float | None = None) -> int:
        """Wait for outstanding acknowledgements without raising; failures stay for ``take_failures()``.

        Returns how many records are still unacknowledged.
        """
        return int(self._producer.flush(self._timeout_s + 5 if timeout is None else timeout))

    def take_failures(self) -> list[DeliveryFailure]:
        """The failures since the last call (or flush), and forget them."""
        failures, self._failures = self._failures, []
        return failures

    def __len__(self) -> int:
        """Records queued locally, not yet acknowledged."""
        return len(self._producer)

    # -- transactions (exactly-once workers) ------------------------------------------

    @property
    def raw(self) -> confluent_kafka.Producer:
        """The underlying confluent-kafka producer (transactions, offsets)."""
        return self._producer

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush (raising on failures) and release the producer."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the original error; still try to deliver what was queued
            with contextlib.suppress(KafkaError):
                self.close()

    # -- delivery reports -------------------------------------------------------------

    def _on_delivery(
        self, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message, tag: Any = None
    ) -> None:
        if err is None:
            self.delivered += 1
            if type(tag) is _Watched:
                tag.fate.set_result(None)
            elif tag is not None and self._on_ack is not None:
                self._on_ack(tag, 1)
            if self._metrics is not None:
                topic = msg.topic() or ""
                counter = self._out_counters.get(topic)
                if counter is None:
                    counter = self._out_counters[topic] = self._metrics.records_out.labels(topic, self._stage)
                counter.inc()
            return
        self._record_failure(msg.topic() or "", msg.key(), msg.value(), headers_of(msg), err, tag)

    def _acked_many(self, tag: Any, topic: str, count: int) -> None:
        """``count`` records of one ``produce_many()`` call acknowledged."""
        self.delivered += count
        if self._on_ack is not None:
            self._on_ack(tag, count)
        if self._metrics is not None:
            counter = self._out_counters.get(topic)
            if counter is None:
                counter = self._out_counters[topic] = self._metrics.records_out.labels(topic, self._stage)
            counter.inc(count)

    def _record_failure(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | str | None,
        headers: HeaderList,
        err: confluent_kafka.KafkaError,
        tag: Any,
    ) -> None:
        code = err.name()
        failure = DeliveryFailure(
            topic=topic,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
            code=code,
            reason=_reason(err),
            retriable=bool(err.retriable()) and err.code() not in _PERMANENT,
            tag=tag,
        )
        if type(tag) is _Watched:
            tag.fate.set_exception(failure.error())
        else:
            self._failures.append(failure)
        if self._metrics is not None:
            self._metrics.delivery_errors.labels(topic, code).inc()


@dataclass(frozen=True, slots=True)
class _Watched:
    """The tag of a record produced with ``produce_watched``: its future."""

    fate: Future[None]


class _Tagged:
    """A delivery callback that remembers one record's tag (cheaper than a closure per call)."""

    __slots__ = ("_producer", "_tag")

    def __init__(self, producer: Producer, tag: Any) -> None:
        self._producer = producer
        self._tag = tag

    def __call__(self, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
        self._producer._on_delivery(err, msg, self._tag)


class _Counted:
    """The delivery callback of one ``produce_many()`` call: counts its acknowledgements.

    ``on_ack`` and the metrics hear of them once, when every record queued is
    acknowledged or failed (``expect`` gives the number once they are all queued;
    reports may arrive before, from the polls of a full queue). A failure is recorded
    as ``produce()`` records it, and no longer awaited.
    """

    __slots__ = ("_acked", "_expected", "_producer", "_tag", "_topic")

    def __init__(self, producer: Producer, tag: Any, topic: str) -> None:
        self._producer = producer
        self._tag = tag
        self._topic = topic
        self._acked = 0
        self._expected = -1  # not known yet

    def expect(self, count: int) -> None:
        self._expected += count + 1
        self._done()

    def __call__(self, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
        if err is None:
            self._acked += 1
            if self._acked == self._expected:
                self._producer._acked_many(self._tag, self._topic, self._acked)
            return
        self._expected -= 1
        self._producer._on_delivery(err, msg, self._tag)
        self._done()

    def _done(self) -> None:
        if self._acked and self._acked == self._expected:
            self._producer._acked_many(self._tag, self._topic, self._acked)


def _reason(err: confluent_kafka.KafkaError) -> str:
    code = err.code()
    if code in (confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, confluent_kafka.KafkaError._UNKNOWN_TOPIC):
        return "topic does not exist (create it with `inferstream topics create`)"
    if code == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE:
        return "record is larger than the broker or producer accepts (message.max.bytes)"
    if code == confluent_kafka.KafkaError._MSG_TIMED_OUT:
        return "not acknowledged within delivery.timeout.ms: is the broker reachable?"
    return str(err.str())
