"""``inferstream groups [GROUP]`` and ``groups reset``: like kafka-consumer-groups, for the platform."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console, out, parse_time

if TYPE_CHECKING:
    from inferstream.connectors.kafka.groups import GroupInfo, ResetPlan


class _DescribeByDefault(TyperGroup):
    """``inferstream groups [GROUP] [options]`` runs ``groups describe``; a subcommand name runs it."""

    # ``ctx`` is typed loosely: Typer's Context class moved between releases (click's, then its own).
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["describe", *args]
        return super().parse_args(ctx, args)


groups_app = typer.Typer(
    cls=_DescribeByDefault,
    help="Consumer groups: lag per partition (`groups [GROUP] [--all] [--match TEXT] [--json]`), "
    "and moving their offsets (`groups reset GROUP --topic T ...`).",
)
app.add_typer(groups_app, name="groups")


@groups_app.command("describe")
def describe(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Argument(help="One group (default: every platform group).")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every group of the cluster, not only those under the topic prefix.")
    ] = False,
    match: Annotated[str | None, typer.Option("--match", "-m", help="Only groups whose id contains this.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per group on stdout.")] = False,
) -> None:
    """State, members, and per partition the committed offset, log end offset, lag and reader."""
    client = client_of(ctx)
    if group is not None:
        infos = [client.groups.describe(group)]
    else:
        infos = client.groups.describe_many(client.groups.list(all_groups=all_, match=match))
    if json_:
        for info in infos:
            out(json.dumps(info.as_dict(), separators=(",", ":")))
        return
    for info in infos:
        console.print(_group_table(info))
    if not infos:
        where = "" if all_ else f" under the prefix {client.settings.topics.prefix!r} (--all: every group)"
        console.print(f"[dim]no consumer groups{escape(where)}[/]")


@groups_app.command("reset")
def reset(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="The group whose offsets move.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic (platform names get the prefix).")],
    partition: Annotated[
        list[int] | None, typer.Option("--partition", "-p", help="Only this partition (repeatable; default: all).")
    ] = None,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="This offset.")] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The log start (read it all again).")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The log end (skip what is there).")] = False,
    to_datetime: Annotated[
        str | None, typer.Option("--to-datetime", help="First record at or after an ISO time (naive: UTC).")
    ] = None,
    shift_by: Annotated[
        int | None, typer.Option("--shift-by", help="Move the committed offset by N (negative: back).")
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Commit the new offsets (default: only show them).")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="The plan as one JSON object on stdout.")] = False,
) -> None:
    """Move a group's committed offsets on a topic: a dry run unless --execute.

    The group's consumers must be stopped; offsets outside the log are clamped to it.
    """
    from inferstream.connectors.kafka.groups import ResetTarget

    moment = parse_time(to_datetime, option="--to-datetime")
    targets = [
        ResetTarget.to_offset(to_offset) if to_offset is not None else None,
        ResetTarget.to_earliest() if to_earliest else None,
        ResetTarget.to_latest() if to_latest else None,
        ResetTarget.to_datetime(moment) if moment is not None else None,
        ResetTarget.shift_by(shift_by) if shift_by is not None else None,
    ]
    chosen = [target for target in targets if target is not None]
    if len(chosen) != 1:
        raise typer.BadParameter("choose one of --to-offset, --to-earliest, --to-latest, --to-datetime, --shift-by")
    client = client_of(ctx)
    plan = client.groups.reset(group, client.topic(topic), chosen[0], partitions=partition, execute=execute)
    if json_:
        out(json.dumps(plan.as_dict(), separators=(",", ":")))
    else:
        console.print(_plan_table(plan))
    if plan.executed:
        console.print(f"[green]moved[/] the offsets of {escape(group)} on {len(plan.moves)} partitions")
    else:
        console.print("[yellow]dry run[/]: nothing changed (add --execute to commit these offsets)")


def _group_table(info: GroupInfo) -> Table:
    members = f"{info.members} member{'s' if info.members != 1 else ''}"
    table = Table(title=f"{escape(info.group)}  ({info.state}, {members}, lag {info.lag})")
    for column in ("topic", "partition", "committed", "log end", "lag"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    table.add_column("member")
    table.add_column("client")
    for p in info.partitions:
        table.add_row(
            escape(p.topic),
            str(p.partition),
            _or_dash(p.committed),
            _or_dash(p.log_end),
            _or_dash(p.lag),
            escape(p.member_id or "-"),
            escape(p.client_id or "-"),
        )
    return table


def _plan_table(plan: ResetPlan) -> Table:
    what = "reset" if plan.executed else "reset plan (dry run)"
    table = Table(title=f"{what}: {escape(plan.group)} to {escape(str(plan.target))}")
    for column in ("topic", "partition", "current", "new"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    table.add_column("note")
    for move in plan.moves:
        table.add_row(
            escape(move.topic),
            str(move.partition),
            _or_dash(move.current),
            str(move.new),
            f"[yellow]{escape(move.note)}[/]" if move.note else "",
        )
    return table


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
