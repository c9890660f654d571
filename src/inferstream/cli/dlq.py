"""``inferstream dlq list|replay``: look at dead letters, and send them back to their topic."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console, out, parse_time

dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

SourceTopic = Annotated[str | None, typer.Option("--source-topic", help="Only dead letters from this topic.")]
Stage = Annotated[str | None, typer.Option("--stage", help="Only dead letters from this stage (produce, serve, ...).")]
Reason = Annotated[
    str | None, typer.Option("--reason", help="Only those whose error class or message contains this (any case).")
]
Since = Annotated[str | None, typer.Option("--since", help="Dead-lettered at or after this ISO time (naive: UTC).")]
Until = Annotated[str | None, typer.Option("--until", help="Dead-lettered before this ISO time (naive: UTC).")]


@dlq_app.command("list")
def list_(
    ctx: typer.Context,
    source_topic: SourceTopic = None,
    stage: Stage = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    max_records: Annotated[int | None, typer.Option("--max", "-n", help="Show at most N.", min=1)] = None,
    payload: Annotated[bool, typer.Option("--payload", help="Show the first bytes of each payload.")] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON object per dead letter on stdout (the dead-letter contract).")
    ] = False,
) -> None:
    """A table of the dead letters now on the topic, oldest first."""
    client = client_of(ctx)
    letters = client.dead_letters(
        max_records=max_records,
        source_topic=source_topic,
        stage=stage,
        reason=reason,
        since=parse_time(since, option="--since"),
        until=parse_time(until, option="--until"),
    )
    if json_:
        for letter in letters:
            out(letter.model_dump_json())
        return
    table = Table(title=client.settings.topics.platform_topics()["dead-letters"])
    for column in ("time", "source", "stage", "error", "attempt", "size"):
        table.add_column(column)
    if payload:
        table.add_column("payload")
    count = 0
    for letter in letters:
        count += 1
        where = letter.source_topic
        if letter.source_offset is not None:
            where += f" [{letter.source_partition}@{letter.source_offset}]"
        size = f"{letter.original_size}" + (" (truncated)" if letter.truncated else "")
        row = [
            letter.event_time.strftime("%Y-%m-%d %H:%M:%S"),
            escape(where),
            escape(letter.stage),
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
    source_topic: SourceTopic = None,
    stage: Stage = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    max_records: Annotated[int | None, typer.Option("--max", "-n", help="Read at most N dead letters.", min=1)] = None,
    group: Annotated[
        str, typer.Option("--group", help="Group that remembers what was replayed.")
    ] = "inferstream-dlq-replay",
) -> None:
    """Send dead letters back to their source topic with the attempt count raised.

    Those at the maximum attempt count stay on the dead-letter topic.
    """
    with client_of(ctx) as client:
        report = client.replay_dead_letters(
            source_topic=source_topic,
            stage=stage,
            reason=reason,
            since=parse_time(since, option="--since"),
            until=parse_time(until, option="--until"),
            max_records=max_records,
            group=group,
        )
    console.print(
        f"read {report.read}, [green]replayed {report.replayed}[/], "
        f"kept (max attempts reached) {report.exhausted}, not replayable (truncated with no spill file, "
        f"or no source topic) {report.unrecoverable}, filtered out {report.filtered}"
    )
