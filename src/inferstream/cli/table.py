"""``inferstream table sink|query|export``: the Parquet inference table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, out, run_until_signalled, settings_of
from inferstream.cli._metrics import MetricsPort, exported_metrics

if TYPE_CHECKING:
    import pyarrow as pa

    from inferstream.streams.label_sink import LabelTableSink
    from inferstream.streams.table_sink import InferenceTableSink

# The Parquet modules (pyarrow datasets, pandas) load in the commands: the rest of the CLI
# starts without them.

table_app = typer.Typer(
    help="The inference table: every prediction in Parquet, by model and date.", no_args_is_help=True
)
app.add_typer(table_app, name="table")

Model = Annotated[str | None, typer.Option("--model", "-m", help="NAME or NAME:VERSION.")]
Since = Annotated[str | None, typer.Option("--since", help="Event time from (ISO 8601, UTC if naive).")]
Until = Annotated[str | None, typer.Option("--until", help="Event time before (ISO 8601).")]


def _read(ctx: typer.Context, model: str | None, since: str | None, until: str | None) -> pa.Table:
    from inferstream.monitoring import table as inference_table

    settings = settings_of(ctx)
    name, _, version = (model or "").partition(":")
    return inference_table.read_table(
        inference_table.table_dir(settings),
        model=name or None,
        version=version or None,
        since=inference_table.parse_time(since),
        until=inference_table.parse_time(until),
    )


@table_app.command("sink")
def sink(
    ctx: typer.Context,
    max_rows: Annotated[int, typer.Option("--max-rows", help="Rows per file at most (per partition).", min=1)] = 50_000,
    max_delay: Annotated[float, typer.Option("--max-delay", help="Seconds a row waits for its file at most.")] = 5.0,
    metrics_port: MetricsPort = None,
) -> None:
    """Archive the predictions topic into the table until Ctrl-C (files renamed into place, then committed)."""
    from inferstream.streams.table_sink import InferenceTableSink

    settings = settings_of(ctx)
    metrics = exported_metrics(settings, metrics_port)
    worker = InferenceTableSink(settings, max_rows=max_rows, max_delay_s=max_delay, metrics=metrics)
    _archive(worker)


def _archive(worker: InferenceTableSink | LabelTableSink) -> None:
    """Run a table sink until SIGINT or SIGTERM, then say what it did."""
    stats = run_until_signalled(worker, f"archiving {worker.buffer.topic} → {worker.buffer.root}")
    console.print(
        f"consumed {stats.consumed}: written {stats.written}, dead letters {stats.dead_letters}, "
        f"already in files {stats.skipped}; {len(stats.files)} files"
    )


@table_app.command("label-sink")
def label_sink(
    ctx: typer.Context,
    max_rows: Annotated[int, typer.Option("--max-rows", help="Labels per file at most (per partition).", min=1)] = (
        50_000
    ),
    max_delay: Annotated[float, typer.Option("--max-delay", help="Seconds a label waits for its file at most.")] = 5.0,
    metrics_port: MetricsPort = None,
) -> None:
    """Archive the labels topic beside the table until Ctrl-C; readers of the table see them as columns."""
    from inferstream.streams.label_sink import LabelTableSink

    settings = settings_of(ctx)
    metrics = exported_metrics(settings, metrics_port)
    worker = LabelTableSink(settings, max_rows=max_rows, max_delay_s=max_delay, metrics=metrics)
    _archive(worker)


@table_app.command("labels")
def labels(ctx: typer.Context, model: Model = None, since: Since = None, until: Until = None) -> None:
    """Labels in the label table: joined (naming a matching prediction) + dead-lettered (past the horizon) + waiting."""
    from inferstream.monitoring.label_expiry import label_counts, read_expired
    from inferstream.monitoring.label_table import read_labels
    from inferstream.monitoring.table import table_dir

    root = table_dir(settings_of(ctx))
    counts = label_counts(_read(ctx, model, since, until), read_labels(root), read_expired(root))
    view = Table("labels", "joined", "dead-lettered", "waiting")
    view.add_row(*(str(counts[key]) for key in ("labels", "joined", "dead_lettered", "waiting")))
    console.print(view)


@table_app.command("query")
def query(
    ctx: typer.Context,
    model: Model = None,
    since: Since = None,
    until: Until = None,
    rows: Annotated[int, typer.Option("--rows", "-n", help="Also print the first N rows as JSON lines.")] = 0,
) -> None:
    """Rows per model and version (and their event-time range) matching the filters."""
    from inferstream.monitoring import table as inference_table

    data = _read(ctx, model, since, until)
    view = Table("model", "version", "rows", "first event", "last event")
    for row in inference_table.summary(data):
        view.add_row(
            row["model"],
            row["version"],
            str(row["request_id_count"]),
            str(row["event_time_min"]),
            str(row["event_time_max"]),
        )
    console.print(view)
    if rows:
        import json

        for record in inference_table.records(data.slice(0, rows)):
            out(json.dumps(record, default=str))


@table_app.command("export")
def export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Output file: .parquet, .csv or .jsonl.")],
    model: Model = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Write the matching predictions to a file."""
    from inferstream.monitoring import table as inference_table

    data = _read(ctx, model, since, until)
    inference_table.export(data, path)
    console.print(f"wrote {data.num_rows} predictions to {path}")
