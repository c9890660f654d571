"""``inferstream stream ...``: the stream processors (``stream ingest``)."""

from __future__ import annotations

from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of
from inferstream.metrics import Metrics

stream = typer.Typer(help="Stream processors: ingest (events → requests).", no_args_is_help=True)
app.add_typer(stream, name="stream")


@stream.command()
def ingest(
    ctx: typer.Context,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Export Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Route events to embedding and inference requests by ingest.rules until Ctrl-C; bad ones to dead letters."""
    from inferstream.streams.ingest import IngestRouter, run

    settings = settings_of(ctx)
    metrics = Metrics(namespace=settings.metrics.namespace)
    port = metrics_port if metrics_port is not None else settings.metrics.port
    if port:
        console.print(f"metrics on http://{settings.metrics.host}:{metrics.serve(port, settings.metrics.host)}/metrics")
    router = IngestRouter(settings)
    rules = ", ".join(f"{r.type}:{r.input} → {r.model}:{r.version}" for rs in router.rules.values() for r in rs)
    console.print(f"ingesting {settings.topics.name('events')} (group {settings.ingest.group}): {rules or 'no rules'}")
    stats = run(settings, metrics=metrics)
    console.print(
        f"ingested {stats.events} events: {stats.routed} routed ({stats.requests} requests), "
        f"{stats.dead_letters} dead letters"
    )
