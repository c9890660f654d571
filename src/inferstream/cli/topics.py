"""``inferstream topics create|list|describe|delete``: like kafka-topics, for the platform."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console, out, parse_pairs

topics_app = typer.Typer(help="Create, list and describe topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def create(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="Topics to create (logical platform names get the prefix).")
    ] = None,
    platform: Annotated[
        bool, typer.Option("--platform", help="Create every platform topic (events, predictions, ...).")
    ] = False,
    partitions: Annotated[
        int | None, typer.Option("--partitions", "-p", help="Partitions (default: settings).")
    ] = None,
    replication_factor: Annotated[
        int | None, typer.Option("--replication-factor", "-r", help="Replicas (default: settings).")
    ] = None,
    config: Annotated[list[str] | None, typer.Option("--config", help="Topic config key=value (repeatable).")] = None,
) -> None:
    """Create topics; existing ones are left as they are (idempotent)."""
    client = client_of(ctx)
    results: dict[str, bool] = {}
    if platform:
        results.update(client.topics.ensure_platform_topics())
    configs = parse_pairs(config or [], what="--config")
    wanted = {client.topic(name): configs for name in names or []}
    if wanted:
        results.update(client.topics.create_many(wanted, partitions=partitions, replication_factor=replication_factor))
    if not results:
        raise typer.BadParameter("name at least one topic, or pass --platform")
    for name, created in results.items():
        console.print(f"{'[green]created[/]' if created else '[dim]exists[/] '} {name}")


@topics_app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include internal topics (__consumer_offsets, ...).")] = False,
) -> None:
    """Print topic names, one per line."""
    for name in client_of(ctx).topics.list(include_internal=all_):
        out(name)


@topics_app.command("describe")
def describe(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Topic to describe.")]) -> None:
    """Partitions (leader, replicas, ISR, offsets) and non-default configuration of a topic."""
    client = client_of(ctx)
    info = client.topics.describe(client.topic(name))
    table = Table(title=f"{info.name}  ({len(info.partitions)} partitions, {info.messages} records)")
    for column in ("partition", "leader", "replicas", "isr", "low", "high"):
        table.add_column(column, justify="right")
    for p in info.partitions:
        table.add_row(
            str(p.partition),
            str(p.leader),
            ",".join(map(str, p.replicas)),
            ",".join(map(str, p.isr)),
            str(p.low),
            str(p.high),
        )
    console.print(table)
    for key, value in sorted(info.config.items()):
        console.print(f"  {key}={value}")


@topics_app.command("delete")
def delete(ctx: typer.Context, names: Annotated[list[str], typer.Argument(help="Topics to delete.")]) -> None:
    """Delete topics (missing ones are ignored)."""
    client = client_of(ctx)
    full = [client.topic(name) for name in names]
    client.topics.delete(*full)
    for name in full:
        console.print(f"[yellow]deleted[/] {name}")
