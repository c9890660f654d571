"""The HTTP gateway: predictions, prediction streams and events over HTTP, through Kafka.

============================================  ==============================================
``POST /v1/models/{name}/predict``            one prediction, request/reply through Kafka
``GET  /v1/predictions/stream?model=``        server-sent events of the predictions topic
``POST /v1/events``                           produce one event or a list, validated
``GET  /healthz``                             200 when the broker answers, else 503
``GET  /metrics``                             Prometheus text
``GET  /openapi.json`` and ``/docs``          the API's schema (Swagger UI served here, no CDN)
============================================  ==============================================

Thin: each endpoint parses, calls the SDK (:class:`inferstream.client.Client`) and
returns; what the gateway adds is HTTP's own business: a bearer token (when
``gateway.token`` is set, every ``/v1`` call and ``/metrics`` need it; ``/healthz``
and the schema stay open for probes; without one the gateway listens on loopback
only, unless ``gateway.allow_insecure``), a body size limit (413), status codes for the
SDK's errors, and one shared Kafka reader fanning predictions out to the stream
clients (:mod:`inferstream.connectors.kafka.fanout`). Errors come back as
``{"error": code, "detail": message, ...}``.

>>> app = create_app(Settings.load())            # doctest: +SKIP
>>> serve(Settings.load())                       # doctest: +SKIP  (uvicorn on 127.0.0.1:8080)
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Annotated, Any, Self

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.fanout import Fanout, FanoutSubscriber
from inferstream.errors import (
    ConfigError,
    ContractError,
    InferstreamError,
    KafkaError,
    ModelError,
    RecordValidationError,
    RequestTimeoutError,
    SearchError,
    TopicError,
)
from inferstream.metrics import Metrics
from inferstream.schemas import jsonpolicy
from inferstream.schemas.codec import codec_for
from inferstream.schemas.jsonpolicy import JsonPolicyError
from inferstream.schemas.records import Event, Prediction

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A stream client whose socket takes nothing for this long is disconnected (its
# queue was emptied when it fell behind; this only frees the connection).
_SEND_TIMEOUT_S = 60.0
_PING_S = 15.0
# Open connections get this long to finish when the gateway stops.
_GRACE_S = 10


class SearchBody(BaseModel):
    """The body of ``POST /v1/search``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000, description="What to look for (embedded like the index).")
    k: int = Field(default=10, ge=1, le=1000, description="How many hits.")
    filters: dict[str, str | list[str]] | None = Field(
        default=None, description="Field → value(s) the hits must have (e.g. `attributes.lang`)."
    )
    hybrid: bool = Field(default=False, description="Fuse kNN with BM25 on the text (reciprocal rank fusion).")
    num_candidates: int | None = Field(default=None, ge=1, le=10_000, description="kNN candidates per shard.")


