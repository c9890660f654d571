"""``inferstream stream ingest|index``: the stream processors (events → requests; embeddings → the vector index)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of
from inferstream.cli._metrics import MetricsPort, exported_metrics
from inferstream.runtime import settle

stream_app = typer.Typer(
    help="Stream processors: ingest (events → requests), index (embeddings → the vector index).", no_args_is_help=True
)
app.add_typer(stream_app, name="stream")


@stream_app.command("index")
def index(
    ctx: typer.Context,
    metrics_port: MetricsPort = None,
    idle_timeout: Annotated[
        float | None, typer.Option("--idle-timeout", help="Stop after this many seconds without a record.", min=0)
    ] = None,
) -> None:
    """Index the embeddings topic into Elasticsearch (elasticsearch.url) or the embedded store, until Ctrl-C.

    The embedded store takes one writer: run one copy. Elasticsearch takes several
    copies (one consumer group, partitions shared).
    """
    from inferstream.streams.index_sink import IndexSink

    settings = settings_of(ctx)
    metrics = exported_metrics(settings, metrics_port)
    sink = IndexSink(settings, metrics=metrics)

    def stop(signum: int, frame: FrameType | None) -> None:
        sink.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if not settings.elasticsearch.url:
        console.print("embedded vector store: one writer, so run a single copy of `stream index`")
    console.print(f"indexing {sink.topic} ({sink.meta.ref}) into {sink.store.location}")
    settle()
    stats = sink.run(idle_timeout=idle_timeout)
    console.print(
        f"indexed {stats.records} records: {stats.upserts} upserts, {stats.deletes} deletes, "
        f"{stats.dead_letters} dead letters ({stats.retries} retries while the index was unavailable)"
    )


@stream_app.command("ingest")
def ingest(
    ctx: typer.Context,
    metrics_port: MetricsPort = None,
) -> None:
    """Route events to embedding and inference requests by ingest.rules until Ctrl-C; bad ones to dead letters."""
    from inferstream.streams.ingest import IngestRouter, run

    settings = settings_of(ctx)
    metrics = exported_metrics(settings, metrics_port)
    router = IngestRouter(settings)
    rules = ", ".join(f"{r.type}:{r.input} → {r.model}:{r.version}" for rs in router.rules.values() for r in rs)
    console.print(f"ingesting {settings.topics.name('events')} (group {settings.ingest.group}): {rules or 'no rules'}")
    settle()
    stats = run(settings, metrics=metrics)
    console.print(
        f"ingested {stats.events} events: {stats.routed} routed ({stats.requests} requests), "
        f"{stats.dead_letters} dead letters"
    )
