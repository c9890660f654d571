"""Resumable transactions: a unit of work produced in Kafka transactions with its progress, for tasks a runner retries.

A unit (one file of a batch job) has a name of its own, the same in every attempt
at it. That name is the producer's ``transactional.id``, and also a consumer group
(no member ever joins it) whose committed offset counts how much of the unit is in
the topic: each transaction commits its records and the new count together
(``send_offsets_to_transaction``), so the records and the count become visible at
once or not at all.

A second attempt (the first one's worker died, or is stuck and still running)
calls :meth:`ResumableTransactions.start`: ``init_transactions()`` with the same
transactional id fences the first attempt (its next send or commit fails) and
aborts the transaction it left open, whose records ``read_committed`` readers then
never see; the count read after that is the last committed one, where the second
attempt goes on. An attempt that finds the whole unit counted produces nothing.

A transaction is open while its records are produced: ``read_committed`` readers
of those partitions wait for its end, and the coordinator aborts one left open
(its producer died and no second attempt came) after ``transaction.timeout.ms``.
So callers commit often (every few seconds), not once per unit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of
from inferstream.connectors.kafka.producer import Producer
from inferstream.errors import DeliveryError, KafkaError, TransactionError

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
#: What a dead attempt's open transaction holds read_committed readers at most, when no retry fences it.
TRANSACTION_TIMEOUT_MS = 30_000
_COMMIT_TRIES = 3


class ResumableTransactions:
    """Transactions of one unit of work, named ``unit``, counted on partition 0 of ``topic``.

    >>> unit = ResumableTransactions(settings, "inferstream-replay-3f2a-0", topic)   # doctest: +SKIP
    >>> done = unit.start()                 # rows an earlier attempt committed
    >>> unit.begin(); unit.producer.produce(topic, b"..."); unit.commit(done + 1)
    >>> unit.close()
    """

    def __init__(self, settings: Settings, unit: str, topic: str, *, stage: str = "produce") -> None:
        self.settings = settings
        self.unit = unit
        self.topic = topic
        self.producer = Producer(
            settings,
            stage=stage,
            overrides={
                "transactional.id": unit,
                "enable.idempotence": True,
                "acks": "all",
                # A record not acknowledged within the transaction's own limit fails it (the task fails).
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "delivery.timeout.ms": TRANSACTION_TIMEOUT_MS,
            },
        )
        self._group: Any = None
        self._open = False

    def start(self) -> int:
        """Fence every earlier attempt (aborting its open transaction); the count last committed (0: none)."""
        try:
            self.producer.raw.init_transactions(_TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:
            raise TransactionError(f"{self.unit}: transactions could not start: {error_of(exc).str()}") from None
        # The count is read after the fence: nothing an earlier attempt sends can change it any more.
        consumer = confluent_kafka.Consumer(self.settings.kafka.consumer_config(self.unit))
        try:
            (position,) = consumer.committed([TopicPartition(self.topic, 0)], timeout=_TIMEOUT_S)
            self._group = consumer.consumer_group_metadata()
        except confluent_kafka.KafkaException as exc:
            raise TransactionError(f"{self.unit}: its progress could not be read: {error_of(exc).str()}") from None
        finally:
            consumer.close()
        if position.error is not None:  # never taken for 0: that would send what is already in the topic again
            raise TransactionError(f"{self.unit}: its progress on {self.topic} could not be read: {position.error}")
        return max(int(position.offset), 0)

    def begin(self) -> None:
        """Open a transaction: what the producer sends from here is visible at :meth:`commit`."""
        self.producer.raw.begin_transaction()
        self._open = True

    def commit(self, count: int) -> None:
        """Commit the open transaction's records with the unit's new count; raises if any record failed.

        A failed record or commit aborts the transaction (nothing of it is visible) and raises.
        """
        try:
            self.producer.flush()
        except DeliveryError:
            self.abort()
            raise
        raw = self.producer.raw
        progress = [TopicPartition(self.topic, 0, count)]
        try:
            _retried(lambda: raw.send_offsets_to_transaction(progress, self._group, _TIMEOUT_S))
            _retried(lambda: raw.commit_transaction(_TIMEOUT_S))
        except confluent_kafka.KafkaException as exc:
            error = error_of(exc)
            if not error.fatal():
                self.abort()
            raise TransactionError(
                f"{self.unit}: the transaction up to record {count} could not commit ({error.str()}); "
                "none of its records are visible to read_committed readers, and a retry goes on from "
                "the last committed record"
            ) from None
        self._open = False

    def abort(self) -> None:
        """Abort the open transaction, if any (its records are never visible to read_committed readers)."""
        if not self._open:
            return
        self._open = False
        try:
            self.producer.raw.abort_transaction(_TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:  # fenced or fatal: the coordinator aborts it
            log.warning("%s: the open transaction could not be aborted (%s)", self.unit, error_of(exc).str())

    def close(self) -> None:
        """Abort what is still open and release the producer."""
        self.abort()
        # What is left are the records of an aborted transaction (purged or failed): none is visible.
        self.producer.flush_quietly(5)
        self.producer.take_failures()
        with contextlib.suppress(KafkaError):
            self.producer.close(5)


def _retried(call: Callable[[], None]) -> None:
    """``call``, again while it fails with an error that librdkafka calls retriable (up to 3 times in all)."""
    for attempt in range(1, _COMMIT_TRIES + 1):
        try:
            call()
            return
        except confluent_kafka.KafkaException as exc:
            if not error_of(exc).retriable() or attempt == _COMMIT_TRIES:
                raise


def forget(settings: Settings, units: Iterable[str]) -> None:
    """Delete the counts of finished units (their groups); those already gone are skipped."""
    names = list(units)
    if not names:
        return
    admin = AdminClient(dict(settings.kafka.base_config()))
    for name, future in admin.delete_consumer_groups(names, request_timeout=_TIMEOUT_S).items():
        try:
            future.result()
        except confluent_kafka.KafkaException as exc:
            if error_of(exc).code() != confluent_kafka.KafkaError.GROUP_ID_NOT_FOUND:
                log.warning("the progress of %s stays (its group could not be deleted: %s)", name, exc)
