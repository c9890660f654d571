"""``inferstream up | down | status``: the local Kafka (a broker or a cluster) and Elasticsearch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer
    from inferstream.stack.server import LocalCluster, LocalServer

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
    brokers: Annotated[
        int,
        typer.Option(
            "--brokers",
            help="Kafka brokers: 1, or a KRaft cluster of N on this machine (replication 3, min.insync.replicas 2).",
            min=1,
        ),
    ] = 1,
    with_elasticsearch: Annotated[
        bool,
        typer.Option("--with-elasticsearch", help="Also start a local Elasticsearch (Java 21+) for the vector index."),
    ] = False,
    es_nodes: Annotated[
        int | None,
        typer.Option(
            "--es-nodes",
            help="Also start Elasticsearch with N nodes (2: a cluster, the index with one replica).",
            min=1,
        ),
    ] = None,
) -> None:
    """Start a local Kafka (KRaft: one broker, or `--brokers 3`) and print its bootstrap servers.

    The jars come from Maven Central on first use (needs `mvn` and Java 17+); data
    and logs stay under the state directory, so topics survive `down` and `up`.
    """
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer

    settings = settings_of(ctx)
    if brokers > 1:
        bootstrap = _up_cluster(settings, brokers, timeout)
    else:
        _refuse_other_clusters(settings, keep=None)
        server = KafkaServer.from_settings(settings)
        _start_one(server, timeout)
        bootstrap = server.bootstrap_servers
    if settings.kafka.bootstrap_servers != bootstrap:
        console.print(
            f"  [yellow]clients are configured for {settings.kafka.bootstrap_servers}[/]: "
            f"export INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS={bootstrap}"
        )
    console.print("  stop it with: [bold]inferstream down[/]")
    _stdout.print(bootstrap)
    nodes = es_nodes if es_nodes is not None else (1 if with_elasticsearch else 0)
    if nodes > 1:
        _up_search_cluster(ElasticsearchCluster.from_settings(settings, nodes), settings.elasticsearch.url, timeout)
    elif nodes == 1:
        _up_elasticsearch(ElasticsearchServer.from_settings(settings), settings.elasticsearch.url, timeout)


def _refuse_other_clusters(settings: Settings, *, keep: int | None) -> None:
    """A Kafka of another size runs on the same ports: say so instead of failing on a taken port."""
    from inferstream.stack import KafkaServer
    from inferstream.stack.kafka import KafkaCluster

    running = [n for n in KafkaCluster.sizes(settings) if n != keep and KafkaCluster.from_settings(settings, n).running]
    if keep is not None and KafkaServer.from_settings(settings).running:
        running.insert(0, 1)
    if running:
        what = "a single broker" if running[0] == 1 else f"a {running[0]}-broker cluster"
        console.print(f"[red]{what} of this state directory is running[/]: stop it first with `inferstream down`")
        raise typer.Exit(1)


def _up_cluster(settings: Settings, brokers: int, timeout: float) -> str:
    from inferstream.stack.kafka import KafkaCluster

    _refuse_other_clusters(settings, keep=brokers)
    cluster = KafkaCluster.from_settings(settings, brokers)
    _start_cluster(cluster, max(timeout, 120.0))
    console.print("  KRaft, each node broker and controller; topics (offsets and transactions too):")
    console.print("  replication factor 3, min.insync.replicas 2")
    return cluster.bootstrap_servers


def _start_cluster(cluster: LocalCluster[Any], timeout: float) -> None:
    """Fetch (once) and start every node of a local cluster; say where each is."""
    what = f"{cluster.nodes[0].product} {cluster.version}"
    with console.status(f"Fetching {what} (once) ..."):
        cluster.fetch()
    with console.status(f"Starting {len(cluster.nodes)} {what} nodes ..."):
        cluster.start(timeout=timeout)
    console.print(f"[green]{what} cluster is up[/]: {len(cluster.nodes)} nodes")
    for index, node in enumerate(cluster.nodes, start=1):
        console.print(f"  node {index}: [bold]{node.endpoint}[/] (pid {node.pid}), data {node.data_dir}")
    console.print(f"  logs: {cluster.home}/node-*/")


def _up_search_cluster(cluster: ElasticsearchCluster, configured_url: str | None, timeout: float) -> None:
    _start_cluster(cluster, max(timeout, 180.0))
    _configured_hint(configured_url, cluster.url)


def _configured_hint(configured_url: str | None, url: str) -> None:
    if configured_url != url:
        console.print(
            f"  [yellow]the index is configured for {configured_url or 'the embedded store'}[/]: "
            f"export INFERSTREAM_ELASTICSEARCH__URL={url}"
        )
    _stdout.print(url)


def _start_one(server: LocalServer[Any], timeout: float) -> None:
    """Fetch (once) and start one local server; say where it is."""
    what = f"{server.product} {server.version}"
    if server.running:
        console.print(f"{what} is already running (pid {server.pid}).")
    else:
        with console.status(f"Fetching {what} (once) ..."):
            server.fetch()
    with console.status(f"Starting {what} on {server.endpoint} ..."):
        status = server.start(timeout=timeout)
    console.print(f"[green]{what} is up[/] on [bold]{server.endpoint}[/] (pid {status.pid})")
    console.print(f"  data: {status.data_dir}\n  logs: {status.log_file}")


def _up_elasticsearch(server: ElasticsearchServer, configured_url: str | None, timeout: float) -> None:
    _start_one(server, max(timeout, 120.0))
    _configured_hint(configured_url, server.url)


@app.command()
def down(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.", min=1)] = 30.0,
) -> None:
    """Stop the Kafka brokers (and Elasticsearch nodes) that `inferstream up` started (their data is kept)."""
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer
    from inferstream.stack.kafka import KafkaCluster

    settings = settings_of(ctx)
    for nodes in ElasticsearchCluster.sizes(settings):
        search_cluster = ElasticsearchCluster.from_settings(settings, nodes)
        if search_cluster.running:
            with console.status(f"Stopping the {nodes}-node Elasticsearch cluster ..."):
                search_cluster.stop(timeout=timeout)
            console.print(f"[green]Elasticsearch cluster stopped[/] ({nodes} nodes).")
    search = ElasticsearchServer.from_settings(settings)
    if search.running:
        search_pid = search.pid
        with console.status(f"Stopping Elasticsearch {search.version} ..."):
            search.stop(timeout=timeout)
        console.print(f"[green]Elasticsearch {search.version} stopped[/] (was pid {search_pid}).")
    clusters_stopped = 0
    for brokers in KafkaCluster.sizes(settings):
        cluster = KafkaCluster.from_settings(settings, brokers)
        if cluster.running:
            with console.status(f"Stopping the {brokers}-broker Kafka cluster ..."):
                cluster.stop(timeout=timeout)
            clusters_stopped += 1
            console.print(f"[green]Kafka {cluster.version} cluster stopped[/] ({brokers} brokers).")
    server = KafkaServer.from_settings(settings)
    pid = server.pid
    with console.status(f"Stopping Kafka {server.version} ..."):
        stopped = server.stop(timeout=timeout)
    if stopped:
        console.print(f"[green]Kafka {server.version} stopped[/] (was pid {pid}).")
    elif not clusters_stopped:
        console.print(f"Kafka {server.version} was not running (state in {server.home}).")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the local Kafka (broker or cluster) runs, its pids, addresses and directories.

    Exits 0 while it runs and 3 when it is stopped.
    """
    from inferstream.stack import KafkaServer
    from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer
    from inferstream.stack.kafka import KafkaCluster

    settings = settings_of(ctx)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    clusters = [KafkaCluster.from_settings(settings, n) for n in KafkaCluster.sizes(settings)]
    clusters = [cluster for cluster in clusters if cluster.running]
    server = KafkaServer.from_settings(settings)
    info = server.status()
    if info.running or not clusters:
        state = "[green]running[/]" if info.running else "[red]stopped[/]"
        table.add_row("kafka", f"{state} (version {info.version})")
        table.add_row("pid", str(info.pid) if info.pid is not None else "-")
        table.add_row("bootstrap", info.bootstrap_servers)
        table.add_row("data dir", str(info.data_dir))
        table.add_row("log", str(info.log_file))
        table.add_row("jars", f"{info.lib_dir}{'' if server.fetched else ' (not fetched yet)'}")
    for cluster in clusters:
        up_nodes = sum(node.running for node in cluster.nodes)
        table.add_row("kafka cluster", f"[green]{up_nodes} of {len(cluster.nodes)} brokers running[/]")
        table.add_row("bootstrap", cluster.bootstrap_servers)
        _node_rows(table, cluster)
    search = ElasticsearchServer.from_settings(settings).status()
    if search.running:
        table.add_row("elasticsearch", f"[green]running[/] (version {search.version}, pid {search.pid})")
        table.add_row("url", search.url)
    for nodes in ElasticsearchCluster.sizes(settings):
        search_cluster = ElasticsearchCluster.from_settings(settings, nodes)
        if search_cluster.running:
            up_nodes = sum(node.running for node in search_cluster.nodes)
            table.add_row("elasticsearch cluster", f"[green]{up_nodes} of {nodes} nodes running[/]")
            table.add_row("url", search_cluster.url)
            _node_rows(table, search_cluster)
    _stdout.print(table)
    if not info.running and not clusters:
        raise typer.Exit(EXIT_STOPPED)


def _node_rows(table: Table, cluster: LocalCluster[Any]) -> None:
    for index, node in enumerate(cluster.nodes, start=1):
        pid = node.pid
        state = f"pid {pid}" if pid is not None else "[red]stopped[/]"
        table.add_row(f"  node {index}", f"{node.endpoint} ({state}), data {node.data_dir}")
