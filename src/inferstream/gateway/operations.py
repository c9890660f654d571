"""``GET /healthz`` (open to probes) and ``GET /metrics`` (Prometheus text, behind the token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inferstream.errors import KafkaError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._state import Gateway


def router(state: Gateway) -> APIRouter:
    """The operations routes."""
    routes = APIRouter(route_class=JsonRoute)
    settings = state.settings

    @routes.get("/healthz", summary="Is the broker reachable?", responses={503: {"description": "It is not."}})
    async def healthz() -> JSONResponse:
        try:
            await state.call(state.client.topics.list, timeout=5.0)
        except KafkaError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "bootstrap_servers": settings.kafka.bootstrap_servers})

    @routes.get(
        "/metrics",
        summary="Prometheus metrics",
        dependencies=[Depends(state.authorize("read"))],
        response_class=Response,
    )
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return routes
