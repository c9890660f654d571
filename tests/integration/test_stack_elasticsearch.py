"""`inferstream up --with-elasticsearch`, `status` and `down`, as users run them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from inferstream.stack.kafka import KAFKA_LIB_ENV
from inferstream.stack.testing import free_ports


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # As root, Elasticsearch runs as its own user, which must reach the state directory.
    path = Path(tempfile.mkdtemp(prefix="inferstream-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_with_elasticsearch_status_down(stack_dir: Path, kafka_lib_dir: Path) -> None:
    kafka_port, controller_port, es_port, transport_port = free_ports(4)
    env = {
        **os.environ,
        "INFERSTREAM_STATE_DIR": str(stack_dir),
        "INFERSTREAM_STACK__KAFKA_PORT": str(kafka_port),
        "INFERSTREAM_STACK__CONTROLLER_PORT": str(controller_port),
        "INFERSTREAM_ELASTICSEARCH__LOCAL__PORT": str(es_port),
        "INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT": str(transport_port),
        KAFKA_LIB_ENV: str(kafka_lib_dir),
        "COLUMNS": "200",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inferstream", *args], capture_output=True, text=True, env=env, timeout=400
        )

    url = f"http://127.0.0.1:{es_port}"
    try:
        up = cli("up", "--with-elasticsearch")
        assert up.returncode == 0, up.stderr
        assert up.stdout.split() == [f"127.0.0.1:{kafka_port}", url]
        assert "export INFERSTREAM_ELASTICSEARCH__URL=" + url in " ".join(up.stderr.split())
        health = Elasticsearch(url).cluster.health(wait_for_status="yellow", timeout="30s")
        assert health["number_of_nodes"] == 1
        status = cli("status")
        assert status.returncode == 0
        assert url in status.stdout
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "Elasticsearch 9.3.2 stopped" in down.stderr
    after = cli("status")
    assert after.returncode == 3
    assert url not in after.stdout
