"""``inferstream up | down | status``: the local single-node Kafka (and Elasticsearch) under the state directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of

if TYPE_CHECKING:
    from inferstream.stack.elasticsearch import ElasticsearchServer

# Results go to stdout (scripts read them); progress and hints go to stderr.
_stdout = Console(highlight=False)

# `status` exit code when the stack is stopped, as LSB init scripts use it.
EXIT_STOPPED = 3


@app.command()
def up(
    ctx: typer.Context,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the broker to serve metadata.", min=1),
    ] = 90.0,
    with_elasticsearch: Annotated[
        bool,
        typer.Option("--with-elasticsearch", help="Also start a local Elasticsearch (Java 21+) for the vector index."),
    ] = False,
) -> None:
    """Start a local Kafka (KRaft, single node) and print its bootstrap servers.

    The jars come from Maven Central on first use (needs `mvn` and Java 17+); data
    and logs stay under the state directory, so topics survive `down` and `up`.
    """
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchServer

    settings = settings_of(ctx)
    server = KafkaServer.from_settings(settings)
    if server.running:
        console.print(f"Kafka {server.version} is already running (pid {server.pid}).")
    elif not server.fetched:
        with console.status(f"Fetching Kafka {server.version} jars into {server.lib_dir} ..."):
            server.fetch()
    with console.status(f"Starting Kafka {server.version} on {server.bootstrap_servers} ..."):
        status = server.start(timeout=timeout)
    console.print(f"[green]Kafka {status.version} is up[/] on [bold]{status.bootstrap_servers}[/] (pid {status.pid})")
    console.print(f"  data: {status.data_dir}\n  logs: {status.log_file}")
    if settings.kafka.bootstrap_servers != status.bootstrap_servers:
        console.print(
            f"  [yellow]clients are configured for {settings.kafka.bootstrap_servers}[/]: "
            f"export INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS={status.bootstrap_servers}"
        )
    console.print("  stop it with: [bold]inferstream down[/]")
    _stdout.print(status.bootstrap_servers)
    if with_elasticsearch:
        _up_elasticsearch(ElasticsearchServer.from_settings(settings), settings.elasticsearch.url, timeout)


def _up_elasticsearch(server: ElasticsearchServer, configured_url: str | None, timeout: float) -> None:
    if server.running:
        console.print(f"Elasticsearch {server.version} is already running (pid {server.pid}).")
    elif not server.fetched:
        with console.status(f"Fetching Elasticsearch {server.version} into {server.cache_dir} ..."):
            server.fetch()
    with console.status(f"Starting Elasticsearch {server.version} on {server.url} ..."):
        status = server.start(timeout=max(timeout, 120.0))
    console.print(f"[green]Elasticsearch {status.version} is up[/] on [bold]{status.url}[/] (pid {status.pid})")
    console.print(f"  data: {status.data_dir}\n  logs: {status.log_file}")
    if configured_url != status.url:
        console.print(
            f"  [yellow]the index is configured for {configured_url or 'the embedded store'}[/]: "
            f"export INFERSTREAM_ELASTICSEARCH__URL={status.url}"
        )
    _stdout.print(status.url)


@app.command()
def down(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.", min=1)] = 30.0,
) -> None:
    """Stop the Kafka (and Elasticsearch) that `inferstream up` started (their data is kept)."""
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchServer

    search = ElasticsearchServer.from_settings(settings_of(ctx))
    if search.running:
        search_pid = search.pid
        with console.status(f"Stopping Elasticsearch {search.version} ..."):
            search.stop(timeout=timeout)
        console.print(f"[green]Elasticsearch {search.version} stopped[/] (was pid {search_pid}).")
    server = KafkaServer.from_settings(settings_of(ctx))
    pid = server.pid
    with console.status(f"Stopping Kafka {server.version} ..."):
        stopped = server.stop(timeout=timeout)
    if stopped:
        console.print(f"[green]Kafka {server.version} stopped[/] (was pid {pid}).")
    else:
        console.print(f"Kafka {server.version} was not running (state in {server.home}).")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the local Kafka runs, its pid, address and directories.

    Exits 0 while it runs and 3 when it is stopped.
    """
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchServer

    server = KafkaServer.from_settings(settings_of(ctx))
    info = server.status()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    state = "[green]running[/]" if info.running else "[red]stopped[/]"
    table.add_row("kafka", f"{state} (version {info.version})")
    table.add_row("pid", str(info.pid) if info.pid is not None else "-")
    table.add_row("bootstrap", info.bootstrap_servers)
    table.add_row("data dir", str(info.data_dir))
    table.add_row("log", str(info.log_file))
    table.add_row("jars", f"{info.lib_dir}{'' if server.fetched else ' (not fetched yet)'}")
    search = ElasticsearchServer.from_settings(settings_of(ctx)).status()
    if search.running:
        table.add_row("elasticsearch", f"[green]running[/] (version {search.version}, pid {search.pid})")
        table.add_row("url", search.url)
    _stdout.print(table)
    if not info.running:
        raise typer.Exit(EXIT_STOPPED)
