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

Memory stays bounded: each subscriber has a queue of ``queue_size`` records. When a
subscriber's queue is full the reader waits for it at most ``drop_after_s``; a
subscriber that takes nothing for that long is dropped with a reason (its queue is
emptied, its iteration ends, ``dropped`` says why), and the others go on. So a
burst never costs a fast subscriber a record, and a stalled one costs at most its
queue plus one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import fetch
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import ContractError, TopicError
from inferstream.schemas.codec import Codec
from inferstream.schemas.records import Contract

C = TypeVar("C", bound=Contract)

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0
_BATCH = 500


class FanoutSubscriber(Generic[C]):
    """One subscriber: a filter and a bounded queue of (record, raw bytes)."""

    def __init__(self, accept: Callable[[C], bool], queue_size: int, name: str) -> None:
        self.accept = accept
        self.name = name
        self._queue: asyncio.Queue[tuple[C, bytes] | None] = asyncio.Queue(queue_size)
        #: Why the fan-out stopped feeding this subscriber (None while it is fed).
        self.dropped: str | None = None
        #: Records taken from the queue so far.
        self.taken = 0

    async def batches(self, max_batch: int = 100) -> AsyncIterator[list[tuple[C, bytes]]]:
        """Lists of queued records (waits for the first, takes what else is queued), until dropped."""
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.put_nowait(None)  # seen again on the next call, after this batch
                    break
                batch.append(item)
            self.taken += len(batch)
            yield batch

    def _end(self, reason: str) -> None:
        # Free what was queued at once (memory stays bounded), then wake the reader of the queue.
        self.dropped = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


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
        on_drop: Callable[[FanoutSubscriber[C], str], None] | None = None,
        on_record: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.codec = codec
        self.queue_size = queue_size
        self.drop_after_s = drop_after_s
        self._on_drop = on_drop
        self._on_record = on_record
        self._subscribers: list[FanoutSubscriber[C]] = []
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

    def unsubscribe(self, subscriber: FanoutSubscriber[C]) -> None:
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
        partitions = admin.describe(self.topic, with_config=False).partitions
        conf: dict[str, Any] = {
            **self.settings.kafka.base_config(),
            "group.id": "inferstream-fanout",  # required by librdkafka; never joined, nothing committed
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            **self.settings.kafka.consumer_overrides,
        }
        consumer = confluent_kafka.Consumer(conf)
        consumer.assign([TopicPartition(self.topic, p.partition, p.high) for p in partitions])
        return consumer

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping:
                messages = await asyncio.to_thread(fetch, consumer, _BATCH, 0.2)
                for message in messages:
                    value = message.value()
                    if message.error() is not None or value is None:
                        continue
                    try:
                        record = self.codec.decode(value, headers=message.headers())
                    except ContractError:
                        self.undecodable += 1
                        continue
                    if self._on_record is not None:
                        self._on_record()
                    await self._offer(record, value)
        except Exception as exc:  # the stream cannot go on: tell every subscriber why
            log.exception("reading %s for streaming failed", self.topic)
            self._end_all(f"the gateway stopped reading {self.topic}: {exc}")
            raise

    async def _offer(self, record: C, raw: bytes) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.accept(record):
                continue
            queue = subscriber._queue
            try:
                queue.put_nowait((record, raw))
                continue
            except asyncio.QueueFull:
                pass
            try:
                await asyncio.wait_for(queue.put((record, raw)), self.drop_after_s)
            except TimeoutError:
                self._drop(
                    subscriber,
                    f"too slow: {self.queue_size} records waited for this client for {self.drop_after_s:g}s; "
                    "reconnect to go on from the newest record",
                )

    def _drop(self, subscriber: FanoutSubscriber[C], reason: str) -> None:
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
