"""``inferstream gateway``: the HTTP gateway (native, OpenAI-compatible, Open Inference Protocol) on 127.0.0.1."""

from __future__ import annotations

from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of


@app.command()
def gateway(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to bind (default: gateway.host, 127.0.0.1); beyond loopback it needs a token.",
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port (default: gateway.port, 8080).", min=0, max=65535)
    ] = None,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Listen beyond loopback with no token: anyone who can reach it may call the API "
            "(gateway.allow_insecure).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP gateway until Ctrl-C; the token comes from settings (INFERSTREAM_GATEWAY__TOKEN)."""
    from inferstream.gateway import check_exposure, serve

    settings = settings_of(ctx)
    if insecure_no_token:
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
    serve(settings, host=bind, port=port)