class PredictBody(BaseModel):
    """The body of ``POST /v1/models/{name}/predict``."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, JsonValue] = Field(description="Model inputs by name (features, text, ...).")
    version: str | None = Field(default=None, description="Model version (or put it in the path: `name:version`).")
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for the prediction (default and maximum: the gateway's)."
    )
    request_id: str | None = Field(
        default=None, min_length=1, max_length=512, description="Your id for the request (default: a fresh one)."
    )
    attributes: dict[str, str] = Field(default_factory=dict, description="Carried through to the prediction.")


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": message, ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def response(self) -> JSONResponse:
        """This error as a JSON response."""
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        body = {"error": self.code, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass
class GatewayMetrics:
    """The gateway's own metrics, registered beside the process's :class:`Metrics`."""

    metrics: Metrics
    requests: Counter = field(init=False)
    seconds: Histogram = field(init=False)
    stream_clients: Gauge = field(init=False)
    stream_sent: Counter = field(init=False)
    stream_dropped: Counter = field(init=False)

    def __post_init__(self) -> None:
        ns, reg = self.metrics.namespace, self.metrics.registry
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered.", ["route", "status"], namespace=ns, registry=reg
        )
        self.seconds = Histogram(
            "gateway_request_seconds",
            "Time to answer an HTTP request (streams: until the stream opened).",
            ["route"],
            namespace=ns,
            registry=reg,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.stream_clients = Gauge(
            "gateway_stream_clients", "Clients reading the prediction stream.", namespace=ns, registry=reg
        )
        self.stream_sent = Counter(
            "gateway_stream_sent", "Predictions sent to stream clients.", namespace=ns, registry=reg
        )
        self.stream_dropped = Counter(
            "gateway_stream_dropped", "Stream clients dropped for falling behind.", namespace=ns, registry=reg
        )


@dataclass
class Gateway:
    """What the endpoints share: the settings, the SDK client, the stream fan-out, metrics."""

    settings: Settings
    client: Client
    metrics: Metrics
    gateway_metrics: GatewayMetrics
    predictions: Fanout[Prediction]
    loop: asyncio.AbstractEventLoop | None = None
    _known_topics: set[str] = field(default_factory=set)


def create_app(settings: Settings, *, client: Client | None = None, metrics: Metrics | None = None) -> FastAPI:
    """The gateway's FastAPI app; the client is closed (and its reply topic deleted) on shutdown."""
    metrics = metrics or Metrics(namespace=settings.metrics.namespace)
    client = client or Client(settings, metrics=metrics)
    gateway_metrics = GatewayMetrics(metrics)
    predictions: Fanout[Prediction] = Fanout(
        settings,
        settings.topics.platform_topics()["predictions"],
        codec_for(Prediction),
        queue_size=settings.gateway.sse_queue_size,
        drop_after_s=settings.gateway.sse_drop_after_s,
        on_drop=lambda _subscriber, _reason: gateway_metrics.stream_dropped.inc(),
    )
    state = Gateway(settings, client, metrics, gateway_metrics, predictions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        yield
        await predictions.close()
        await run_in_threadpool(client.close)

    # /docs loads Swagger UI from files served here (the fastapi-offline package's), not
    # from a CDN: it works offline, and a page of the gateway runs no outside code.
    app = FastAPIOffline(
        title="inferstream gateway",
        version="1",
        description="Predictions, prediction streams and events over HTTP, through Kafka.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.gateway = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(_JsonBodyError)
    async def _json_body_error(request: Request, exc: _JsonBodyError) -> JSONResponse:
        return exc.error.response()

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorize(settings))], route_class=_StrictJsonRoute)
    _predict_routes(v1, state)
    _stream_routes(v1, state)
    _event_routes(v1, state)
    _search_routes(v1, state)
    app.include_router(v1)
    _operations_routes(app, state)
    app.add_middleware(_Observe, metrics=gateway_metrics)
    app.add_middleware(_BodyLimit, max_bytes=settings.gateway.max_body_bytes)
    return app


# -- JSON bodies ------------------------------------------------------------------------


class _JsonBodyError(HTTPException):
    # An HTTPException, so that FastAPI's body reading passes it on (it answers 400 to others).
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.detail)
        self.error = error


class _StrictJsonRequest(Request):
    """A request whose JSON body is parsed under the platform's JSON policy (no NaN, ...)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = jsonpolicy.loads(await self.body())
            except JsonPolicyError as exc:
                error = ApiError(422, "invalid_json", f"the body is not valid JSON: {exc}", field=exc.problem.field)
                raise _JsonBodyError(error) from None
        return self._json


class _StrictJsonRoute(APIRoute):
    """Routes whose bodies are read by :class:`_StrictJsonRequest`: one JSON policy for every entry point."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict


# -- authentication ---------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ``::1`` or ``localhost``."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(settings: Settings, host: str) -> bool:
    """Refuse to listen beyond loopback without a token; True when the gateway will do so anyway.

    ConfigError when ``host`` is not a loopback address, ``gateway.token`` is not set and
    ``gateway.allow_insecure`` is off. Nothing here touches the network.
    """
    if settings.gateway.token is not None or is_loopback(host):
        return False
    if not settings.gateway.allow_insecure:
        raise ConfigError(
            f"the gateway would listen on {host} with no token: anyone who can reach it could predict, "
            "produce events and read every prediction. Set a token (INFERSTREAM_GATEWAY__TOKEN, or "
            "gateway.token in the config file), listen on 127.0.0.1, or pass --insecure-no-token "
            "(gateway.allow_insecure = true) to serve it open anyway"
        )
    return True


