"""``inferstream dlq list|replay``: look at dead letters, and send them back to their topic."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of
from inferstream.client import Client

dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def list_(
    ctx: typer.Context,
    max_records: Annotated[int | None, typer.Option("--max", "-n", help="Show at most N.", min=1)] = None,
    payload: Annotated[bool, typer.Option("--payload", help="Show the first bytes of each payload.")] = False,
) -> None:
    """A table of the dead letters now on the topic, oldest first."""
    client = Client(settings_of(ctx))
    table = Table(title=client.settings.topics.platform_topics()["dead-letters"])
    for column in ("time", "source", "stage", "error", "attempt", "size"):
        table.add_column(column)
    if payload:
        table.add_column("payload")
    count = 0
    for letter in client.dead_letters(max_records=max_records):
        count += 1
        where = letter.source_topic
        if letter.source_offset is not None:
            where += f" [{letter.source_partition}@{letter.source_offset}]"
        size = f"{letter.original_size}" + (" (truncated)" if letter.truncated else "")
        row = [
            letter.event_time.strftime("%Y-%m-%d %H:%M:%S"),
            where,
            letter.stage,
            f"[red]{escape(letter.error_class)}[/]: {escape(letter.error_message)}",
            str(letter.attempt),
            size,
        ]
        if payload:
            row.append(escape(letter.payload[:80].decode(errors="replace")))
        table.add_row(*row)
    console.print(table)
    console.print(f"{count} dead letters")


@dlq_app.command("replay")
def replay(
    ctx: typer.Context,
    source_topic: Annotated[
        str | None, typer.Option("--source-topic", help="Only dead letters from this topic.")
    ] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Only dead letters from this stage.")] = None,
    max_records: Annotated[int | None, typer.Option("--max", "-n", help="Read at most N dead letters.", min=1)] = None,
    group: Annotated[
        str, typer.Option("--group", help="Group that remembers what was replayed.")
    ] = "inferstream-dlq-replay",
) -> None:
    """Send dead letters back to their source topic with the attempt count raised.

    Those at the maximum attempt count stay on the dead-letter topic.
    """
    with Client(settings_of(ctx)) as client:
        report = client.replay_dead_letters(
            source_topic=source_topic, stage=stage, max_records=max_records, group=group
        )
    console.print(
        f"read {report.read}, [green]replayed {report.replayed}[/], "
        f"kept (max attempts reached) {report.exhausted}, not replayable (truncated, no spill file) "
        f"{report.unrecoverable}, filtered out {report.filtered}"
    )
