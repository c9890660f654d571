"""What the broker benchmarks share: a broker (given or ephemeral), fresh topics, the RESULT line.

A benchmark run with ``--bootstrap-servers`` uses that broker and deletes the topics it
created; without it, a throwaway single-node Kafka is started in a temporary directory
(jars from the repository's cache, like the integration tests) and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.stack.kafka import KAFKA_LIB_ENV
from inferstream.stack.testing import (
    Broker,
    SearchServer,
    ephemeral_kafka,
    ephemeral_kafka_cluster,
    throwaway_elasticsearch,
    throwaway_elasticsearch_cluster,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 3


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--bootstrap-servers``, the options every broker benchmark takes."""
    parser.add_argument("--quick", action="store_true", help="Small sizes, one round: under a minute in all.")
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Use this broker (topics are created and deleted); default: start a throwaway one.",
    )


def kafka_lib_dir(version: str) -> Path:
    """The jar cache the integration tests use (``$INFERSTREAM_KAFKA_LIB`` wins)."""
    env = os.environ.get(KAFKA_LIB_ENV)
    return Path(env) if env else REPO_ROOT / ".inferstream" / "cache" / f"kafka-{version}" / "lib"


def note(message: str) -> None:
    """Progress on stderr, so stdout keeps the table and the RESULT line."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def broker(bootstrap_servers: str | None) -> Iterator[str]:
    """The bootstrap servers to use: the given ones, or those of a broker started (and stopped) here."""
    with kafka_broker(bootstrap_servers) as found:
        yield found.bootstrap_servers


@contextmanager
def kafka_broker(bootstrap_servers: str | None) -> Iterator[Broker]:
    """Like :func:`broker`; a broker started here comes with its ``server``, which can be stopped and started again."""
    if bootstrap_servers:
        yield Broker(bootstrap_servers=bootstrap_servers)
        return
    version = Settings.load().stack.kafka_version
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="inferstream-bench-") as state_dir,
        ephemeral_kafka(Path(state_dir), version=version, lib_dir=kafka_lib_dir(version)) as kafka,
    ):
        note(f"started Kafka {version} at {kafka.bootstrap_servers} in {time.perf_counter() - started:.1f}s")
        try:
            yield kafka
        finally:
            note("stopping Kafka")


@contextmanager
def elasticsearch(url: str | None) -> Iterator[SearchServer]:
    """The given Elasticsearch (``server`` None), or a single node started (and stopped) here on free ports."""
    if url:
        yield SearchServer(url=url)
        return
    started = time.perf_counter()
    with throwaway_elasticsearch(REPO_ROOT / ".inferstream", prefix="inferstream-bench-es-") as server:
        note(f"started Elasticsearch at {server.url} in {time.perf_counter() - started:.1f}s")
        try:
            yield server
        finally:
            note("stopping Elasticsearch")


@contextmanager
def kafka_cluster(brokers: int = 3) -> Iterator[Broker]:
    """A throwaway local KRaft cluster (``Broker.cluster``) in a temporary directory, stopped at the end."""
    version = Settings.load().stack.kafka_version
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="inferstream-bench-") as state_dir,
        ephemeral_kafka_cluster(
            Path(state_dir), brokers=brokers, version=version, lib_dir=kafka_lib_dir(version)
        ) as kafka,
    ):
        note(
            f"started {brokers} Kafka {version} brokers at {kafka.bootstrap_servers} "
            f"in {time.perf_counter() - started:.1f}s"
        )
        try:
            yield kafka
        finally:
            note("stopping the Kafka cluster")


@contextmanager
def elasticsearch_cluster(nodes: int = 2) -> Iterator[SearchServer]:
    """A throwaway local Elasticsearch cluster (``SearchServer.cluster``) on free ports, stopped at the end."""
    started = time.perf_counter()
    with throwaway_elasticsearch_cluster(
        REPO_ROOT / ".inferstream", nodes=nodes, prefix="inferstream-bench-es-"
    ) as server:
        note(f"started {nodes} Elasticsearch nodes at {server.url} in {time.perf_counter() - started:.1f}s")
        try:
            yield server
        finally:
            note("stopping the Elasticsearch cluster")


@contextmanager
def bench_client(bootstrap_servers: str) -> Iterator[Client]:
    """A client whose topics carry a prefix of this run's own; its topics are deleted at the end."""
    settings = Settings.load(
        kafka={"bootstrap_servers": bootstrap_servers},
        topics={"prefix": f"bench.{uuid.uuid4().hex[:8]}."},
    )
    with Client(settings) as client:
        try:
            yield client
        finally:
            prefix = settings.topics.prefix
            client.topics.delete(*(name for name in client.topics.list() if name.startswith(prefix)))


def fresh_topic(client: Client, logical: str) -> str:
    """Create ``<prefix><logical>`` with the benchmarks' partition count; its full name."""
    name = client.settings.topics.name(logical)
    if not client.topics.create(name, partitions=PARTITIONS):
        raise RuntimeError(f"topic {name} already exists: the benchmark needs a fresh one")
    return name


def print_figures(figures: Mapping[str, float]) -> None:
    """The figures as a two-column table on stdout."""
    print(f"{'metric':32} {'value':>14}")
    for key, value in figures.items():
        print(f"{key:32} {value:14.4g}")


def result_line(metrics: Mapping[str, float]) -> str:
    """``RESULT k=v ...``: rates as integers, ratios and small figures with 3 significant digits."""
    parts = []
    for key, value in metrics.items():
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        parts.append(f"{key}={text}")
    return "RESULT " + " ".join(parts)
