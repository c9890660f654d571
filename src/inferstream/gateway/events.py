"""``POST /v1/events``: one event or a list, every record validated before any is produced."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from inferstream.errors import InferstreamError, TopicError
from inferstream.gateway._body import JsonRoute, parse_json
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import Gateway
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Event


def router(state: Gateway) -> APIRouter:
    """The events route."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("produce"))], route_class=JsonRoute)
    codec = codec_for(Event)
    schema = Event.model_json_schema()
    body_schema = {"anyOf": [schema, {"type": "array", "items": schema}]}

    @routes.post(
        "/events",
        summary="Produce one event or a list of events",
        description="Every record is validated first: if any is invalid, none is produced (422 lists each problem).",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        responses={422: {"description": "A record is invalid: which one, which field, why."}},
    )
    async def events(request: Request) -> dict[str, Any]:
        parsed = parse_json(await request.body())
        values = parsed if isinstance(parsed, list) else [parsed]
        if not values:
            raise ApiError(422, "invalid_events", "the body is an empty list: send one event or a list of events")
        result = codec.validate_batch(values)
        if result.errors:
            problems = [
                {"record": index, "field": p.field, "reason": p.reason}
                for index, error in sorted(result.errors.items())
                for p in error.problems
            ]
            raise ApiError(
                422,
                "invalid_events",
                f"{len(result.errors)} of {len(values)} records are invalid; nothing was produced",
                problems=problems,
            )
        try:
            report = await state.call(state.client.produce, "events", result.records)
        except TopicError as exc:
            raise ApiError(503, "topic_missing", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return {"topic": report.topic, "produced": report.produced, "ids": [r.id for r in result.records]}

    return routes