def _warn_if_open(settings: Settings, host: str) -> None:
    if check_exposure(settings, host):
        log.warning(
            "INSECURE: the gateway listens on %s with no token (gateway.allow_insecure): anyone who can "
            "reach it can predict, produce events and read every prediction; set INFERSTREAM_GATEWAY__TOKEN",
            host,
        )


def _authorize(settings: Settings) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    token = settings.gateway.token
    expected = token.get_secret_value().encode() if token is not None else None

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        # Constant time (hmac.compare_digest): how much of a guess matched must not show in the response time.
        if not secrets.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "send the gateway's token as `Authorization: Bearer <token>`")

    return authorize


# -- predict ----------------------------------------------------------------------------


def _predict_routes(router: APIRouter, state: Gateway) -> None:
    settings = state.settings
    limit = settings.gateway.predict_timeout_s

    @router.post(
        "/models/{name}/predict",
        response_model=Prediction,
        summary="One prediction from a model (request/reply through Kafka)",
        responses={
            404: {"description": "No such model version (its request topic does not exist)."},
            422: {"description": "The request is invalid."},
            504: {"description": "No prediction within the timeout."},
        },
    )
    async def predict(name: str, body: PredictBody) -> Response:
        model, _, pinned = name.partition(":")
        version = body.version or pinned or None
        if version is not None:
            await _require_model(state, model, version)
        timeout = min(body.timeout or limit, limit)
        try:
            prediction = await run_in_threadpool(
                state.client.predict,
                model,
                body.inputs,
                version=version,
                timeout=timeout,
                request_id=body.request_id,
                attributes=body.attributes,
            )
        except RequestTimeoutError as exc:
            raise ApiError(504, "timeout", str(exc), model=model, version=version, timeout_s=timeout) from None
        except RecordValidationError as exc:
            problems = [{"field": p.field, "reason": p.reason} for p in exc.problems]
            raise ApiError(422, "invalid_request", str(exc), problems=problems) from None
        except ModelError as exc:
            raise ApiError(404, "unknown_model", str(exc), model=model) from None
        except ConfigError as exc:  # a bare model name without a route on the control topic
            raise ApiError(404, "no_route", str(exc), model=model) from None
        except ContractError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return Response(codec_for(Prediction).encode(prediction), media_type="application/json")


