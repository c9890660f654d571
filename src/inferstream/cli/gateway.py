"""``inferstream gateway``: the HTTP gateway (native, OpenAI-compatible, Open Inference Protocol) on 127.0.0.1.

``inferstream dashboard`` is the same gateway, announced by the link that opens its live page (``/ui``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of

if TYPE_CHECKING:
    from inferstream.config import Settings


_HOST = typer.Option(
    "--host",
    help="Address to bind (default: gateway.host, 127.0.0.1); beyond loopback it needs a token.",
)
_PORT = typer.Option("--port", "-p", help="Port (default: gateway.port, 8080).", min=0, max=65535)
_INSECURE = typer.Option(
    "--insecure-no-token",
    help="Listen beyond loopback with no token: anyone who can reach it may call the API (gateway.allow_insecure).",
)


@app.command()
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, _HOST] = None,
    port: Annotated[int | None, _PORT] = None,
    insecure_no_token: Annotated[bool, _INSECURE] = False,
) -> None:
    """Serve the HTTP gateway until Ctrl-C; the token comes from settings (INFERSTREAM_GATEWAY__TOKEN)."""
    _serve(settings_of(ctx), host, port, insecure_no_token, dashboard=False)


@app.command()
def dashboard(
    ctx: typer.Context,
    host: Annotated[str | None, _HOST] = None,
    port: Annotated[int | None, _PORT] = None,
    insecure_no_token: Annotated[bool, _INSECURE] = False,
) -> None:
    """Serve the live dashboard (the gateway, at /ui) until Ctrl-C, and print the link that opens it."""
    _serve(settings_of(ctx), host, port, insecure_no_token, dashboard=True)


def _serve(settings: Settings, host: str | None, port: int | None, insecure: bool, *, dashboard: bool) -> None:
    from inferstream.gateway import check_exposure, serve
    from inferstream.gateway.ui import dashboard_link

    if insecure:
        update = {"gateway": settings.gateway.model_copy(update={"allow_insecure": True})}
        settings = settings.model_copy(update=update)
    bind = host or settings.gateway.host
    open_beyond_loopback = check_exposure(settings, bind)  # refuses before anything contacts Kafka
    gateway = settings.gateway
    scheme = "https" if gateway.tls_certfile else "http"
    where = f"{scheme}://{bind}:{gateway.port if port is None else port}"
    if gateway.keys or gateway.keys_file is not None:
        from_file = f", and the keys in {gateway.keys_file}" if gateway.keys_file else ""
        auth = f"API keys required ({len(gateway.keys)} in settings{from_file})"
    elif gateway.token is not None:
        auth = "bearer token required"
    elif open_beyond_loopback:
        auth = "NO TOKEN, --insecure-no-token: open to anyone who can reach it"
    else:
        auth = "no token set: open to anyone on this machine"
    console.print(f"gateway on {where} ({auth}); API schema at {where}/docs")
    if dashboard:
        console.print(f"dashboard: {escape(dashboard_link(where, settings))}", soft_wrap=True)
    serve(settings, host=bind, port=port)
