"""Helpers for tests that need a real broker: free ports and a throwaway Kafka.

>>> with ephemeral_kafka(tmp_path) as broker:
...     Settings.load(kafka={"bootstrap_servers": broker.bootstrap_servers})

The project's own integration tests use these through the ``kafka`` fixture in
``tests/integration/conftest.py``; applications built on inferstream can do the same.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from inferstream.stack.elasticsearch import ElasticsearchServer
from inferstream.stack.kafka import KafkaServer


@dataclass(frozen=True, slots=True)
class Broker:
    """A broker tests talk to; ``server`` is None when it was started elsewhere."""

    bootstrap_servers: str
    server: KafkaServer | None = None


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


@dataclass(frozen=True, slots=True)
class SearchServer:
    """An Elasticsearch tests talk to; ``server`` is None when it was started elsewhere."""

    url: str
    server: ElasticsearchServer | None = None


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
