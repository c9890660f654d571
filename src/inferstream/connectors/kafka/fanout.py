"""One Kafka reader of a topic handing every record to many asyncio subscribers.

The gateway streams predictions to HTTP clients (server-sent events) through one
``Fanout`` per topic rather than one Kafka consumer per client: a consumer per
client multiplies broker connections and fetches by the number of clients, and a
client would wait for a group join before its first record. The fan-out reads each
record once, decodes it once, and offers it to every subscriber whose filter
accepts it.

It reads from the end of every partition at the moment it starts (no consumer
group, nothing committed: a live view, like ``tail -f``). Partitions added to the
topic later are not read until the fan-out is restarted.

Records move in batches (one fetch, decoded once, off the event loop): a subscriber's
queue holds lists, and its reader takes all that is queued at once. Memory stays
bounded: each subscriber has a queue of ``queue_size`` records. When a subscriber's
queue has no room for the next batch the reader waits for it at most ``drop_after_s``; a
subscriber that takes nothing for that long is dropped with a reason (its queue is
emptied, its iteration ends, ``dropped`` says why), and the others go on. So a
burst never costs a fast subscriber a record, and a stalled one costs at most its
queue plus one batch.

Two kinds of subscriber: :meth:`Fanout.subscribe` gives each record with its bytes,
for readers that look into records (the dashboard, the alert stream's repeat filter);
:meth:`Fanout.subscribe_raw` gives each record's id and bytes, for readers that pass the
bytes on (the prediction stream), filtered on a few fields. While only raw subscribers
listen, records are checked exactly as decoding would check them, but never built
(:meth:`inferstream.schemas.codec.Codec.fields_of`): the gateway's prediction stream
spends half the time a record it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, Generic, TypeVar

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of, fetch, partition_bounds
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import ContractError, KafkaError, TopicError
from inferstream.schemas.codec import Codec
from inferstream.schemas.records import Contract

C = TypeVar("C", bound=Contract)
T = TypeVar("T")

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0
_BATCH = 500


class Subscription(Generic[T]):
    """One subscriber's bounded queue of batches of items (see the module doc), until it is dropped."""

    def __init__(self, queue_size: int, name: str) -> None:
        self.name = name
        self.queue_size = queue_size
        self._batches: deque[list[T]] = deque()
        self._queued = 0
        self._ready = asyncio.Event()  # something queued, or the end
        self._room = asyncio.Event()  # something taken
        self._ended = False
        #: Why the fan-out stopped feeding this subscriber (None while it is fed).
        self.dropped: str | None = None
        #: Items taken from the queue so far.
        self.taken = 0

    async def batches(self, max_batch: int = 1000) -> AsyncIterator[list[T]]:
        """Lists of queued items (waits for the first, takes what else is queued), until dropped."""
        queued = self._batches
        while True:
            while not queued:
                if self._ended:
                    return
                self._ready.clear()
                await self._ready.wait()
            batch = queued.popleft()
            while queued and len(batch) + len(queued[0]) <= max_batch:
                batch = batch + queued.popleft()
            self._queued -= len(batch)
            self.taken += len(batch)
            self._room.set()
            yield batch

    def _fits(self, count: int) -> bool:
        # An empty queue takes any one batch: a stalled subscriber costs its queue plus one batch.
        return not self._queued or self._queued + count <= self.queue_size

    async def _wait_for_room(self, count: int, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._fits(count):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self._ended:
                return False
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)
        return not self._ended

    def _push(self, items: list[T]) -> None:
        self._batches.append(items)
        self._queued += len(items)
        self._ready.set()

    def _end(self, reason: str) -> None:
        # Free what was queued at once (memory stays bounded), then wake the reader of the queue.
        self.dropped = reason
        self._ended = True
        self._batches.clear()
        self._queued = 0
        self._ready.set()
        self._room.set()


class FanoutSubscriber(Subscription[tuple[C, bytes]]):
    """A subscriber of records: (record, raw bytes) of each record its filter accepts."""

    def __init__(self, accept: Callable[[C], bool], queue_size: int, name: str) -> None:
        super().__init__(queue_size, name)
        self.accept = accept


class RawSubscriber(Subscription[tuple[str, bytes]]):
    """A subscriber of bytes: (id, raw bytes) of each valid record whose fields hold ``where``'s values."""

    def __init__(self, where: Mapping[str, Any], fields: tuple[str, ...], queue_size: int, name: str) -> None:
        super().__init__(queue_size, name)
        self.where = dict(where)
        #: Of a record's fields (the fan-out's, id first): what ``where`` tests, and the value it must be.
        self.tested: Callable[[tuple[Any, ...]], Any] | None = None
        self.wanted: Any = None
        if where:
            at = [fields.index(name) for name in where]
            self.tested = itemgetter(*at)  # of several positions a tuple, of one the value alone
            self.wanted = tuple(where.values()) if len(at) > 1 else next(iter(where.values()))


