"""Subscribing: an iterator over a topic's records that commits what it has handed out (at-least-once)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import confluent_kafka

from inferstream._client.core import Core
from inferstream.closing import Closing
from inferstream.config import Settings
from inferstream.connectors.kafka._util import headers_of
from inferstream.connectors.kafka.consumer import Consumer
from inferstream.errors import ContractError
from inferstream.metrics import Metrics
from inferstream.schemas.codec import Codec, codec_for
from inferstream.schemas.columnar import decode_prediction_batch, is_prediction_batch
from inferstream.schemas.records import Contract, Prediction, contract_named

#: Seconds of a subscription's group join that its idle timeout does not count.
JOIN_ALLOWANCE_S = 30.0


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


class Subscription(Closing):
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
            # after JOIN_ALLOWANCE_S of joining): a slow join is not an idle stream.
            counted_from = started if self.consumer.assignment() else self._first_poll + JOIN_ALLOWANCE_S
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
                if self._codec.contract is Prediction and is_prediction_batch(headers):
                    record = decode_prediction_batch(value, headers)  # a predictions topic's other contract
                else:
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


def open_subscription(
    core: Core,
    topic: str | Sequence[str],
    group: str | None,
    from_beginning: bool,
    max_records: int | None,
    idle_timeout: float | None,
    decode: bool,
    schema: str | None,
    stop_at_end: bool,
) -> Subscription:
    """A subscription to ``topic`` (names as users write them), as ``Client.subscribe`` says."""
    full = [core.names.full(name) for name in ([topic] if isinstance(topic, str) else topic)]
    if stop_at_end:  # the ends are read now: say which topic is missing, with the closest name
        for name in full:
            core.names.require(name)
    contract = contract_named(schema) if schema else core.names.contract_for(full[0])
    return Subscription(
        core.settings,
        full,
        group=group or f"inferstream-subscribe-{uuid.uuid4().hex[:12]}",
        from_beginning=from_beginning,
        max_records=max_records,
        idle_timeout=idle_timeout,
        codec=codec_for(contract) if decode and contract is not None else None,
        metrics=core.metrics,
        stop_at_end=stop_at_end,
    )


def predictions_of(stream: Iterator[Received], model: str, version: str | None) -> Iterator[Prediction]:
    """The predictions in ``stream`` of ``model`` (any model when empty) and ``version`` (any when None)."""
    for message in stream:
        record = message.record
        if not isinstance(record, Prediction):
            continue
        if (model and record.model != model) or (version and record.version != version):
            continue
        yield record
