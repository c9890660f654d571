"""``inferstream monitor list|reference|run|status``: drift and quality monitors declared in the settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, out, run_until_signalled, settings_of
from inferstream.cli._metrics import MetricsPort, exported_metrics
from inferstream.errors import ConfigError

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.monitoring.spec import MonitorSpec

# The statistics, Parquet and monitor modules (scipy, pandas, pyarrow datasets), and the
# settings, load in the commands that use them: every other command of the CLI starts without them.

monitor_app = typer.Typer(help="Drift and quality monitors: references, running, status.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("list")
def list_monitors(ctx: typer.Context) -> None:
    """The declared monitors, their references and whether an alert is open."""
    from inferstream.monitoring import reference as references
    from inferstream.monitoring.reports import monitor_state_dir, read_status

    settings = settings_of(ctx)
    view = Table("monitor", "type", "model", "watches", "window", "reference", "alert open")
    for spec in settings.monitoring.all_monitors():
        versions = references.list_references(settings, spec.name)
        status = read_status(monitor_state_dir(settings, spec.name)) or {}
        window = f"{spec.window.size} rows" if spec.window.kind == "count" else f"{spec.window.duration_s:g} s"
        if spec.quality is not None:
            watches = f"{spec.quality.task} on labels"
            reference = "window" if spec.quality.has_reference else "none"
        else:
            watches = f"{len(spec.columns)} columns"
            reference = versions[-1].path.name if versions else "none"
        view.add_row(
            spec.name,
            spec.type,
            spec.ref,
            watches,
            window,
            reference,
            "yes" if status.get("alert_active") else "no",
        )
    console.print(view)


@monitor_app.command("reference")
def reference(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Monitor name.")],
    parquet: Annotated[Path | None, typer.Option("--parquet", help="From a Parquet file.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From the inference table, event time from.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="... and before (ISO 8601).")] = None,
    first: Annotated[int | None, typer.Option("--first", help="From the first N predictions on the topic.")] = None,
) -> None:
    """Build the monitor's next reference version (exactly one source)."""
    from inferstream.monitoring import reference as references
    from inferstream.monitoring import table as inference_table

    settings = settings_of(ctx)
    spec = settings.monitoring.monitor(name)
    chosen = [parquet is not None, since is not None or until is not None, first is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter("give one source: --parquet FILE, --since/--until (inference table), or --first N")
    if parquet is not None:
        rows = references.records_from_parquet(parquet)
        source = str(parquet)
    elif first is not None:
        rows = references.records_from_topic(settings, spec.model, spec.version, first)
        source = f"first {first} predictions of {spec.ref}"
        if len(rows) < first:
            raise ConfigError(f"only {len(rows)} predictions of {spec.ref} on the topic; {first} asked for")
    else:
        data = inference_table.read_table(
            inference_table.table_dir(settings),
            model=spec.model,
            version=spec.version,
            since=inference_table.parse_time(since),
            until=inference_table.parse_time(until),
        )
        rows = inference_table.records(data)
        source = f"inference table {since or '-'}..{until or '-'}"
    built = references.build_reference(spec, rows, root=references.references_dir(settings), source=source)
    view = Table("column", "kind", "method", "threshold")
    for profile in built.profiles.values():
        view.add_row(profile.name, profile.kind, profile.method, f"{profile.threshold:g}")
    console.print(view)
    console.print(f"reference {built.path} from {built.count} predictions ({source})")


@monitor_app.command("run")
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Monitor name.")],
    no_reports: Annotated[bool, typer.Option("--no-reports", help="No HTML reports.")] = False,
    metrics_port: MetricsPort = None,
) -> None:
    """Watch the monitor's predictions until Ctrl-C (a restart replays the open window)."""
    settings = settings_of(ctx)
    spec = settings.monitoring.monitor(name)
    if spec.type == "quality":
        _run_quality(settings, spec, no_reports=no_reports, metrics_port=metrics_port)
        return
    from inferstream.streams.drift_monitor import DriftMonitor

    monitor = DriftMonitor(settings, spec, reports=not no_reports, metrics=exported_metrics(settings, metrics_port))
    banner = f"monitor {name}: {monitor.spec.ref} on {monitor.topic}, reference {monitor.reference.path}"
    stats = run_until_signalled(monitor, banner)
    console.print(
        f"{stats.predictions} predictions, {stats.windows} windows ({stats.drifted_windows} drifted), "
        f"{stats.alerts} alerts, {stats.resolved} resolved, {stats.bad_records} bad records"
    )


def _run_quality(settings: Settings, spec: MonitorSpec, *, no_reports: bool, metrics_port: int | None) -> None:
    from inferstream.streams.quality_monitor import QualityMonitor

    monitor = QualityMonitor(settings, spec, reports=not no_reports, metrics=exported_metrics(settings, metrics_port))
    stats = run_until_signalled(
        monitor, f"quality monitor {spec.name}: {spec.ref} in {monitor.root}, labels joined on read"
    )
    console.print(
        f"{stats.evaluations} window evaluations ({stats.reevaluations} on late labels), "
        f"{stats.alerts} alerts, {stats.resolved} resolved"
    )


@monitor_app.command("status")
def status(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Monitor name.")]) -> None:
    """The monitor's latest-status JSON (its last window, alert state, counts)."""
    from inferstream.monitoring.reports import monitor_state_dir, read_status

    settings = settings_of(ctx)
    settings.monitoring.monitor(name)
    document = read_status(monitor_state_dir(settings, name))
    if document is None:
        raise ConfigError(f"monitor {name} has not closed a window yet (run `inferstream monitor run {name}`)")
    out(json.dumps(document, indent=2))
