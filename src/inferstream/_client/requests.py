"""Request/reply over Kafka: one request to a model's request topic, its answer on this client's reply topic.

The request carries the client's reply topic and a deadline, so a worker that gets to
it late dead-letters it instead of answering. A bare model name is routed by the
model's route on the control topic, by request id.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from inferstream._client.core import Core, Lazy
from inferstream.connectors.kafka.producer import Producer
from inferstream.connectors.kafka.replies import ReplyListener
from inferstream.errors import ContractError, RequestTimeoutError
from inferstream.schemas._types import utcnow
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Embedding, EmbeddingRequest, InferenceRequest, Prediction
from inferstream.serving.routes import RouteTable

#: How often a waiting call serves the producer's delivery reports (its own may be a failure).
_POLL_S = 0.05


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
        if not isinstance(reply, Prediction):
            raise ContractError(f"{model} answered with a {reply.schema_name}, not a prediction: use embed()")
        return reply

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
        reply = self.ask(model, version, fields, EmbeddingRequest, timeout, request_id, attributes)
        if not isinstance(reply, Embedding):
            raise ContractError(f"{model} answered with a {reply.schema_name}, not an embedding: use predict()")
        return reply

    def ask(
        self,
        model: str,
        version: str | None,
        fields: dict[str, Any],
        contract: type[InferenceRequest] | type[EmbeddingRequest],
        timeout: float,
        request_id: str | None,
        attributes: Mapping[str, str] | None,
    ) -> Prediction | Embedding:
        """Send one request and wait for its answer; ``RequestTimeoutError`` when none comes within ``timeout``."""
        name, _, pinned = model.partition(":")
        request_id = request_id or uuid.uuid4().hex
        chosen = version or pinned or self._routes().resolve(name, request_id)
        replies = self._replies.get()
        codec = codec_for(contract)
        request = codec.validate(
            {
                "request_id": request_id,
                "model": name,
                "version": chosen,
                "reply_to": replies.topic,
                "deadline": utcnow() + timedelta(seconds=timeout),
                "attributes": dict(attributes or {}),
                **fields,
            }
        )
        future = replies.expect(request.request_id)
        topic = self.core.settings.topics.request_topic(name, chosen)
        deadline = time.monotonic() + timeout
        try:
            producer = self._producer.get()
            # No flush: it would wait for every thread's records. The request's own delivery
            # report (served by any poll) fails the call at once if the broker refused it.
            delivered = producer.produce_watched(topic, codec.encode(request), request.key(), [codec.header])
            producer.poll(0)
            while True:
                if delivered.done() and delivered.exception() is not None:
                    raise delivered.exception()  # type: ignore[misc]
                left = deadline - time.monotonic()
                try:
                    return future.result(timeout=min(max(left, 0.0), _POLL_S))
                except concurrent.futures.TimeoutError:
                    if left <= _POLL_S:
                        break
                    producer.poll(0)
            if not delivered.done():
                raise RequestTimeoutError(
                    f"request {request.request_id} to {name}:{chosen} was not even acknowledged by the broker "
                    f"within {timeout:g}s: is the broker reachable and not overloaded?"
                )
            raise RequestTimeoutError(
                f"no answer to request {request.request_id} from {name}:{chosen} within {timeout:g}s: "
                f"is a worker serving {topic}? (a request it could not serve is on the dead-letter topic: "
                "`inferstream dlq list`)"
            )
        finally:
            replies.forget(request.request_id)

    def close(self) -> None:
        """Release the request producer and the reply topic's listener (a later request opens new ones)."""
        self._producer.close()
        self._replies.close()
