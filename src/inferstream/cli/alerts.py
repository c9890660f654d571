"""``inferstream alerts [--follow]``: drift alerts as a table, coloured by severity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console

if TYPE_CHECKING:
    from inferstream.schemas.records import DriftAlert

_COLOURS = {"critical": "bold red", "warning": "yellow", "info": "green"}


def _row(alert: DriftAlert) -> list[str]:
    drifted = [f"{c.column} ({c.method} {c.score:.3g})" for c in alert.columns if c.drifted]
    colour = _COLOURS[alert.severity]
    return [
        f"[{colour}]{alert.severity}[/]",
        f"[{colour}]{alert.status}[/]",
        alert.monitor,
        f"{alert.model}:{alert.version}",
        f"{alert.window_start:%Y-%m-%d %H:%M:%S} → {alert.window_end:%H:%M:%S}",
        str(alert.window_count),
        f"{alert.drift_share:.0%}",
        ", ".join(drifted) or "-",
        alert.report_path or "-",
    ]


@app.command()
def alerts(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new alerts until Ctrl-C.")] = False,
    monitor: Annotated[str | None, typer.Option("--monitor", "-m", help="Only this monitor's alerts.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Without --follow: stop after this many idle s.")] = 5.0,
) -> None:
    """The drift alerts on the alerts topic (all so far; with --follow, then new ones as they come)."""
    columns = ["severity", "status", "monitor", "model", "window", "rows", "drift", "drifted columns", "report"]
    with client_of(ctx) as client:
        stream = client.alerts(monitor=monitor, from_beginning=True, idle_timeout=None if follow else timeout)
        if not follow:
            view = Table(*columns)
            for alert in stream:
                view.add_row(*_row(alert))
            console.print(view)
            return
        console.print(Table(*columns))
        try:
            for alert in stream:
                view = Table(*columns, show_header=False, box=None)
                view.add_row(*_row(alert))
                console.print(view)
        except KeyboardInterrupt:
            pass
