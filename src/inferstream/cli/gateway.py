"""``inferstream gateway``: the HTTP gateway (predict, prediction stream, events) on 127.0.0.1."""

from __future__ import annotations

from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of


@app.command()
def gateway(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: gateway.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port (default: gateway.port, 8080).", min=0, max=65535)
    ] = None,
) -> None:
    """Serve the HTTP gateway until Ctrl-C; the token comes from settings (INFERSTREAM_GATEWAY__TOKEN)."""
    from inferstream.gateway import serve

    settings = settings_of(ctx)
    where = f"http://{host or settings.gateway.host}:{settings.gateway.port if port is None else port}"
    auth = (
        "bearer token required"
        if settings.gateway.token is not None
        else "no token set: open to anyone who can reach it"
    )
    console.print(f"gateway on {where} ({auth}); API schema at {where}/docs")
    serve(settings, host=host, port=port)
