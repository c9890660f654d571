"""``inferstream produce TOPIC FILE|-``: validated records from JSONL, CSV or Parquet."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, parse_pairs, print_error, settings_of
from inferstream.errors import RecordValidationError

if TYPE_CHECKING:
    from inferstream.client import ProduceReport

_SHOWN_ERRORS = 20


class OnErrorChoice(StrEnum):
    """What to do with a record that fails validation or delivery."""

    fail = "fail"
    skip = "skip"
    dlq = "dlq"


@app.command()
def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic (platform names like `events` get the prefix).")],
    file: Annotated[str, typer.Argument(help="JSONL, CSV or Parquet file; `-` reads JSONL from stdin.")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="jsonl|csv|parquet (default: from the suffix).")
    ] = None,
    schema: Annotated[
        str | None, typer.Option("--schema", help="Contract to validate with (default: the topic's).")
    ] = None,
    on_error: Annotated[
        OnErrorChoice,
        typer.Option("--on-error", help="fail: stop at the first bad record; skip: leave it out; dlq: dead-letter it."),
    ] = OnErrorChoice.fail,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Header key=value added to every record.")
    ] = None,
) -> None:
    """Validate records against the topic's contract and produce them, keyed by id."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from inferstream.client import Client
    from inferstream.connectors.files import count_records, detect_format, read_records

    settings = settings_of(ctx)
    kind = detect_format(file, fmt)
    headers = [(k, v.encode()) for k, v in parse_pairs(header or [], what="--header").items()]
    total = count_records(file, kind)
    report: ProduceReport | None = None
    with (
        Client(settings) as client,
        Progress(
            TextColumn("[bold]produce[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task(client.topic(topic), total=total)
        try:
            report = client.produce_file(
                topic,
                read_records(file, kind),
                schema=schema,
                on_error=on_error.value,
                headers=headers,
                progress=lambda n: progress.advance(task, n),
            )
        except RecordValidationError as exc:
            progress.stop()
            print_error(exc, f"{file}: {exc}")
            console.print(
                "  records after it were not produced; --on-error=skip or --on-error=dlq go on past bad records"
            )
            raise typer.Exit(1) from None
    _summary(report, on_error)


def _summary(report: ProduceReport, on_error: OnErrorChoice) -> None:
    for rejected in report.rejected[:_SHOWN_ERRORS]:
        where = f"line {rejected.line}: " if rejected.line is not None else ""
        console.print(f"[yellow]rejected[/] {escape(where + rejected.reason)}")
    if len(report.rejected) > _SHOWN_ERRORS:
        console.print(f"[yellow]... and {len(report.rejected) - _SHOWN_ERRORS} more rejected[/]")
    table = Table(show_header=True, title=f"produced to {report.topic}")
    for column in ("read", "produced", "rejected", "dead-lettered", "records/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.read),
        str(report.produced),
        str(len(report.rejected)),
        str(report.dead_lettered),
        f"{report.records_per_s:,.0f}",
    )
    console.print(table)
