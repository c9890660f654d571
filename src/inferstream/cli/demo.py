"""``inferstream demo``: the platform end to end on this machine."""

from __future__ import annotations

import json
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.demo import DemoSummary


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", help="Sample events to produce.", min=40)] = 1000,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Then keep the platform running and serve the live dashboard (the gateway at /ui) until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Start a local Kafka (unless one answers), stream sample events through it, show what happened."""
    from inferstream.demo import run_demo

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    started = time.perf_counter()
    shown: list[DemoSummary] = []

    def serve_dashboard(settings: Settings, summary: DemoSummary) -> None:
        summary.elapsed_s = time.perf_counter() - started
        _show(summary)
        shown.append(summary)
        _keep_serving(settings)

    summary = run_demo(
        settings_of(ctx),
        events=events,
        say=lambda text: console.print(f"[cyan]demo[/] {escape(text)}"),
        keep=serve_dashboard if keep else None,
    )
    if not shown:
        _show(summary)
    if not summary.accounted:
        console.print("[bold red]some events are unaccounted for[/]")
        raise typer.Exit(1)
    console.print("[green]every event is accounted for.[/]")


def _show(summary: DemoSummary) -> None:
    for sample in summary.samples:
        console.print_json(json.dumps(sample))
    table = Table(title="demo summary")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("Kafka", summary.bootstrap_servers + (" (started by the demo)" if summary.started_kafka else ""))
    table.add_row("events produced", str(summary.events_produced))
    table.add_row("events read back", str(summary.events_read))
    table.add_row("bad records (refused at produce) → dead letters", f"{summary.bad_records} → {summary.bad_records}")
    table.add_row("dead letters in all", str(summary.dead_letters))
    table.add_row("produce throughput", f"{summary.produce_rps:,.0f} events/s")
    table.add_row("clinical events → predictions", f"{summary.requests} → {summary.predictions}")
    table.add_row(
        "documents → indexed (+ dead letters: over the tokenizer's limit)",
        f"{summary.documents} → {summary.indexed} (+ {summary.embedding_dead_letters})",
    )
    table.add_row("latency p50 / p99 (end to end)", f"{summary.latency_p50_ms:.1f} / {summary.latency_p99_ms:.1f} ms")
    table.add_row("mean batch size", f"{summary.mean_batch_size:.1f}")
    table.add_row(
        "predicted malignant, before → after the shift",
        f"{summary.malignant_share_before:.0%} → {summary.malignant_share_after:.0%}",
    )
    table.add_row("drift alerts", str(summary.alerts))
    if summary.alert is not None:
        table.add_row("first alert", f"{summary.alert['severity']}: {', '.join(summary.alert['drifted'])} drifted")
        table.add_row("its report", summary.report_path or "-")
    for name, value in _loop_rows(summary):
        table.add_row(name, value)
    table.add_row("search", f"{summary.search_query!r} → {', '.join(summary.search_hits)} ({summary.search_ms:.1f} ms)")
    table.add_row("predict() round trip", f"{summary.predict_round_trip_ms:.1f} ms")
    table.add_row("wall time", f"{summary.elapsed_s:.1f} s")
    console.print(table)


def _loop_rows(summary: DemoSummary) -> list[tuple[str, str]]:
    """The quality loop's rows: labels, the quality alert, v2's training, v1 against v2, the promotion."""
    loop = summary.loop
    rows = [
        (
            "labels → archived beside the predictions (+ on v2's trial)",
            f"{loop.labels} → {loop.archived_labels} beside {loop.archived_predictions} (+ {loop.trial_labels})",
        )
    ]
    alert = loop.quality_alert
    if alert is not None:
        rows.append(
            (
                "quality alert (labels)",
                f"degraded ({alert['severity']}): accuracy {alert['accuracy']:.3f} < {alert['limit']:g} "
                f"on {alert['labels']} labels, window from {alert['window_start']}",
            )
        )
        rows.append(("its report", alert["report_path"] or "-"))
    if loop.retrained is not None:
        lineage = loop.lineage
        held_out = ", ".join(
            f"{m} {lineage['metrics'][m]:.3f}" for m in ("accuracy", "f1_macro") if m in lineage["metrics"]
        )
        rows.append(
            (
                "retrained (models retrain)",
                f"{loop.retrained} from v{lineage['source_version']} on {lineage['rows']} labelled rows after the "
                f"shift ({lineage['estimator']}); held out: {held_out}",
            )
        )
    if loop.before and loop.after:
        rows.append(
            (
                f"v1 → v2 on {loop.labelled_shadow} labelled shadow predictions",
                ", ".join(f"{m} {loop.before[m]:.3f} → {loop.after[m]:.3f}" for m in loop.before if m in loop.after),
            )
        )
    if loop.decision:
        rows.append(("--if-better accuracy", loop.decision))
        rows.append(("quality loop (labels → promotion)", f"{loop.elapsed_s:.1f} s"))
    if loop.served_by is not None:
        rows.append(("predict() of breast-cancer after the promotion", f"answered by {loop.served_by}"))
    if loop.stopped is not None:
        rows.append(("quality loop", f"stopped: {loop.stopped}"))
    return rows


def _keep_serving(settings: Settings) -> None:
    """The gateway with the dashboard over the demo's platform, until Ctrl-C (or SIGTERM)."""
    from inferstream.errors import InferstreamError
    from inferstream.gateway import BackgroundGateway
    from inferstream.gateway.ui import dashboard_link

    gateway = BackgroundGateway(settings, port=settings.gateway.port)
    try:
        gateway.start()
    except InferstreamError:  # the configured port is taken: any free one will do
        gateway = BackgroundGateway(settings, port=0).start()
    try:
        link = dashboard_link(gateway.url, settings, reveal=True)  # this terminal's own local demo
        console.print(f"[cyan]demo[/] the live dashboard: {escape(link)}", soft_wrap=True)
        console.print("[cyan]demo[/] the platform keeps running; Ctrl-C stops it")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("[cyan]demo[/] stopping the dashboard ...")
    finally:
        gateway.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
