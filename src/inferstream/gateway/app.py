"""The gateway's app factory, and running it: under uvicorn until a signal, or in a thread.

:func:`create_app` builds the shared state (:class:`inferstream.gateway._state.Gateway`),
includes one router per interface and adds the middleware (body limit, metrics, and
the hot routes answered directly: :mod:`inferstream.gateway._direct`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.fanout import Fanout, Subscription
from inferstream.errors import ConfigError, InferstreamError
from inferstream.gateway import alerts, events, native, oip, openai, operations, search, stream, ui
from inferstream.gateway._auth import KeyRing, bearer, warn_if_open
from inferstream.gateway._body import BodyLimit, JsonBodyError
from inferstream.gateway._direct import Direct
from inferstream.gateway._errors import NATIVE, ApiError, shape_of, validation_message
from inferstream.gateway._metrics import GatewayMetrics, Observe
from inferstream.gateway._state import GRACE_S, Gateway
from inferstream.gateway._trace import Trace
from inferstream.metrics import Metrics
from inferstream.runtime import settle
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Contract, DriftAlert, Prediction
from inferstream.serving.repository import ModelRepository
from inferstream.tracing import spans_for

C = TypeVar("C", bound=Contract)


def _fanout(
    settings: Settings,
    topic: str,
    contract: type[C],
    on_drop: Callable[[Subscription[Any], str], None] | None = None,
    id_field: str | None = None,
    filter_fields: Sequence[str] = (),
) -> Fanout[C]:
    """The one reader of a platform topic that feeds the gateway's streams of it."""
    gateway = settings.gateway
    return Fanout(
        settings,
        settings.topics.platform_topics()[topic],
        codec_for(contract),
        queue_size=gateway.sse_queue_size,
        drop_after_s=gateway.sse_drop_after_s,
        on_drop=on_drop,
        id_field=id_field,
        filter_fields=filter_fields,
    )


def create_app(settings: Settings, *, client: Client | None = None, metrics: Metrics | None = None) -> FastAPI:
    """The gateway's FastAPI app; the client is closed (and its reply topic deleted) on shutdown."""
    metrics = metrics or Metrics(namespace=settings.metrics.namespace)
    client = client or Client(settings, metrics=metrics)
    gateway_metrics = metrics.part(GatewayMetrics)
    predictions = _fanout(
        settings,
        "predictions",
        Prediction,
        on_drop=lambda _subscriber, _reason: gateway_metrics.stream_dropped.inc(),
        # The prediction stream sends each prediction's bytes with its request id, filtered on model and version.
        id_field="request_id",
        filter_fields=("model", "version"),
    )
    drift_alerts = _fanout(settings, "drift-alerts", DriftAlert)
    repository = ModelRepository(settings.models_dir)
    keys = KeyRing(settings)
    state = Gateway(
        settings, client, metrics, gateway_metrics, predictions, drift_alerts, bearer(keys), keys, repository
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        yield
        await state.end_streams()
        await run_in_threadpool(state.close)

    # /docs loads Swagger UI from files served here (the fastapi-offline package's), not
    # from a CDN: it works offline, and a page of the gateway runs no outside code.
    app = FastAPIOffline(
        title="inferstream gateway",
        version="1",
        description="Predictions, prediction streams and events over HTTP, through Kafka.",
        lifespan=lifespan,
        redoc_url=None,
        # The gateway's own middleware traces each request (gateway/_trace.py): FastAPI's
        # spans would double them, and its check for a provider cost every request ~15 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.gateway = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response(shape_of(request.scope))

    @app.exception_handler(JsonBodyError)
    async def _json_body_error(request: Request, exc: JsonBodyError) -> JSONResponse:
        return exc.error.response(shape_of(request.scope))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        shape = shape_of(request.scope)
        if shape is NATIVE:  # FastAPI's own 422 body, as the native routes always answered
            return await request_validation_exception_handler(request, exc)
        message, param = validation_message(exc.errors())
        return ApiError(400, "invalid_request", message, param=param).response(shape)

    interfaces = (native, stream, events, search, alerts, openai, oip, operations, ui)
    routers = [interface.router(state) for interface in interfaces]
    routers.append(oip.probes(state))
    for router in routers:
        app.include_router(router)
    routes = [route for router in routers for route in router.routes]
    # Innermost: the hot routes answered past FastAPI, inside the body limit and the metrics.
    app.add_middleware(Direct, routes=[*native.direct(state), *oip.direct(state)], api_routes=routes, keys=keys)
    # Around the routes (direct ones too): each request's traceparent (and span) for what it sends.
    app.add_middleware(
        Trace, spans=spans_for(settings.tracing, "inferstream-gateway"), sample_ratio=settings.tracing.sample_ratio
    )
    app.add_middleware(Observe, metrics=gateway_metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.gateway.max_body_bytes, routes=routes)
    return app


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway with uvicorn until SIGINT/SIGTERM (127.0.0.1:8080 by default)."""
    config = settings.gateway
    host = host or config.host
    warn_if_open(settings, host)  # before the app's client contacts Kafka
    app = create_app(settings)
    settle()
    _GatewayServer(_config(settings, app, host, config.port if port is None else port), app.state.gateway).run()


def _config(settings: Settings, app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # HTTPS when a certificate and its key are configured (both, or neither).
    gateway = settings.gateway
    if (gateway.tls_certfile is None) != (gateway.tls_keyfile is None):
        raise ConfigError("gateway.tls_certfile and gateway.tls_keyfile go together: set both for HTTPS, or neither")
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=GRACE_S,
        ssl_certfile=str(gateway.tls_certfile) if gateway.tls_certfile else None,
        ssl_keyfile=str(gateway.tls_keyfile) if gateway.tls_keyfile else None,
    )


class _GatewayServer(uvicorn.Server):
    """uvicorn's server, ending the prediction streams as soon as it is asked to stop.

    uvicorn waits for open connections before the app's shutdown runs, and a stream
    never ends by itself: each client gets a last ``dropped`` event saying the
    gateway is shutting down, and its response completes.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """On SIGINT/SIGTERM: end the streams, then stop as uvicorn does."""
        self.end_streams()
        super().handle_exit(sig, frame)

    def end_streams(self) -> None:
        """Schedule the end of every stream on the server's loop (callable from any thread)."""
        loop = self.gateway.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: loop.create_task(self.gateway.end_streams()))


class BackgroundGateway:
    """The gateway in a thread of this process, on a free port (tests, benchmarks, notebooks).

    >>> with BackgroundGateway(settings) as gateway:      # doctest: +SKIP
    ...     httpx.get(f"{gateway.url}/healthz")
    """

    def __init__(self, settings: Settings, *, host: str | None = None, port: int = 0) -> None:
        self.settings = settings
        host = host or settings.gateway.host
        warn_if_open(settings, host)
        self.app = create_app(settings)
        self._server = _GatewayServer(_config(settings, self.app, host, port), self.app.state.gateway)
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)
        #: ``http://host:port`` (``https`` with TLS) once started.
        self.url = ""

    def start(self, timeout: float = 30.0) -> Self:
        """Start serving; returns when the socket is bound."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InferstreamError("the gateway did not start: see the log above")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        scheme = "https" if self.settings.gateway.tls_certfile else "http"
        self.url = f"{scheme}://{host}:{port}"
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving (open streams end), close the client, wait for the thread."""
        # A thread gets no signals: end the streams as a signal would, then stop.
        self._server.end_streams()
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
