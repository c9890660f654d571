"""The dashboard's routes: the page, its JSON, the search box, the reports and the vendored files.

``GET /ui`` is the page (``/ui?token=...`` logs a browser in: :mod:`._access`);
``GET /ui/api/state`` is everything it shows, polled about once a second
(:class:`._board.Board`); ``POST /ui/api/search`` is its search box;
``GET /ui/reports/<monitor>/<file>.html`` the monitors' HTML reports, read-only;
``GET /ui/static/...`` its script, style and the vendored chart library (uPlot),
shipped in the package: the page loads nothing from outside the gateway.
"""

from __future__ import annotations

import dataclasses
import html
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from inferstream.errors import InferstreamError, SearchError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import Gateway
from inferstream.gateway.ui._access import authorize, log_in, request_token
from inferstream.gateway.ui._board import Board
from inferstream.gateway.ui._reports import report_file
from inferstream.monitoring.reports import reports_dir

#: The page's own files and the vendored library's, with their media types: nothing else is served.
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/uPlot.LICENSE": "text/plain; charset=utf-8",
}
#: The page runs only the gateway's own scripts, talks only to the gateway.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: A report's scripts run in an opaque origin: they cannot read the dashboard's cookie or call its API.
REPORT_POLICY = "sandbox allow-scripts"

_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>inferstream dashboard</title>
<link rel="stylesheet" href="/ui/static/app.css"></head><body><main class="login"><h1>inferstream dashboard</h1>
<p>{message}</p><p>Open the link with the gateway's token: <code>/ui?token=&lt;token&gt;</code>
(<code>inferstream dashboard</code> and <code>inferstream demo --keep</code> print it).</p></main></body></html>"""


class UiSearch(BaseModel):
    """The body of ``POST /ui/api/search``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=5, ge=1, le=50)


def _static(name: str) -> bytes:
    return resources.files("inferstream.gateway.ui").joinpath("static", *name.split("/")).read_bytes()


def router(state: Gateway) -> APIRouter:
    """The dashboard's routes (its board starts with the first request for its state)."""
    board = Board(state)
    state.closers.append(board.close)
    check = authorize(state.keys)
    routes = APIRouter(prefix="/ui", include_in_schema=False, route_class=JsonRoute)
    api = APIRouter(include_in_schema=False, route_class=JsonRoute, dependencies=[Depends(check)])
    page = _static("index.html")
    files = {name: _static(name) for name in STATIC}
    root = reports_dir(state.settings)

    @routes.get("")
    async def dashboard(
        request: Request, token: Annotated[str | None, Query(description="Log this browser in.")] = None
    ) -> Response:
        try:
            if token is not None:
                return log_in(state.keys, request, token)
            state.keys.check(request_token(request), "read")
        except ApiError as exc:
            message = html.escape(str(exc.detail)) if exc.status != 401 else "This gateway needs a token."
            return HTMLResponse(_LOGIN.format(message=message), status_code=exc.status, headers=_no_store())
        return HTMLResponse(page, headers={**_no_store(), "Content-Security-Policy": PAGE_POLICY})

    @routes.get("/static/{name:path}")
    async def static(name: str) -> Response:
        if name not in files:
            raise ApiError(404, "not_found", f"no dashboard file {name!r}")
        return Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @api.get("/api/state")
    async def current() -> Response:
        board.start()
        return Response(board.snapshot(), media_type="application/json", headers=_no_store())

    @api.post("/api/search")
    async def search(body: UiSearch) -> dict[str, Any]:
        try:
            result = await state.call(state.client.search, body.query, body.k)
        except SearchError as exc:
            raise ApiError(503, "search_unavailable", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(400, "search_failed", str(exc)) from None
        return dataclasses.asdict(result)

    @api.get("/reports/{name:path}")
    async def report(name: str) -> FileResponse:
        path = report_file(root, name)
        if path is None:
            raise ApiError(404, "not_found", f"no report {name!r} under the reports directory")
        return FileResponse(
            path,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": REPORT_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    routes.include_router(api)
    return routes


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
