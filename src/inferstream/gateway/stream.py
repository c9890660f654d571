"""``GET /v1/predictions/stream``: server-sent events of new predictions.

One Kafka reader per gateway (:mod:`inferstream.connectors.kafka.fanout`) feeds
every client; a client that falls too far behind gets a last event ``dropped``
with the reason, and its stream ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sse_starlette import EventSourceResponse

from inferstream.connectors.kafka.fanout import FanoutSubscriber
from inferstream.errors import KafkaError, TopicError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import GRACE_S, Gateway
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Prediction

# A stream client whose socket takes nothing for this long is disconnected (its
# queue was emptied when it fell behind; this only frees the connection).
SEND_TIMEOUT_S = 60.0
PING_S = 15.0


def router(state: Gateway) -> APIRouter:
    """The prediction stream route."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize)], route_class=JsonRoute)
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
        responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
    )
    async def stream(
        model: Annotated[str | None, Query(description="Only predictions of NAME or NAME:VERSION.")] = None,
    ) -> EventSourceResponse:
        name, _, version = (model or "").partition(":")

        def accept(prediction: Prediction) -> bool:
            return (not name or prediction.model == name) and (not version or prediction.version == version)

        try:
            subscriber = await state.predictions.subscribe(accept)
        except TopicError as exc:
            raise ApiError(503, "topic_missing", str(exc)) from None
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        gateway_metrics.stream_clients.inc()
        return EventSourceResponse(
            _events(state, subscriber),
            ping=PING_S,
            # On shutdown the fan-out ends each stream with a last event: let it go out.
            shutdown_grace_period=GRACE_S / 2,
            send_timeout=SEND_TIMEOUT_S,
            headers={"Cache-Control": "no-store"},
        )

    return routes


async def _events(state: Gateway, subscriber: FanoutSubscriber[Prediction]) -> AsyncIterator[bytes]:
    codec = codec_for(Prediction)
    sent = state.gateway_metrics.stream_sent
    try:
        async for batch in subscriber.batches():
            chunks = []
            for prediction, raw in batch:
                # SSE data is one line: records on the topic are compact JSON, but re-encode any that are not.
                data = raw if not breaks_line(raw) else codec.encode(prediction)
                key = prediction.request_id.encode()
                chunks.append(b"event: prediction\r\n")
                if not breaks_line(key):
                    chunks.append(b"id: %s\r\n" % key)
                chunks.append(b"data: %s\r\n\r\n" % data)
            yield b"".join(chunks)
            sent.inc(len(batch))
        if subscriber.dropped is not None:
            reason = json.dumps({"reason": subscriber.dropped}).encode()
            yield b"event: dropped\r\ndata: %s\r\n\r\n" % reason
    finally:
        state.predictions.unsubscribe(subscriber)
        state.gateway_metrics.stream_clients.dec()


def breaks_line(data: bytes) -> bool:
    """Whether ``data`` holds a line break (which would end an SSE field early)."""
    return b"\n" in data or b"\r" in data
