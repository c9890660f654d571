"""Request/reply over Kafka: one request to a model's request topic, its answer on this client's reply topic.

The request carries the client's reply topic and a deadline, so a worker that gets to
it late dead-letters it instead of answering. A bare model name is routed by the
model's route on the control topic, by request id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from inferstream._client.core import Core, Lazy
from inferstream.connectors.kafka.producer import Producer
from inferstream.connectors.kafka.replies import Reply, ReplyListener
from inferstream.errors import ContractError, RequestTimeoutError
from inferstream.schemas._types import utcnow
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Embedding, EmbeddingRequest, InferenceRequest, Prediction, PredictionBatch
from inferstream.serving.routes import RouteTable
from inferstream.tracing import TRACEPARENT, outgoing

#: How often a waiting call serves the producer's delivery reports (its own may be a failure).
_POLL_S = 0.05

#: Builds a request's value and headers from its head (request id, model, version, reply-to,
#: deadline, attributes); raises ``ContractError`` for bad input, before anything is sent.
Build = Callable[[dict[str, Any]], tuple[bytes, Sequence[tuple[str, bytes]]]]


class Requests:
    """Asks models and waits for their answers; safe to use from many threads at once."""

    def __init__(self, core: Core, client_id: str, routes: Callable[[], RouteTable]) -> None:
        self.core = core
        self._routes = routes
        #: This client's reply topic (``replies.<client_id>``), owned from the first request on.
        self._replies = Lazy(lambda: ReplyListener(core.settings, client_id))
        #: Requests go out at once (no linger: someone waits for each), not with the client's bulk producer.
        self._producer = Lazy(lambda: Producer(core.settings, metrics=core.metrics, overrides={"linger.ms": 0}))

    def prediction(
        self,
        model: str,
        version: str | None,
        inputs: Mapping[str, Any],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Prediction:
        """The prediction of ``model`` for ``inputs`` (``Client.predict``)."""
        reply = self.ask(model, version, {"inputs": dict(inputs)}, InferenceRequest, timeout, request_id, attributes)
        return answer(Prediction, model, reply)

    async def prediction_async(
        self,
        model: str,
        version: str | None,
        inputs: Mapping[str, Any],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Prediction:
        """``prediction`` for asyncio code (``Client.predict_async``)."""
        fields = {"inputs": dict(inputs)}
        return answer(
            Prediction,
            model,
            await self.ask_async(model, version, fields, InferenceRequest, timeout, request_id, attributes),
        )

    def embedding(
        self,
        model: str,
        version: str | None,
        text: str,
        document_id: str | None,
        timeout: float,
        attributes: Mapping[str, str] | None,
        index: bool = True,
    ) -> Embedding:
        """The embedding of ``text`` by ``model`` (``Client.embed``), indexed under ``document_id`` if ``index``."""
        request_id = uuid.uuid4().hex
        fields = {"text": text, "document_id": document_id or request_id, "index": index}
        return answer(
            Embedding, model, self.ask(model, version, fields, EmbeddingRequest, timeout, request_id, attributes)
        )

    def ask(
        self,
        model: str,
        version: str | None,
        fields: dict[str, Any],
        contract: type[InferenceRequest] | type[EmbeddingRequest],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Reply:
        """Send one request and wait for its answer; ``RequestTimeoutError`` when none comes within ``timeout``."""
        return self.ask_built(model, version, _builder(contract, fields), timeout, request_id, attributes)

    def ask_built(
        self,
        model: str,
        version: str | None,
        build: Build,
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Reply:
        """``ask`` for a request whose value ``build`` makes from its head (a columnar request, ...)."""
        name, chosen, request_id = _target(model, version, request_id)
        chosen = chosen or self._routes().resolve(name, request_id)
        pending = self._send(name, chosen, build, timeout, request_id, attributes, asynchronous=False)
        return pending.wait()

    async def ask_async(
        self,
        model: str,
        version: str | None,
        fields: dict[str, Any],
        contract: type[InferenceRequest] | type[EmbeddingRequest],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Reply:
        """``ask`` for asyncio code: sent from the event loop, the answer awaited without a thread.

        What may block (opening the reply topic and the producer on first use, reading the
        routes for a bare name) runs in a thread.
        """
        name, chosen, request_id = _target(model, version, request_id)
        if not chosen:
            chosen = await asyncio.to_thread(lambda: self._routes().resolve(name, request_id))
        if self._replies.opened is None or self._producer.opened is None:
            await asyncio.to_thread(lambda: (self._replies.get(), self._producer.get()))
        build = _builder(contract, fields)
        pending = self._send(name, chosen, build, timeout, request_id, attributes, asynchronous=True)
        return await pending.wait_async()

    def _send(
        self,
        name: str,
        chosen: str,
        build: Build,
        timeout: float,
        request_id: str,
        attributes: Mapping[str, str] | None,
        *,
        asynchronous: bool,
    ) -> _Pending:
        """Produce the request, its reply expected in this thread or (``asynchronous``) in the running loop."""
        replies = self._replies.get()
        value, headers = build(
            {
                "request_id": request_id,
                "model": name,
                "version": chosen,
                "reply_to": replies.topic,
                "deadline": utcnow() + timedelta(seconds=timeout),
                "attributes": dict(attributes or {}),
            }
        )
        # One request, one trace: the caller's (tracing.use, or its OpenTelemetry span), else a new one.
        headers = [*headers, (TRACEPARENT, outgoing(self.core.settings.tracing.sample_ratio).header)]
        pending = _Pending(
            replies,
            self._producer.get(),
            replies.expect_async(request_id) if asynchronous else replies.expect(request_id),
            f"{name}:{chosen}",
            request_id,
            self.core.settings.topics.request_topic(name, chosen),
            timeout,
        )
        try:
            # No flush: it would wait for every thread's records. The request's own delivery
            # report (served by any poll) fails the call at once if the broker refused it.
            pending.delivered = pending.producer.produce_watched(pending.topic, value, request_id.encode(), headers)
            pending.producer.poll(0)
        except BaseException:
            replies.forget(request_id)
            raise
        return pending

    def warm(self, timeout: float = 5.0) -> None:
        """Open now what a first ``predict()`` or ``embed()`` opens: the reply topic and a connected request producer.

        A first request otherwise pays for these inside its own deadline: the broker
        connection and the idempotent producer's id came to about a second on a busy machine.
        """
        self._replies.get()
        self._producer.get().raw.list_topics(timeout=timeout)

    def close(self) -> None:
        """Release the request producer and the reply topic's listener (a later request opens new ones)."""
        self._producer.close()
        self._replies.close()


