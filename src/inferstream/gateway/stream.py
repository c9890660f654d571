"""``GET /v1/predictions/stream``: server-sent events of new predictions; the SSE plumbing of every stream.

One Kafka reader per topic and gateway (:mod:`inferstream.connectors.kafka.fanout`)
feeds every client; a client that falls too far behind gets a last event
``dropped`` with the reason, and its stream ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from sse_starlette import EventSourceResponse

from inferstream.connectors.kafka.fanout import Fanout, FanoutSubscriber
from inferstream.errors import KafkaError, TopicError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import GRACE_S, Gateway
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Contract, Prediction

C = TypeVar("C", bound=Contract)

# A stream client whose socket takes nothing for this long is disconnected (its
# queue was emptied when it fell behind; this only frees the connection).
SEND_TIMEOUT_S = 60.0
PING_S = 15.0
#: The OpenAPI description of a stream's answer.
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The event stream."}
}


def router(state: Gateway) -> APIRouter:
    """The prediction stream route."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("read"))], route_class=JsonRoute)
    gateway_metrics = state.gateway_metrics

    @routes.get(
        "/predictions/stream",
        summary="Server-sent events of new predictions",
        description=(
            "Each prediction is an event `prediction` whose data is the prediction's JSON and whose id is its "
            "request id. A client that falls too far behind gets a last event `dropped` (data: "
            '`{"reason": ...}`) and the stream ends; reconnect to go on from the newest prediction.'
        ),
        response_class=Response,
        responses=STREAM_RESPONSES,
    )
    async def stream(
        model: Annotated[str | None, Query(description="Only predictions of NAME or NAME:VERSION.")] = None,
    ) -> EventSourceResponse:
        name, _, version = (model or "").partition(":")

        def accept(prediction: Prediction) -> bool:
            return (not name or prediction.model == name) and (not version or prediction.version == version)

        subscriber = await subscribe(state.predictions, accept if model else None)
        gateway_metrics.stream_clients.inc()

        def ended() -> None:
            state.predictions.unsubscribe(subscriber)
            gateway_metrics.stream_clients.dec()

        return sse(
            subscriber,
            "prediction",
            codec_for(Prediction).encode,
            lambda p: p.request_id,
            sent=gateway_metrics.stream_sent.inc,
            ended=ended,
        )

    return routes


async def subscribe(fanout: Fanout[C], accept: Callable[[C], bool] | None) -> FanoutSubscriber[C]:
    """A new subscriber of ``fanout``; 503 when its topic is missing or Kafka cannot be reached."""
    try:
        return await fanout.subscribe(accept)
    except TopicError as exc:
        raise ApiError(503, "topic_missing", str(exc)) from None
    except KafkaError as exc:
        raise ApiError(503, "kafka_unavailable", str(exc)) from None


def sse(
    subscriber: FanoutSubscriber[C],
    event: str,
    encode: Callable[[C], bytes],
    key: Callable[[C], str],
    *,
    sent: Callable[[int], None],
    ended: Callable[[], None],
) -> EventSourceResponse:
    """A server-sent event ``event`` for each record the subscriber gets (data: its JSON, id: ``key``).

    When the fan-out drops the subscriber (too slow, or the gateway stops) a last event
    ``dropped`` says why; ``ended`` runs when the stream is over, however it ended.
    """
    return EventSourceResponse(
        _events(subscriber, event.encode(), encode, key, sent, ended),
        ping=PING_S,
        # On shutdown the fan-out ends each stream with a last event: let it go out.
        shutdown_grace_period=GRACE_S / 2,
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store"},
    )


async def _events(
    subscriber: FanoutSubscriber[C],
    event: bytes,
    encode: Callable[[C], bytes],
    key_of: Callable[[C], str],
    sent: Callable[[int], None],
    ended: Callable[[], None],
) -> AsyncIterator[bytes]:
    event_line = b"event: %s\r\n" % event
    try:
        async for batch in subscriber.batches():
            chunks: list[bytes] = []
            append = chunks.append
            for record, raw in batch:
                # SSE data is one line: records on the topic are compact JSON, but re-encode any that are not.
                data = raw if b"\n" not in raw and b"\r" not in raw else encode(record)
                key = key_of(record).encode()
                append(event_line)
                if b"\n" not in key and b"\r" not in key:
                    append(b"id: %s\r\n" % key)
                append(b"data: %s\r\n\r\n" % data)
            yield b"".join(chunks)
            sent(len(batch))
        if subscriber.dropped is not None:
            reason = json.dumps({"reason": subscriber.dropped}).encode()
            yield b"event: dropped\r\ndata: %s\r\n\r\n" % reason
    finally:
        ended()
