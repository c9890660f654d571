"""Request/reply over Kafka: a client's own reply topic and the calls waiting on it.

The listener reads partition 0 of ``replies.<client id>`` from the end offset it
saw *before* the first request went out (no consumer group, nothing committed),
and completes the future waiting for each request id with the prediction or
embedding or prediction batch it carries (told apart by the ``inferstream-schema`` header), or fails it
with ``RequestRejectedError`` when a worker refused the request (a ``request-error``
record: the reason, at once, instead of a timeout). Replies nobody waits for any more
(their call timed out) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import fetch
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import ContractError, KafkaError, RequestRejectedError
from inferstream.schemas.codec import Codec, codec_for, parse_schema_header
from inferstream.schemas.columnar import decode_prediction_batch
from inferstream.schemas.records import Embedding, Prediction, PredictionBatch, RequestError

Reply = Prediction | Embedding | PredictionBatch

_TIMEOUT_S = 15.0

#: A call waiting for its reply: in a thread (a future), or in an event loop (the loop, its future).
_Waiter = Future[Reply] | tuple[asyncio.AbstractEventLoop, asyncio.Future[Reply]]
#: Replies for one event loop: each future, and its reply or its failure.
_Settled = list[tuple[asyncio.Future[Reply], Reply | BaseException]]


class ReplyListener:
    """Owns a reply topic and hands each reply to the call waiting for it."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._admin = TopicAdmin(settings)
        self.topic = self._admin.ensure_reply_topic(client_id)
        conf: dict[str, Any] = {
            **settings.kafka.base_config(),
            "group.id": f"inferstream-replies-{client_id}",  # required by librdkafka; never joined
            "enable.auto.commit": False,
            # The broker answers a waiting fetch as soon as a reply lands, so a long wait costs
            # no latency; a short one cost the broker a fifth of a core in empty fetches, idle.
            "fetch.wait.max.ms": 100,
            **settings.kafka.consumer_overrides,
        }
        self._consumer = confluent_kafka.Consumer(conf)
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=_TIMEOUT_S)
        self._consumer.assign([TopicPartition(self.topic, 0, high)])
        self._codecs: dict[str, Codec[Any]] = {
            codec.name: codec for codec in (codec_for(Prediction), codec_for(Embedding), codec_for(RequestError))
        }
        self._waiting: dict[str, _Waiter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"replies-{client_id}", daemon=True)
        self._thread.start()

    def expect(self, request_id: str) -> Future[Reply]:
        """A future for the reply to ``request_id`` (call before producing the request)."""
        self._check()
        future: Future[Reply] = Future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def expect_async(self, request_id: str) -> asyncio.Future[Reply]:
        """``expect`` for a call waiting in the running event loop, without a thread.

        The replies of one fetch reach a loop in one callback, not one wake-up each.
        """
        self._check()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        with self._lock:
            self._waiting[request_id] = (loop, future)
        return future

    def _check(self) -> None:
        if self.error is not None:
            raise KafkaError(f"the reply listener on {self.topic} failed: {self.error}")

    def forget(self, request_id: str) -> None:
        """Stop waiting for a reply (after a timeout)."""
        with self._lock:
            self._waiting.pop(request_id, None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                by_loop: defaultdict[asyncio.AbstractEventLoop, _Settled] = defaultdict(list)
                for message in fetch(self._consumer, 100, 0.1):
                    value = message.value()
                    if message.error() is not None or value is None:
                        continue
                    key = message.key()
                    request_id = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
                    with self._lock:
                        waiter = self._waiting.pop(request_id, None)
                    if waiter is None:
                        continue
                    outcome: Reply | BaseException
                    try:
                        outcome = self._reply(value, message.headers())
                    except ContractError as exc:
                        outcome = exc
                    if isinstance(waiter, tuple):
                        by_loop[waiter[0]].append((waiter[1], outcome))
                    elif isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)
                for loop, settled in by_loop.items():
                    _hand_over(loop, settled)
        except Exception as exc:  # surfaced to callers
            self.error = exc
            with self._lock:
                waiting, self._waiting = self._waiting, {}
            for waiter in waiting.values():
                if isinstance(waiter, tuple):
                    _hand_over(waiter[0], [(waiter[1], exc)])
                else:
                    waiter.set_exception(exc)

    def _reply(self, value: bytes, headers: Any) -> Reply:
        found = parse_schema_header(headers)
        if found is not None and found[0] == PredictionBatch.schema_name:
            return decode_prediction_batch(value, headers)  # JSON or Arrow, as the request was
        codec = self._codecs.get(found[0] if found else "prediction", self._codecs["prediction"])
        reply = codec.decode(value, headers=headers)
        if isinstance(reply, RequestError):
            raise RequestRejectedError(
                f"{reply.model}:{reply.version} refused request {reply.request_id}: {reply.error_message}",
                request_id=reply.request_id,
                error_class=reply.error_class,
                stage=reply.stage,
            )
        assert isinstance(reply, Prediction | Embedding | PredictionBatch)
        return reply

    def close(self) -> None:
        """Stop listening and delete the reply topic (it belongs to this client alone)."""
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
        with contextlib.suppress(KafkaError):
            self._admin.delete(self.topic)


def _hand_over(loop: asyncio.AbstractEventLoop, settled: _Settled) -> None:
    """Complete ``settled``'s futures in their loop (gone: nobody waits any more)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed
        loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: _Settled) -> None:
    for future, outcome in settled:
        if future.done():  # cancelled: its caller went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