def _search_routes(router: APIRouter, state: Gateway) -> None:
    @router.post("/search", summary="Search the vector index (kNN, optionally hybrid with BM25)")
    async def search(body: SearchBody) -> dict[str, Any]:
        try:
            result = await run_in_threadpool(
                state.client.search,
                body.query,
                body.k,
                filters=body.filters,
                hybrid=body.hybrid,
                num_candidates=body.num_candidates,
            )
        except SearchError as exc:
            raise ApiError(503, "search_unavailable", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(400, "search_failed", str(exc)) from None
        return dataclasses.asdict(result)


async def _require_model(state: Gateway, model: str, version: str) -> None:
    # A request to a version nobody serves would wait for its whole timeout (or for the
    # producer's metadata timeout): say at once that the version does not exist.
    topic = state.settings.topics.request_topic(model, version)
    if topic in state._known_topics:
        return
    try:
        exists = await run_in_threadpool(state.client.topics.exists, topic)
    except KafkaError as exc:
        raise ApiError(503, "kafka_unavailable", str(exc)) from None
    if not exists:
        raise ApiError(
            404,
            "unknown_model",
            f"no model {model}:{version}: its request topic {topic} does not exist "
            f"(serve it with `inferstream serve --model {model}:{version}`)",
            model=model,
            version=version,
        )
    state._known_topics.add(topic)


# -- prediction stream ------------------------------------------------------------------


def _stream_routes(router: APIRouter, state: Gateway) -> None:
    gateway_metrics = state.gateway_metrics

    @router.get(
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
            ping=_PING_S,
            # On shutdown the fan-out ends each stream with a last event: let it go out.
            shutdown_grace_period=_GRACE_S / 2,
            send_timeout=_SEND_TIMEOUT_S,
            headers={"Cache-Control": "no-store"},
        )


async def _events(state: Gateway, subscriber: FanoutSubscriber[Prediction]) -> AsyncIterator[bytes]:
    codec = codec_for(Prediction)
    sent = state.gateway_metrics.stream_sent
    try:
        async for batch in subscriber.batches():
            chunks = []
            for prediction, raw in batch:
                # SSE data is one line: records on the topic are compact JSON, but re-encode any that are not.
                data = raw if not _breaks_line(raw) else codec.encode(prediction)
                key = prediction.request_id.encode()
                chunks.append(b"event: prediction\r\n")
                if not _breaks_line(key):
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


def _breaks_line(data: bytes) -> bool:
    return b"\n" in data or b"\r" in data


# -- events -----------------------------------------------------------------------------


def _event_routes(router: APIRouter, state: Gateway) -> None:
    codec = codec_for(Event)
    schema = Event.model_json_schema()
    body_schema = {"anyOf": [schema, {"type": "array", "items": schema}]}

    @router.post(
        "/events",
        summary="Produce one event or a list of events",
        description="Every record is validated first: if any is invalid, none is produced (422 lists each problem).",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        responses={422: {"description": "A record is invalid: which one, which field, why."}},
    )
    async def events(request: Request) -> dict[str, Any]:
        try:
            parsed = jsonpolicy.loads(await request.body())
        except JsonPolicyError as exc:
            raise ApiError(422, "invalid_json", f"the body is not valid JSON: {exc}", field=exc.problem.field) from None
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
            report = await run_in_threadpool(state.client.produce, "events", result.records)
        except TopicError as exc:
            raise ApiError(503, "topic_missing", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return {"topic": report.topic, "produced": report.produced, "ids": [r.id for r in result.records]}


# -- operations -------------------------------------------------------------------------


def _operations_routes(app: FastAPI, state: Gateway) -> None:
    settings = state.settings

    @app.get("/healthz", summary="Is the broker reachable?", responses={503: {"description": "It is not."}})
    async def healthz() -> JSONResponse:
        try:
            await run_in_threadpool(state.client.topics.list, timeout=5.0)
        except KafkaError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "bootstrap_servers": settings.kafka.bootstrap_servers})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        dependencies=[Depends(_authorize(settings))],
        response_class=Response,
    )
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- middleware -------------------------------------------------------------------------


class _BodyLimit:
    """413 for a body over the limit, on every route: by Content-Length before reading, else as it streams in.

    The body is read here, before the app runs, and replayed to it: the limit never
    surfaces inside a route's own body parsing, where FastAPI turns any error while
    reading into a 400. The app would hold the whole body anyway (every POST is JSON),
    so this costs no memory beyond ``max_bytes`` a request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiError(
            413, "body_too_large", f"the request body is over the gateway's limit of {self.max_bytes} bytes"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await too_large.response()(scope, receive, send)
            return
        messages: deque[Message] = deque()
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left: the app sees it as it would
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await too_large.response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.popleft() if messages else await receive()

        await self.app(scope, replay, send)


class _Observe:
    """Counts answers by route template and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.seconds.labels(route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, watched_send)


# -- running ----------------------------------------------------------------------------


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway with uvicorn until SIGINT/SIGTERM (127.0.0.1:8080 by default)."""
    config = settings.gateway
    host = host or config.host
    _warn_if_open(settings, host)  # before the app's client contacts Kafka
    app = create_app(settings)
    _GatewayServer(
        uvicorn.Config(
            app,
            host=host,
            port=config.port if port is None else port,
            log_level="warning",
            timeout_graceful_shutdown=_GRACE_S,
        ),
        app.state.gateway,
    ).run()


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
            loop.call_soon_threadsafe(lambda: loop.create_task(self.gateway.predictions.close()))


class BackgroundGateway:
    """The gateway in a thread of this process, on a free port (tests, benchmarks, notebooks).

    >>> with BackgroundGateway(settings) as gateway:      # doctest: +SKIP
    ...     httpx.get(f"{gateway.url}/healthz")
    """

    def __init__(self, settings: Settings, *, host: str | None = None, port: int = 0) -> None:
        self.settings = settings
        host = host or settings.gateway.host
        _warn_if_open(settings, host)
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=_GRACE_S,
        )
        self._server = _GatewayServer(config, self.app.state.gateway)
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)
        #: ``http://host:port`` once started.
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
        self.url = f"http://{host}:{port}"
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
