"""A 3-broker Kafka and a 2-node Elasticsearch started with ``inferstream up``, a node of each killed under load.

``inferstream up --brokers 3 --es-nodes 2`` starts both clusters on ports derived from
the configured ones; the platform's topics get replication 3 and min.insync.replicas 2
from the cluster's size, with no setting edited. Then the chaos benchmark's cluster
scenarios at their smallest (real ``inferstream`` processes, a producer thread with
acks=all and idempotence): kill -9 of the broker leading partition 0 of the predictions
topic under the exactly-once worker, and of the Elasticsearch node that is not the
elected master under the index sink, each started again on its data. Nothing sent is
lost, nothing is answered twice, and each node is back in sync; the index got one
replica, picked from the two data nodes.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferstream.client import Client
from inferstream.config import ElasticsearchSettings, Settings
from inferstream.connectors.elasticsearch import ElasticsearchStore
from inferstream.connectors.vectors import IndexMeta
from inferstream.stack.elasticsearch import ElasticsearchCluster, ElasticsearchServer
from inferstream.stack.kafka import KAFKA_LIB_ENV, KafkaCluster
from inferstream.stack.testing import Broker, SearchServer, free_ports

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos  # the benchmarks folder is no package: imported by path

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = chaos.Plan(
    rate=100, text_rate=1, before_s=2, down_s=1, after_s=3, es_outage_s=0, window=10, drain_max_s=90, stop_s=30
)


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # As root, Elasticsearch runs as its own user, which must reach the state directory.
    path = Path(tempfile.mkdtemp(prefix="inferstream-cluster-"))
    path.chmod(0o755)
    # The Elasticsearch distribution the session's single node uses, fetched once into the repository's cache.
    version = Settings.load().elasticsearch.local.version
    cached = REPO_ROOT / ".inferstream" / "cache" / f"elasticsearch-{version}"
    ElasticsearchServer(REPO_ROOT / ".inferstream", version=version, cache_dir=cached).fetch()
    (path / "cache").mkdir(mode=0o755)
    (path / "cache" / f"elasticsearch-{version}").symlink_to(cached.resolve())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_killed_leader_broker_and_es_node_lose_nothing_and_duplicate_nothing(
    stack_dir: Path, kafka_lib_dir: Path, models_dir: Path
) -> None:
    kafka_port, controller_port, es_port, transport_port = sorted(free_ports(4))
    env = {
        **os.environ,
        "INFERSTREAM_STATE_DIR": str(stack_dir),
        "INFERSTREAM_STACK__KAFKA_PORT": str(kafka_port),
        "INFERSTREAM_STACK__CONTROLLER_PORT": str(controller_port),
        # Above the brokers' derived ports (node 3 ends at controller_port + 4).
        "INFERSTREAM_ELASTICSEARCH__LOCAL__PORT": str(max(es_port, controller_port + 10)),
        "INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT": str(max(transport_port, controller_port + 11)),
        KAFKA_LIB_ENV: str(kafka_lib_dir),
        "COLUMNS": "200",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inferstream", *args], capture_output=True, text=True, env=env, timeout=600
        )

    settings = Settings.load(
        state_dir=stack_dir,
        stack={"kafka_port": kafka_port, "controller_port": controller_port},
        elasticsearch={
            "local": {
                "port": int(env["INFERSTREAM_ELASTICSEARCH__LOCAL__PORT"]),
                "transport_port": int(env["INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT"]),
            }
        },
    )
    kafka = KafkaCluster.from_settings(settings, 3, lib_dir=kafka_lib_dir)
    search = ElasticsearchCluster.from_settings(settings, 2)
    try:
        up = cli("up", "--brokers", "3", "--es-nodes", "2")
        assert up.returncode == 0, up.stderr
        assert up.stdout.split() == [kafka.bootstrap_servers, search.url]
        status = cli("status")
        assert status.returncode == 0, status.stderr
        assert "3 of 3 brokers running" in status.stdout
        assert "2 of 2 nodes running" in status.stdout

        lab = chaos.Lab(
            TINY,
            Broker(bootstrap_servers=kafka.bootstrap_servers, cluster=kafka),
            models_dir,
            stack_dir / "chaos",
            search=SearchServer(url=search.url, cluster=search),
        )
        outcomes = {o.name: o for o in chaos.run_scenarios(lab, ["cluster_broker", "cluster_elasticsearch"])}
        for outcome in outcomes.values():
            assert outcome.sent > 300, outcome.line()
            assert outcome.lost == 0, outcome.line()
            assert outcome.dup == 0, outcome.line()
            assert math.isfinite(outcome.recovery_s), outcome.line()
            assert outcome.rejoined is True, outcome.line()
            assert outcome.exit_codes == [0], outcome.line()
            assert outcome.dead_letters == 0, outcome.line()

        # Replication came from the cluster: nobody set topics.replication_factor.
        with Client(lab.settings("cluster_broker")) as client:
            predictions = client.topics.describe(client.settings.topics.platform_topics()["predictions"])
            offsets = client.topics.describe("__consumer_offsets", with_config=False)
            transactions = client.topics.describe("__transaction_state", with_config=False)
        assert {len(p.replicas) for p in predictions.partitions} == {3}
        assert predictions.config["min.insync.replicas"] == "2"
        assert {len(p.replicas) for p in offsets.partitions + transactions.partitions} == {3}

        # The index's replica came from the cluster too: nobody set elasticsearch.replicas.
        index_settings = ElasticsearchSettings(url=search.url, index="cluster-replicas")
        store = ElasticsearchStore(index_settings)
        try:
            store.setup(IndexMeta("minilm", "1", 384, "cosine"))
            made = store.client.indices.get_settings(index="cluster-replicas")["cluster-replicas"]["settings"]
            assert made["index"]["number_of_replicas"] == "1"
        finally:
            store.client.options(ignore_status=404).indices.delete(index="cluster-replicas")
            store.close()
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not kafka.running
    assert not search.running
    assert cli("status").returncode == 3
