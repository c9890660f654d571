"""``inferstream alerts [--follow]``: drift and quality alerts as a table, coloured by severity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console

if TYPE_CHECKING:
    from inferstream.schemas.records import DriftAlert

_COLOURS = {"critical": "bold red", "warning": "yellow", "info": "green"}


def _what(alert: DriftAlert) -> tuple[str, str]:
    """The alert's measure and what passed its limit: drift share and columns, or quality and metrics."""
    if alert.quality is None:
        drifted = [f"{c.column} ({c.method} {c.score:.3g})" for c in alert.columns if c.drifted]
        return f"{alert.drift_share:.0%}", ", ".join(drifted) or "-"
    breached = [
        f"{m.metric} {m.value:.3g} (limit {m.limit:.3g}"
        + (f", estimated {m.estimated:.3g})" if m.estimated is not None else ")")
        for m in alert.quality.metrics
        if m.breached and m.value is not None and m.limit is not None
    ]
    return f"{alert.quality.labels.count} labels, #{alert.quality.evaluation}", ", ".join(breached) or "-"


def _row(alert: DriftAlert) -> list[str]:
    measure, found = _what(alert)
    colour = _COLOURS[alert.severity]
    return [
        f"[{colour}]{alert.severity}[/]",
        f"[{colour}]{alert.status}[/]",
        alert.monitor,
        f"{alert.model}:{alert.version}",
        f"{alert.window_start:%Y-%m-%d %H:%M:%S} → {alert.window_end:%H:%M:%S}",
        str(alert.window_count),
        measure,
        found,
        alert.report_path or "-",
    ]


@app.command()
def alerts(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new alerts until Ctrl-C.")] = False,
    monitor: Annotated[str | None, typer.Option("--monitor", "-m", help="Only this monitor's alerts.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Without --follow: stop after this many idle s.")] = 5.0,
) -> None:
    """The drift and quality alerts on the alerts topic (all so far; with --follow, then new ones as they come)."""
    columns = [
        "severity",
        "status",
        "monitor",
        "model",
        "window",
        "rows",
        "drift / labels",
        "drifted / breached",
        "report",
    ]
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
