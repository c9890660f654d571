"""The hot routes (predict, infer) answered without FastAPI's request machinery, as the routes answer them.

Profiled under load, FastAPI's routing, dependency solving and body handling took
about a fifth of the gateway's CPU for each one-row predict. :class:`Direct` answers
the routes it is given itself: it matches the path with the route's own pattern,
parses the body with the route's own parser, checks the key as the route's
dependency does, then calls the very function the FastAPI endpoint calls. A body it
does not take (:class:`Fallback`: not JSON, or not valid for the route's body model)
goes on to FastAPI with the body replayed, so each such error is answered exactly as
the route answers it. Metrics and the error shape see the route as FastAPI would
(``scope["route"]``), and the OpenAPI document still lists the routes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from inferstream.config import Scope as KeyScope
from inferstream.gateway._auth import KeyRing, token_of
from inferstream.gateway._body import ASGIApp, Message, Receive, Scope, Send, replay
from inferstream.gateway._errors import ApiError, shape_of


class Fallback(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a parser: this body is FastAPI's to answer."""


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """A POST route answered directly: its path template, the key scope it needs, its parser and its answer."""

    path: str
    scope: KeyScope
    #: The body (and the request's scope, for its headers) → what ``answer`` takes; raises
    #: :class:`Fallback`, or :class:`ApiError` for a body refused here (after the key check).
    parse: Callable[[Scope, bytes], Any]
    #: The path parameters and the parsed body → the response.
    answer: Callable[[dict[str, str], Any], Awaitable[Response]]


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read a body of this Content-Type as JSON (none at all counts)."""
    if content_type is None:
        return True
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class Direct:
    """The middleware answering ``routes`` directly (innermost of the gateway's middleware)."""

    def __init__(self, app: ASGIApp, routes: Sequence[DirectRoute], api_routes: Sequence[BaseRoute], keys: KeyRing):
        self.app = app
        self.keys = keys
        self.table: list[tuple[APIRoute, DirectRoute]] = []
        for direct in routes:
            matching = [
                r
                for r in api_routes
                if isinstance(r, APIRoute) and r.path == direct.path and "POST" in (r.methods or ())
            ]
            if len(matching) != 1:
                raise ValueError(f"no one POST route {direct.path} to answer directly")
            self.table.append((matching[0], direct))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for route, direct in self.table:
                match = route.path_regex.match(path)
                if match is not None:
                    await self._answer(route, direct, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        route: APIRoute,
        direct: DirectRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        messages: deque[Message] = deque()
        chunks: list[bytes] = []
        while True:  # the body limit has read it already: this takes it from memory
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await self.app(scope, replay(messages, receive), send)  # the client left: as FastAPI sees it
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        refused: ApiError | None = None
        try:
            parsed = direct.parse(scope, b"".join(chunks))
        except Fallback:
            await self.app(scope, replay(messages, receive), send)
            return
        except ApiError as exc:
            refused = exc
        scope["route"] = route  # the metrics' label, the error shape
        try:
            self.keys.check(token_of(scope), direct.scope)  # before saying what is wrong with a body
            if refused is not None:
                raise refused
            response = await direct.answer(params, parsed)
        except ApiError as exc:
            response = exc.response(shape_of(scope))
        await response(scope, receive, send)


__all__ = ["Direct", "DirectRoute", "Fallback", "is_json"]
