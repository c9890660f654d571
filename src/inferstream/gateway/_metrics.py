"""The gateway's own metrics, and the middleware that counts and times every answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from inferstream.gateway._body import ASGIApp, Message, Receive, Scope, Send
from inferstream.metrics import Metrics


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


class Observe:
    """Counts answers by route template and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.seconds.labels(route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, watched_send)