@dataclass(slots=True)
class _Batch(Generic[C]):
    """The valid records of one fetch: their bytes, with their records or their fields (as subscribers needed)."""

    raws: list[bytes]
    #: (record, bytes) of each, when a record subscriber was there at the fetch.
    items: list[tuple[C, bytes]] | None = None
    #: The fan-out's fields of each (id first), when no record subscriber was there.
    fields: list[tuple[Any, ...]] | None = None
    #: (id, bytes) of each, made by the first raw subscriber without a filter.
    pairs: list[tuple[str, bytes]] | None = None


class Fanout(Generic[C]):
    """Reads ``topic`` once and offers every record to each subscriber (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        codec: Codec[C],
        *,
        queue_size: int,
        drop_after_s: float = 5.0,
        on_drop: Callable[[Subscription[Any], str], None] | None = None,
        id_field: str | None = None,
        filter_fields: Sequence[str] = (),
    ) -> None:
        """``id_field`` and ``filter_fields`` (string fields of the contract) are what raw subscribers get and test."""
        self.settings = settings
        self.topic = topic
        self.codec = codec
        self.queue_size = queue_size
        self.drop_after_s = drop_after_s
        self._on_drop = on_drop
        #: The fields a raw subscriber sees of each record: its id, then those it may filter on.
        self.fields: tuple[str, ...] = () if id_field is None else (id_field, *filter_fields)
        self._read_fields = codec.fields_of(self.fields) if self.fields else None
        self._pick_fields = attrgetter(*self.fields) if len(self.fields) > 1 else None
        self._subscribers: list[Subscription[Any]] = []
        self._consumer: confluent_kafka.Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._stopping = False
        self._count = 0
        #: Records read from the topic that no contract decode accepted (skipped).
        self.undecodable = 0

    @property
    def subscribers(self) -> int:
        """Subscribers being fed now."""
        return len(self._subscribers)

    async def subscribe(self, accept: Callable[[C], bool] | None = None) -> FanoutSubscriber[C]:
        """A new subscriber that gets the records read from now on (that ``accept`` lets through).

        Starts reading on the first call; raises ``TopicError`` when the topic is missing
        and ``KafkaError`` when the broker cannot be reached.
        """
        await self._start()
        self._count += 1
        subscriber: FanoutSubscriber[C] = FanoutSubscriber(accept or _all, self.queue_size, f"s{self._count}")
        self._subscribers.append(subscriber)
        return subscriber

    async def subscribe_raw(self, where: Mapping[str, Any] | None = None) -> RawSubscriber:
        """A new subscriber that gets (id, bytes) of the valid records read from now on.

        ``where`` maps some of the fan-out's ``filter_fields`` to the value a record must
        hold to be sent (none: every record). Starts reading as :meth:`subscribe` does.
        """
        if not self.fields:
            raise ValueError(f"the fan-out of {self.topic} has no id field: it has no raw subscribers")
        unknown = sorted(set(where or ()) - set(self.fields[1:]))
        if unknown:
            filters = ", ".join(self.fields[1:]) or "nothing"
            raise ValueError(f"the fan-out of {self.topic} filters on {filters}, not on {', '.join(unknown)}")
        await self._start()
        self._count += 1
        subscriber = RawSubscriber(where or {}, self.fields, self.queue_size, f"s{self._count}")
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscription[Any]) -> None:
        """Stop feeding a subscriber (it went away)."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)

    async def _start(self) -> None:
        async with self._start_lock:
            if self._task is not None and not self._task.done():
                return
            if self._stopping:
                raise TopicError(f"the fan-out of {self.topic} is closing")
            self._consumer = await asyncio.to_thread(self._assign_at_end)
            self._task = asyncio.create_task(self._read(), name=f"fanout-{self.topic}")

    def _assign_at_end(self) -> confluent_kafka.Consumer:
        admin = TopicAdmin(self.settings)
        if not admin.exists(self.topic):
            raise TopicError(
                f"topic {self.topic} does not exist: create the platform topics with "
                "`inferstream topics create --platform`"
            )
        conf: dict[str, Any] = {
            **self.settings.kafka.base_config(),
            "group.id": "inferstream-fanout",  # required by librdkafka; never joined, nothing committed
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            **self.settings.kafka.consumer_overrides,
        }
        consumer = confluent_kafka.Consumer(conf)
        try:
            # A topic made a moment ago may have a partition with no leader yet: wait it out.
            bounds = partition_bounds(consumer, self.topic, _TIMEOUT_S)
            if bounds is None:
                raise TopicError(f"topic {self.topic} went away")
            consumer.assign([TopicPartition(self.topic, p, high) for p, (_low, high) in bounds.items()])
        except confluent_kafka.KafkaException as exc:
            consumer.close()
            raise KafkaError(f"cannot read the end of {self.topic}: {error_of(exc).str()}") from exc
        except BaseException:
            consumer.close()
            raise
        return consumer

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping:
                # Fetched and checked off the event loop: the loop only hands batches out.
                batch = await asyncio.to_thread(self._fetch, consumer)
                if batch is not None:
                    await self._offer(batch)
        except Exception as exc:  # the stream cannot go on: tell every subscriber why
            log.exception("reading %s for streaming failed", self.topic)
            self._end_all(f"the gateway stopped reading {self.topic}: {exc}")
            raise

    def _fetch(self, consumer: confluent_kafka.Consumer) -> _Batch[C] | None:
        messages = fetch(consumer, _BATCH, 0.2)
        # Records are built only for subscribers of records; raw ones need their fields only.
        read_fields = self._read_fields
        if read_fields is None or any(isinstance(s, FanoutSubscriber) for s in self._subscribers):
            return self._decode(messages)
        raws: list[bytes] = []
        fields: list[tuple[Any, ...]] = []
        for message in messages:
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                fields.append(read_fields(value, message.headers()))
            except ContractError:
                self.undecodable += 1
                continue
            raws.append(value)
        return _Batch(raws, fields=fields) if raws else None

    def _decode(self, messages: list[confluent_kafka.Message]) -> _Batch[C] | None:
        items = []
        decode = self.codec.decode
        for message in messages:
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                items.append((decode(value, headers=message.headers()), value))
            except ContractError:
                self.undecodable += 1
        return _Batch([raw for _, raw in items], items=items) if items else None

    async def _offer(self, batch: _Batch[C]) -> None:
        for subscriber in list(self._subscribers):
            if isinstance(subscriber, FanoutSubscriber):
                accept = subscriber.accept
                records = self._items(batch)
                items: list[Any] = records if accept is _all else [item for item in records if accept(item[0])]
            else:
                assert isinstance(subscriber, RawSubscriber)
                items = self._pairs(batch, subscriber)
            if not items:
                continue
            if not subscriber._fits(len(items)) and not await subscriber._wait_for_room(len(items), self.drop_after_s):
                if subscriber in self._subscribers:  # not gone meanwhile
                    self._drop(
                        subscriber,
                        f"too slow: {self.queue_size} records waited for this client for "
                        f"{self.drop_after_s:g}s; reconnect to go on from the newest record",
                    )
                continue
            subscriber._push(items)

    def _items(self, batch: _Batch[C]) -> list[tuple[C, bytes]]:
        if batch.items is None:  # a subscriber of records came after the fetch: rare, checked bytes decode
            decode = self.codec.decode
            batch.items = [(decode(raw), raw) for raw in batch.raws]
        return batch.items

    def _pairs(self, batch: _Batch[C], subscriber: RawSubscriber) -> list[tuple[str, bytes]]:
        fields = batch.fields
        if fields is None:
            pick = self._pick_fields
            records = self._items(batch)
            fields = batch.fields = (
                [pick(record) for record, _ in records]
                if pick is not None
                else [(getattr(record, self.fields[0]),) for record, _ in records]
            )
        tested, wanted = subscriber.tested, subscriber.wanted
        if tested is None:
            if batch.pairs is None:
                batch.pairs = [(values[0], raw) for values, raw in zip(fields, batch.raws, strict=True)]
            return batch.pairs
        return [(values[0], raw) for values, raw in zip(fields, batch.raws, strict=True) if tested(values) == wanted]

    def _drop(self, subscriber: Subscription[Any], reason: str) -> None:
        self.unsubscribe(subscriber)
        subscriber._end(reason)
        log.warning("dropped stream subscriber %s of %s: %s", subscriber.name, self.topic, reason)
        if self._on_drop is not None:
            self._on_drop(subscriber, reason)

    def _end_all(self, reason: str) -> None:
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
            subscriber._end(reason)

    async def close(self) -> None:
        """Stop reading and end every subscriber's stream."""
        self._stopping = True
        self._end_all("the gateway is shutting down")
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)


def _all(record: Any) -> bool:
    return True
