"""The middleware that makes each HTTP request one trace: its ``traceparent`` goes on to Kafka.

A request's W3C ``traceparent`` header (malformed: ignored) is the parent of what the
request sends (predict, infer, events, embeddings: :func:`inferstream.tracing.use`, which
the gateway's thread pool carries into its threads). With ``tracing.enabled`` the gateway
records a ``SERVER`` span per request, the child of that header, and the records it sends
name that span as their parent. Without a header, the request starts a new trace (sampled
with ``tracing.sample_ratio``): every record one HTTP request sends (the texts of one
embeddings call, the events of one list) is in that one trace.
"""

from __future__ import annotations

from inferstream.gateway._body import ASGIApp, Message, Receive, Scope, Send, header
from inferstream.tracing import Spans, outgoing, parse, traceparent_of, use


class Trace:
    """Sets the trace of each HTTP request (and records its span when tracing is on)."""

    def __init__(self, app: ASGIApp, spans: Spans | None, sample_ratio: float = 1.0) -> None:
        self.app = app
        self.spans = spans
        self.sample_ratio = sample_ratio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = parse(header(scope, b"traceparent"))
        if self.spans is None:
            with use(parent or outgoing(self.sample_ratio)):
                await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        span = self.spans.request(method, parent, {"http.request.method": method, "url.path": scope.get("path", "")})

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", int(message["status"]))
            await send(message)

        try:
            with use(traceparent_of(span)):
                await self.app(scope, receive, watched_send)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is not None:  # the route template, as the metrics name it
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.end()
