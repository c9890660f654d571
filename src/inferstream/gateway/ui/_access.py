"""Who may see the dashboard: the gateway's bearer token, or a cookie set by a ``/ui?token=...`` link.

A browser cannot send an ``Authorization`` header when a page is opened, so, as
notebook servers do, ``/ui?token=<key>`` checks the key (scope ``read``), keeps it
in a cookie (HttpOnly: the page's scripts never see it; SameSite=Strict: no other
site's page can send it; Secure over HTTPS; path ``/ui`` only) and redirects to
``/ui``, so the token leaves the address bar and the history. Every dashboard
request is then checked as an API request is, the cookie standing in for the
header: in constant time, with the key's scopes and rate, and a key removed from
the keys file stops working at once. The token is never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse

from inferstream.config import Settings
from inferstream.gateway._auth import KeyRing, token_of

#: The cookie that keeps a browser logged in.
COOKIE = "inferstream_ui"


def request_token(request: Request) -> str | None:
    """The request's bearer token, else the dashboard cookie's."""
    token = token_of(request.scope)
    return token if token is not None else request.cookies.get(COOKIE)


def authorize(keys: KeyRing) -> Callable[[Request], Awaitable[None]]:
    """A dependency: 401/403/429 (the API's errors) unless the request's token or cookie may ``read``."""

    async def check(request: Request) -> None:
        keys.check(request_token(request), "read")

    return check


def log_in(keys: KeyRing, request: Request, token: str) -> RedirectResponse:
    """Check ``token`` (401/403/429 if it may not ``read``), keep it in the cookie, and redirect to the page."""
    keys.check(token, "read")
    response = RedirectResponse(request.url.path, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def dashboard_link(base_url: str, settings: Settings, *, reveal: bool = False) -> str:
    """The address that opens the dashboard; with the gateway's token in it only when ``reveal``.

    A long-running server's output often ends up in a log, where a token must never be:
    ``inferstream dashboard`` shows where the token goes; the interactive demo shows it.
    """
    gateway = settings.gateway
    if gateway.token is not None:
        token = quote(gateway.token.get_secret_value(), safe="") if reveal else "<the gateway's token>"
        return f"{base_url}/ui?token={token}"
    if gateway.keys or gateway.keys_file is not None:
        return f"{base_url}/ui?token=<an API key with the read scope>"
    return f"{base_url}/ui"
