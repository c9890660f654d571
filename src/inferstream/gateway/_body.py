"""Request bodies: one size limit for every route, one JSON policy for every JSON body.

:class:`BodyLimit` answers 413 before the app reads a byte too many;
:class:`JsonRoute` (the route class of every router) parses JSON bodies under the
platform's policy (:mod:`inferstream.schemas.jsonpolicy`: no NaN, no lone
surrogates, bounded nesting) and names the error shape of its interface. Each
protocol's router subclasses it with its own :attr:`JsonRoute.error_shape`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from typing import Any, ClassVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from inferstream.gateway._errors import NATIVE, ApiError, ErrorShape, shape_of
from inferstream.schemas import jsonpolicy
from inferstream.schemas.jsonpolicy import JsonPolicyError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JsonBodyError(HTTPException):
    """A body that is not JSON under the platform's policy (422, carrying the :class:`ApiError`).

    An HTTPException, so that FastAPI's body reading passes it on (it answers 400 to others).
    """

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.detail)
        self.error = error


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case, as ASGI servers give names), as Starlette reads."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def replay(messages: deque[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` (a body read already) first, then what is still to come."""

    async def replayed() -> Message:
        return messages.popleft() if messages else await receive()

    return replayed


def parse_json(body: bytes) -> Any:
    """``body`` parsed under the platform's JSON policy; :class:`ApiError` 422 ``invalid_json`` otherwise."""
    try:
        return jsonpolicy.loads(body)
    except JsonPolicyError as exc:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {exc}", field=exc.problem.field) from None


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed under the platform's JSON policy (no NaN, ...)."""

    async def json(self) -> Any:
        """The body as JSON, parsed once; :class:`JsonBodyError` when the policy refuses it."""
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except ApiError as exc:
                raise JsonBodyError(exc) from None
        return self._json


class JsonRoute(APIRoute):
    """Routes whose bodies are read by :class:`StrictJsonRequest`, and whose errors take ``error_shape``."""

    #: How this route's errors are written (see :mod:`inferstream.gateway._errors`).
    error_shape: ClassVar[ErrorShape] = NATIVE

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`StrictJsonRequest`."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


class BodyLimit:
    """413 for a body over the limit, on every route: by Content-Length before reading, else as it streams in.

    The body is read here, before the app runs, and replayed to it: the limit never
    surfaces inside a route's own body parsing, where FastAPI turns any error while
    reading into a 400. The app would hold the whole body anyway (every POST is JSON),
    so this costs no memory beyond ``max_bytes`` a request. The 413 takes the error
    shape of the one of ``routes`` (the app's API routes) the request is for.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
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
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        await self.app(scope, replay(messages, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = ApiError(
            413, "body_too_large", f"the request body is over the gateway's limit of {self.max_bytes} bytes"
        )
        await refusal.response(shape_of(scope, self.routes))(scope, receive, send)
