"""``GET /v1/alerts``: recent drift alerts; ``GET /v1/alerts/stream``: server-sent events of new ones."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from sse_starlette import EventSourceResponse

from inferstream.errors import InferstreamError, TopicError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import Gateway
from inferstream.gateway.stream import STREAM_RESPONSES, sse, subscribe
from inferstream.monitoring.alerts import RepeatFilter, recent_alerts
from inferstream.schemas.records import DriftAlert

Severity = Literal["info", "warning", "critical"]
_MONITOR = Query(description="Only the alerts of this monitor.")
_SEVERITY = Query(description="Only alerts of these severities (repeat the parameter for several).")


def router(state: Gateway) -> APIRouter:
    """The alerts routes."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("read"))], route_class=JsonRoute)

    @routes.get(
        "/alerts",
        summary="Recent drift alerts, newest first",
        description="Read from the alerts topic up to now: the last `limit` that pass the filters.",
        responses={503: {"description": "The alerts topic is missing, or Kafka cannot be reached."}},
    )
    async def recent(
        monitor: Annotated[str | None, _MONITOR] = None,
        severity: Annotated[list[Severity] | None, _SEVERITY] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="How many alerts at most.")] = 100,
    ) -> dict[str, Any]:
        def read() -> list[DriftAlert]:
            with state.client.subscribe(
                "drift-alerts", schema="drift-alert", from_beginning=True, stop_at_end=True
            ) as stream:
                return recent_alerts(
                    (m.record for m in stream), monitor=monitor, severities=severity or (), limit=limit
                )

        try:
            found = await state.call(read)
        except TopicError as exc:
            raise ApiError(503, "topic_missing", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return {"alerts": [alert.model_dump(mode="json") for alert in found]}

    @routes.get(
        "/alerts/stream",
        summary="Server-sent events of new drift alerts",
        description=(
            "Each new alert is an event `alert` whose data is the alert's JSON and whose id is its id (a "
            "replayed window's repeat is not sent twice). A client that falls behind gets a last event "
            "`dropped` and the stream ends."
        ),
        response_class=Response,
        responses=STREAM_RESPONSES,
    )
    async def stream(
        monitor: Annotated[str | None, _MONITOR] = None,
        severity: Annotated[list[Severity] | None, _SEVERITY] = None,
    ) -> EventSourceResponse:
        first = RepeatFilter()
        wanted = set(severity or ())

        def accept(alert: DriftAlert) -> bool:
            chosen = (monitor is None or alert.monitor == monitor) and (not wanted or alert.severity in wanted)
            return chosen and first(alert)

        subscriber = await subscribe(state.alerts.subscribe(accept))
        return sse(
            subscriber,
            "alert",
            lambda item: item[0].id,
            sent=lambda _count: None,
            ended=lambda: state.alerts.unsubscribe(subscriber),
        )

    return routes
