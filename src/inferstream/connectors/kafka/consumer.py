"""A batch consumer with manual, rebalance-safe commits and a clean shutdown.

Offsets are never committed automatically: a caller marks records processed
(``store()``) once their outputs are acknowledged, then ``commit()``s. When a
rebalance takes partitions away, what was stored for them is committed first, so
the next owner starts right after the last processed record. SIGINT/SIGTERM stop
the loop between batches.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.closing import Closing
from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of, fetch, partition_bounds
from inferstream.errors import CommitError, KafkaError, TopicError
from inferstream.metrics import Metrics

Message = confluent_kafka.Message
PartitionsCallback = Callable[[list[TopicPartition]], None]

_LAG_EVERY_S = 5.0
_TIMEOUT_S = 10.0


class Consumer(Closing):
    """Consume batches from topics in a consumer group; commit only what was processed."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        group_id: str,
        from_beginning: bool = False,
        metrics: Metrics | None = None,
        stage: str = "consume",
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        overrides: Mapping[str, Any] | None = None,
        starts_now: bool = False,
    ) -> None:
        """``starts_now`` (without ``from_beginning``): a partition with no committed offset
        starts at its end as of this call, not as of the group's join a moment later, so
        what is produced after the consumer was made is never missed.
        """
        conf: dict[str, Any] = {
            **settings.kafka.consumer_config(group_id),
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            **(overrides or {}),
        }
        self.group_id = group_id
        self.topics = list(topics)
        self._consumer = confluent_kafka.Consumer(conf)
        self._metrics = metrics
        self._stage = stage
        self._user_assign = on_assign
        self._user_revoke = on_revoke
        self._stop = threading.Event()
        self._last_lag = 0.0
        self._assigned: set[tuple[str, int]] = set()
        #: Partitions whose end this consumer reached (with ``enable.partition.eof`` in ``overrides``).
        self.at_end: set[tuple[str, int]] = set()
        self._closed = False
        # Incremental (cooperative or KIP-848) rebalancing takes partitions with incremental_assign.
        self._incremental = "cooperative" in str(conf.get("partition.assignment.strategy", "")) or (
            conf.get("group.protocol") == "consumer"
        )
        self._starts: dict[tuple[str, int], int] | None = None
        if starts_now and not from_beginning:
            self._starts = self._end_offsets()
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # -- consuming --------------------------------------------------------------------

    def consume(self, max_records: int = 500, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_records`` records (maybe none) within ``timeout`` seconds.

        Raises ``KafkaError`` on fatal client errors; per-partition notices (end of
        partition) are dropped.
        """
        messages = fetch(self._consumer, max_records, timeout)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                self.at_end.add((message.topic() or "", message.partition() or 0))
                continue
            elif error.fatal() or error.code() in (
                confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
                confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED,
            ):
                raise KafkaError(f"consumer error on {message.topic()}: {error.str()}")
        if records and self._metrics is not None:
            self._metrics.records_in.labels(records[0].topic(), self._stage).inc(len(records))
            self._metrics.batch_size.labels(self._stage).observe(len(records))
        if self._metrics is not None and time.monotonic() - self._last_lag > _LAG_EVERY_S:
            self.update_lag()
        return records

    def batches(self, max_records: int = 500, timeout: float = 1.0, *, idle: bool = False) -> Iterator[list[Message]]:
        """Batches until ``stop()`` (or a signal); empty ones too when ``idle`` (for timers)."""
        while not self._stop.is_set():
            batch = self.consume(max_records, timeout)
            if batch or idle:
                yield batch

    # -- offsets ----------------------------------------------------------------------

    def store(self, messages: Iterable[Message]) -> None:
        """Mark records processed (their outputs are acknowledged); ``commit()`` sends it."""
        # Within a partition records arrive in offset order: the last one seen is the highest.
        highest = {(m.topic() or "", m.partition() or 0): m.offset() or 0 for m in messages}
        if highest:
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in highest.items() if (t, p) in self._assigned]
            if offsets:
                self._consumer.store_offsets(offsets=offsets)

    def commit(self, messages: Iterable[Message] | None = None, *, asynchronous: bool = False) -> None:
        """Commit stored offsets (after storing ``messages`` when given), synchronously by default.

        An asynchronous commit does not wait for the broker (periodic commits on a hot
        path); one that fails is repeated by the next, and closing commits synchronously.
        """
        if messages is not None:
            self.store(messages)
        try:
            self._consumer.commit(asynchronous=asynchronous)
        except confluent_kafka.KafkaException as exc:
            error = error_of(exc)
            if error.code() == confluent_kafka.KafkaError._NO_OFFSET:
                return  # nothing stored since the last commit
            raise CommitError(
                f"commit for group {self.group_id} failed: {error.str()} (the records will be redelivered)"
            ) from exc

    def committed(self, timeout: float = 10.0) -> dict[tuple[str, int], int]:
        """Committed offsets of the current assignment: (topic, partition) → offset."""
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not parts:
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(parts, timeout=timeout)}

    def assignment(self) -> list[tuple[str, int]]:
        """(topic, partition) pairs this consumer owns now."""
        return sorted(self._assigned)

    def behind(self) -> bool:
        """Whether an owned partition has records past this consumer's position, as far as it knows now.

        From the end offsets the last fetches brought (no call to the broker): a pause
        in what ``consume`` hands out while this is true is a fetch on its way, not a
        drained topic.
        """
        parts = [TopicPartition(t, p) for t, p in self._assigned]
        if not parts:
            return False
        for tp in self._consumer.position(parts):
            if tp.offset < 0:
                continue  # nothing read yet: where it starts is not known here
            cached = self._consumer.get_watermark_offsets(tp, cached=True)
            if cached and cached[1] > tp.offset:
                return True
        return False

    def update_lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each owned partition (also set on the lag gauge).

        A partition not read from yet counts from its committed offset (or its start).
        """
        self._last_lag = time.monotonic()
        lag: dict[tuple[str, int], int] = {}
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not parts:
            return lag
        positions = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(parts)}
        unread = [TopicPartition(t, p) for (t, p), offset in positions.items() if offset < 0]
        if unread:
            with contextlib.suppress(confluent_kafka.KafkaException):
                for tp in self._consumer.committed(unread, timeout=2.0):
                    positions[(tp.topic, tp.partition)] = tp.offset
        for tp in parts:
            key = (tp.topic, tp.partition)
            cached: tuple[int, int] | None = self._consumer.get_watermark_offsets(tp, cached=True)
            try:
                low, high = (
                    cached if cached and cached[1] >= 0 else self._consumer.get_watermark_offsets(tp, timeout=2.0)
                )
            except confluent_kafka.KafkaException:
                continue  # the broker is away: no figure rather than a wrong one
            position = positions[key] if positions[key] >= 0 else low
            lag[key] = max(high - position, 0)
            if self._metrics is not None:
                self._metrics.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag[key])
        return lag

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """The end offset of every partition of the topics now: (topic, partition) → offset.

        Raises ``TopicError`` for a topic that does not exist, ``KafkaError`` when the broker does not answer.
        """
        ends: dict[tuple[str, int], int] = {}
        for topic in self.topics:
            try:
                bounds = partition_bounds(self._consumer, topic, _TIMEOUT_S)
            except confluent_kafka.KafkaException as exc:
                raise KafkaError(f"cannot read the end offsets of {topic}: {error_of(exc).str()}") from exc
            if bounds is None:
                raise TopicError(f"topic {topic} does not exist")
            ends.update(((topic, p), high) for p, (_low, high) in bounds.items())
        return ends

    # -- rebalances -------------------------------------------------------------------

    def _end_offsets(self) -> dict[tuple[str, int], int]:
        # (topic, -1): where a partition that did not exist then starts (all of it came after).
        ends: dict[tuple[str, int], int] = {}
        for topic in self.topics:
            try:
                bounds = partition_bounds(self._consumer, topic, _TIMEOUT_S)
            except confluent_kafka.KafkaException:
                continue  # unreadable now: its partitions start at the end as of the join
            ends[(topic, -1)] = confluent_kafka.OFFSET_BEGINNING
            ends.update(((topic, p), high) for p, (_low, high) in (bounds or {}).items())
        return ends

    def _start_where_asked(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions the group has no offset for start at the end seen when the consumer was
        # made; committed offsets win. A partition that did not exist then starts at its
        # beginning; one of a topic whose ends could not be read, at the end as of now.
        assert self._starts is not None
        starts = self._starts

        def start(tp: TopicPartition) -> int:
            if (tp.topic, tp.partition) in starts:
                return starts[(tp.topic, tp.partition)]
            return starts.get((tp.topic, -1), confluent_kafka.OFFSET_END)

        try:
            committed = consumer.committed(partitions, timeout=_TIMEOUT_S)
        except confluent_kafka.KafkaException:
            return  # the client takes them as usual: committed offsets, else the end as of now
        take = consumer.incremental_assign if self._incremental else consumer.assign
        take(
            [
                done if done.offset >= 0 else TopicPartition(tp.topic, tp.partition, start(tp))
                for tp, done in zip(partitions, committed, strict=True)
            ]
        )

    def _on_assign(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        if self._starts is not None and partitions:
            self._start_where_asked(consumer, partitions)
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self._user_assign is not None:
            self._user_assign(partitions)

    def _on_revoke(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        # Hand over cleanly: commit what was processed before the partitions go.
        if self._user_revoke is not None:
            self._user_revoke(partitions)
        # Nothing stored, or the group moved on: then the records are redelivered.
        with contextlib.suppress(confluent_kafka.KafkaException):
            consumer.commit(asynchronous=False)
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)

    def _on_lost(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): another member may own them already, so no commit.
        if self._user_revoke is not None:
            self._user_revoke(partitions)
        self._assigned.difference_update((tp.topic, tp.partition) for tp in partitions)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def raw(self) -> confluent_kafka.Consumer:
        """The underlying confluent-kafka consumer."""
        return self._consumer

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called or a stop signal arrived."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the batch loop to end after the current batch (thread- and signal-safe)."""
        self._stop.set()

    def stop_on_signals(self, signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """End the loop on SIGINT/SIGTERM (main thread only); a second signal interrupts."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt
            self._stop.set()

        for sig in signals:
            signal.signal(sig, handler)

    def close(self) -> None:
        """Commit what was stored, leave the group and release the consumer."""
        if self._closed:
            return
        self._closed = True
        try:
            self.commit()
        except CommitError:
            pass  # redelivered to the next owner: at-least-once
        finally:
            self._consumer.close()
