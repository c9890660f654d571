"""``inferstream reports list|open``: the evidently HTML reports of alerting windows."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, out, settings_of

reports_app = typer.Typer(help="HTML drift reports of the windows that alerted.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")


@reports_app.command("list")
def list_(
    ctx: typer.Context,
    monitor: Annotated[str | None, typer.Option("--monitor", "-m", help="Only this monitor's reports.")] = None,
) -> None:
    """Reports on disk, newest first."""
    from inferstream.monitoring.reports import list_reports

    view = Table("monitor", "written", "size", "path")
    for report in list_reports(settings_of(ctx), monitor):
        view.add_row(
            report.monitor, f"{report.written:%Y-%m-%d %H:%M:%S}", f"{report.size / 1e6:.1f} MB", str(report.path)
        )
    console.print(view)


@reports_app.command("open")
def open_(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help="A path, a file name, a monitor (its newest) or `latest`.")] = "latest",
) -> None:
    """Open a report in the browser (prints its path too)."""
    import webbrowser

    from inferstream.monitoring.reports import find_report

    path = find_report(settings_of(ctx), which)
    out(str(path))
    webbrowser.open(path.resolve().as_uri())
