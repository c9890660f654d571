"""Helpers for tests that need a real broker: free ports and a throwaway Kafka.

>>> with ephemeral_kafka(tmp_path) as broker:
...     Settings.load(kafka={"bootstrap_servers": broker.bootstrap_servers})

The project's own integration tests use these through the ``kafka`` fixture in
``tests/integration/conftest.py``; applications built on inferstream can do the same.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from inferstream.config import Settings
from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer
from inferstream.stack.kafka import KafkaCluster, KafkaServer


@dataclass(frozen=True, slots=True)
class Broker:
    """A broker tests talk to; ``server`` is None when it was started elsewhere (``cluster``: several brokers)."""

    bootstrap_servers: str
    server: KafkaServer | None = None
    cluster: KafkaCluster | None = None


class _Runnable(Protocol):
    ready: threading.Event

    def run(self) -> Any: ...

    def stop(self) -> None: ...


R = TypeVar("R", bound=_Runnable)


@contextmanager
def running_in_thread(component: R, *, timeout: float = 60.0) -> Iterator[R]:
    """Run a worker, sink or monitor (``run()`` until ``stop()``) in a thread while the block runs.

    Waits for its ``ready`` event first; on exit stops it, waits for ``run()`` to return
    and raises what it raised, so a test sees a component that failed behind its back.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            component.run()
        except BaseException as exc:  # raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"test-{type(component).__name__}", daemon=True)
    thread.start()
    try:
        if not component.ready.wait(timeout):
            raise TimeoutError(f"{type(component).__name__} was not ready within {timeout:.0f}s: {errors}")
        yield component
    finally:
        component.stop()
        thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{type(component).__name__} did not stop within {timeout:.0f}s")
    if errors:
        raise errors[0]


def cli_env(settings: Settings, models_dir: Path | None = None) -> dict[str, str]:
    """The environment for an ``inferstream`` command on the same broker, topic prefix and models."""
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "COLUMNS": "200",  # rich wraps at 80 columns without a terminal: keep messages on one line
    }
    if models_dir is not None:
        env["INFERSTREAM_MODELS_DIR"] = str(models_dir)
    return env


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def ephemeral_kafka(
    state_dir: Path,
    *,
    version: str = "4.1.1",
    lib_dir: Path | None = None,
    heap: str = "512m",
    timeout: float = 120.0,
) -> Iterator[Broker]:
    """A fresh broker on free ports with its data in ``state_dir``, stopped on exit."""
    port, controller_port = free_ports(2)
    server = KafkaServer(
        state_dir,
        port=port,
        controller_port=controller_port,
        version=version,
        heap=heap,
        lib_dir=lib_dir,
    )
    server.start(timeout=timeout)
    try:
        yield Broker(bootstrap_servers=server.bootstrap_servers, server=server)
    finally:
        server.stop()


@contextmanager
def ephemeral_kafka_cluster(
    state_dir: Path,
    *,
    brokers: int = 3,
    version: str = "4.1.1",
    lib_dir: Path | None = None,
    heap: str = "320m",
    timeout: float = 180.0,
) -> Iterator[Broker]:
    """A fresh local KRaft cluster of ``brokers`` on free ports with its data in ``state_dir``, stopped on exit."""
    # Node 1 on two free ports; the others derive theirs above both (checked free at start).
    port, controller_port = sorted(free_ports(2))
    cluster = KafkaCluster(
        state_dir,
        brokers=brokers,
        port=port,
        controller_port=controller_port,
        version=version,
        heap=heap,
        lib_dir=lib_dir,
    )
    try:
        cluster.start(timeout=timeout)
        yield Broker(bootstrap_servers=cluster.bootstrap_servers, cluster=cluster)
    finally:
        cluster.stop()


@dataclass(frozen=True, slots=True)
class SearchServer:
    """An Elasticsearch tests talk to; ``server`` is None when it was started elsewhere (``cluster``: several nodes)."""

    url: str
    server: ElasticsearchServer | None = None
    cluster: ElasticsearchCluster | None = None


@contextmanager
def ephemeral_elasticsearch(
    state_dir: Path,
    *,
    version: str = "9.3.2",
    cache_dir: Path | None = None,
    heap: str = "512m",
    timeout: float = 180.0,
) -> Iterator[SearchServer]:
    """A fresh single-node Elasticsearch on free ports with its data in ``state_dir``, stopped on exit.

    As root the server runs as another user, so ``state_dir`` must be reachable by every user.
    """
    port, transport_port = free_ports(2)
    server = ElasticsearchServer(
        state_dir, port=port, transport_port=transport_port, version=version, heap=heap, cache_dir=cache_dir
    )
    server.start(timeout=timeout)
    try:
        yield SearchServer(url=server.url, server=server)
    finally:
        server.stop()


@contextmanager
def throwaway_elasticsearch(state_root: Path, *, prefix: str = "inferstream-es-") -> Iterator[SearchServer]:
    """The configured Elasticsearch version, fetched once into ``state_root``'s cache, on free ports.

    Its data lives in a fresh folder under the system's temporary directory that every user
    can reach (as root, Elasticsearch runs as another user), removed on exit.
    """
    with (
        _throwaway_dir(state_root, prefix) as (data, version, cache_dir),
        ephemeral_elasticsearch(data, version=version, cache_dir=cache_dir) as server,
    ):
        yield server


@contextmanager
def throwaway_elasticsearch_cluster(
    state_root: Path, *, nodes: int = 2, prefix: str = "inferstream-es-", timeout: float = 240.0
) -> Iterator[SearchServer]:
    """Like :func:`throwaway_elasticsearch`, a cluster of ``nodes`` (its url names every node)."""
    with _throwaway_dir(state_root, prefix) as (data, version, cache_dir):
        http, transport = sorted(free_ports(2))
        cluster = ElasticsearchCluster(
            data, nodes=nodes, port=http, transport_port=transport, version=version, cache_dir=cache_dir
        )
        try:
            cluster.start(timeout=timeout)
            yield SearchServer(url=cluster.url, cluster=cluster)
        finally:
            cluster.stop()


@contextmanager
def _throwaway_dir(state_root: Path, prefix: str) -> Iterator[tuple[Path, str, Path]]:
    """(a fresh data folder every user can reach, the configured version, its fetched distribution cache)."""
    version = Settings.load().elasticsearch.local.version
    cache_dir = state_root / "cache" / f"elasticsearch-{version}"
    ElasticsearchServer(state_root, version=version, cache_dir=cache_dir).fetch()
    data = Path(tempfile.mkdtemp(prefix=prefix))
    data.chmod(0o755)
    try:
        yield data, version, cache_dir
    finally:
        shutil.rmtree(data, ignore_errors=True)