R = TypeVar("R", Prediction, Embedding, PredictionBatch)


def _builder(contract: type[InferenceRequest] | type[EmbeddingRequest], fields: dict[str, Any]) -> Build:
    """A ``Build`` of one JSON request of ``contract`` with ``fields`` (validated at once)."""
    codec = codec_for(contract)

    def build(head: dict[str, Any]) -> tuple[bytes, Sequence[tuple[str, bytes]]]:
        request = codec.validate({**head, **fields})
        return codec.encode(request), [codec.header]

    return build


def _target(model: str, version: str | None, request_id: str | None) -> tuple[str, str, str]:
    """(name, the version given or pinned in ``name:version`` or "" for the route's pick, request id)."""
    name, _, pinned = model.partition(":")
    return name, version or pinned, request_id or uuid.uuid4().hex


_EXPECTED = {
    Prediction: "a prediction: use embed()",
    Embedding: "an embedding: use predict()",
    PredictionBatch: "a prediction batch",
}


def answer(kind: type[R], model: str, reply: Reply) -> R:
    """The reply as what the call expects; ContractError when the model is of the other kind."""
    if not isinstance(reply, kind):
        raise ContractError(f"{model} answered with a {reply.schema_name}, not {_EXPECTED[kind]}")
    return reply


class _Pending:
    """One request sent: its reply to wait for (in a thread or in asyncio), and its own delivery report."""

    def __init__(
        self,
        replies: ReplyListener,
        producer: Producer,
        reply: concurrent.futures.Future[Reply] | asyncio.Future[Reply],
        ref: str,
        request_id: str,
        topic: str,
        timeout: float,
    ) -> None:
        self.replies, self.producer, self.reply = replies, producer, reply
        self.ref, self.request_id, self.topic, self.timeout = ref, request_id, topic, timeout
        self.deadline = time.monotonic() + timeout
        self.delivered: concurrent.futures.Future[None] | None = None

    def _next_wait(self) -> tuple[float, bool]:
        """How long to wait for the reply now, and whether that is the last wait; raises a refusal."""
        delivered = self.delivered
        if delivered is not None and delivered.done() and delivered.exception() is not None:
            raise delivered.exception()  # type: ignore[misc]
        left = self.deadline - time.monotonic()
        return min(max(left, 0.0), _POLL_S), left <= _POLL_S

    def wait(self) -> Reply:
        """The answer; ``RequestTimeoutError`` when none comes in time."""
        reply = self.reply
        assert isinstance(reply, concurrent.futures.Future)
        try:
            while True:
                wait, last = self._next_wait()
                try:
                    return reply.result(timeout=wait)
                except concurrent.futures.TimeoutError:
                    if last:
                        raise self._timeout() from None
                self.producer.poll(0)  # serves delivery reports: ours may be a refusal
        finally:
            self.replies.forget(self.request_id)

    async def wait_async(self) -> Reply:
        """``wait`` in asyncio, for a reply expected in this loop."""
        reply = self.reply
        assert isinstance(reply, asyncio.Future)
        try:
            while True:
                wait, last = self._next_wait()
                if (await asyncio.wait({reply}, timeout=wait))[0]:
                    return reply.result()
                if last:
                    raise self._timeout()
                self.producer.poll(0)
        finally:
            self.replies.forget(self.request_id)

    def _timeout(self) -> RequestTimeoutError:
        self.producer.poll(0)  # a delivery report may be waiting since the last wait
        if self.delivered is None or not self.delivered.done():
            return RequestTimeoutError(
                f"request {self.request_id} to {self.ref} was not even acknowledged by the broker "
                f"within {self.timeout:g}s: is the broker reachable and not overloaded?"
            )
        return RequestTimeoutError(
            f"no answer to request {self.request_id} from {self.ref} within {self.timeout:g}s: "
            f"is a worker serving {self.topic}? (a request it could not serve is on the dead-letter topic: "
            "`inferstream dlq list`)"
        )
