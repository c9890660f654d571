"""``GET /v1/predictions/stream``: server-sent events of new predictions; the SSE plumbing of every stream.

One Kafka reader per topic and gateway (:mod:`inferstream.connectors.kafka.fanout`)
feeds every client; a client that falls too far behind gets a last event
``dropped`` with the reason, and its stream ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from operator import itemgetter
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from sse_starlette import EventSourceResponse

from inferstream.connectors.kafka.fanout import Subscription
from inferstream.errors import KafkaError, TopicError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import GRACE_S, Gateway

S = TypeVar("S", bound=Subscription[Any])
#: What a stream sends: items whose second member is the record's JSON bytes.
T = TypeVar("T", bound=tuple[Any, bytes])

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
        where = {field: value for field, value in (("model", name), ("version", version)) if value}
        # Predictions go out as the bytes they came in: checked by the fan-out, never built.
        subscriber = await subscribe(state.predictions.subscribe_raw(where))
        gateway_metrics.stream_clients.inc()

        def ended() -> None:
            state.predictions.unsubscribe(subscriber)
            gateway_metrics.stream_clients.dec()

        return sse(subscriber, "prediction", itemgetter(0), sent=gateway_metrics.stream_sent.inc, ended=ended)

    return routes


async def subscribe(subscribing: Awaitable[S]) -> S:
    """The new subscriber of a fan-out; 503 when its topic is missing or Kafka cannot be reached."""
    try:
        return await subscribing
    except TopicError as exc:
        raise ApiError(503, "topic_missing", str(exc)) from None
    except KafkaError as exc:
        raise ApiError(503, "kafka_unavailable", str(exc)) from None


def sse(
    subscriber: Subscription[T],
    event: str,
    key: Callable[[T], str],
    *,
    sent: Callable[[int], None],
    ended: Callable[[], None],
) -> EventSourceResponse:
    """A server-sent event ``event`` for each item the subscriber gets (data: its JSON bytes, id: ``key``).

    When the fan-out drops the subscriber (too slow, or the gateway stops) a last event
    ``dropped`` says why; ``ended`` runs when the stream is over, however it ended.
    """
    return EventSourceResponse(
        _events(subscriber, event.encode(), key, sent, ended),
        ping=PING_S,
        # On shutdown the fan-out ends each stream with a last event: let it go out.
        shutdown_grace_period=GRACE_S / 2,
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store"},
    )


async def _events(
    subscriber: Subscription[T],
    event: bytes,
    key_of: Callable[[T], str],
    sent: Callable[[int], None],
    ended: Callable[[], None],
) -> AsyncIterator[bytes]:
    try:
        # All the events queued now go out as one chunk: one write, however many events.
        async for batch in subscriber.batches():
            yield frame(event, [key_of(item) for item in batch], [item[1] for item in batch])
            sent(len(batch))
        if subscriber.dropped is not None:
            reason = json.dumps({"reason": subscriber.dropped}).encode()
            yield b"event: dropped\r\ndata: %s\r\n\r\n" % reason
    finally:
        ended()


def frame(event: bytes, keys: Sequence[str], data: Sequence[bytes]) -> bytes:
    """The server-sent events ``event`` of records (data: their JSON bytes, id: their keys), in one chunk.

    An event's data and id are one line each. Records on a topic are compact JSON (one
    line), and so are keys, as a rule; the rest is mended record by record: JSON holds
    line breaks only as whitespace between tokens (never inside a string), so they become
    spaces, and a key with a line break has no id line.
    """
    one = b"event: " + event.replace(b"%", b"%%") + b"\r\nid: %s\r\ndata: %s\r\n\r\n"
    joined_keys, joined_data = "".join(keys), b"".join(data)
    if "\n" not in joined_keys and "\r" not in joined_keys and b"\n" not in joined_data and b"\r" not in joined_data:
        return b"".join([one % (key.encode(), value) for key, value in zip(keys, data, strict=True)])
    chunks = []
    for key, value in zip(keys, data, strict=True):
        line = value.replace(b"\r", b" ").replace(b"\n", b" ")
        if "\n" in key or "\r" in key:
            chunks.append(b"event: " + event + b"\r\ndata: " + line + b"\r\n\r\n")
        else:
            chunks.append(one % (key.encode(), line))
    return b"".join(chunks)
