"""Local clusters without starting one: derived ports, replication picked from the cluster, node configuration."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from inferstream.config import ElasticsearchSettings, Settings, replication_for
from inferstream.connectors.elasticsearch import render_settings, replicas_for
from inferstream.errors import StackError
from inferstream.stack.elasticsearch import ElasticsearchCluster
from inferstream.stack.kafka import KafkaCluster
from inferstream.stack.server import node_ports
from inferstream.stack.testing import free_ports


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# -- ports --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (9092, 9093, [(9092, 9093), (9094, 9095), (9096, 9097)]),
        # The controller below the broker, or far above it: derived pairs start above both.
        (9092, 9000, [(9092, 9000), (9093, 9094), (9095, 9096)]),
        (9092, 9094, [(9092, 9094), (9095, 9096), (9097, 9098)]),
    ],
)
def test_derived_ports_never_take_a_configured_one(first: int, second: int, expected: list[tuple[int, int]]) -> None:
    pairs = node_ports(first, second, 3, what="Kafka", settings="X", single="Y")
    assert pairs == expected
    flat = [port for pair in pairs for port in pair]
    assert len(set(flat)) == len(flat)


def test_derived_ports_past_the_last_port_are_refused_with_the_settings_to_change() -> None:
    with pytest.raises(StackError, match=r"65535.*lower INFERSTREAM_STACK__KAFKA_PORT"):
        KafkaCluster(Path("/nonexistent"), brokers=3, port=65532, controller_port=65533)


def test_one_broker_is_not_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"at least 2 nodes.*`inferstream up`"):
        KafkaCluster(tmp_path, brokers=1)
    with pytest.raises(StackError, match=r"at least 2 nodes.*--with-elasticsearch"):
        ElasticsearchCluster(tmp_path, nodes=1)


def test_a_taken_derived_port_is_named_before_any_node_starts(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        # Node 3's client port is the taken one: node 1 on taken-4/taken-3, node 2 on taken-2/taken-1.
        cluster = KafkaCluster(tmp_path, port=taken - 4, controller_port=taken - 3)
        assert cluster.nodes[2].port == taken
        with pytest.raises(StackError, match=rf"Kafka \(node 3\) port 127\.0\.0\.1:{taken} is taken.*derived"):
            cluster.start(timeout=5)
    assert not any(node.running for node in cluster.nodes)
    assert not (cluster.home / "node-1" / "kafka.pid").exists()


# -- Kafka cluster --------------------------------------------------------------------------


def test_every_broker_is_a_voter_with_its_own_folder_and_replication_three(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, port=19200, controller_port=19201)
    assert cluster.bootstrap_servers == "127.0.0.1:19200,127.0.0.1:19202,127.0.0.1:19204"
    props = [_props(node.render_properties()) for node in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = "1@127.0.0.1:19201,2@127.0.0.1:19203,3@127.0.0.1:19205"
    assert {p["controller.quorum.voters"] for p in props} == {voters}
    assert all("controller.quorum.bootstrap.servers" not in p for p in props)
    assert len({p["log.dirs"] for p in props}) == 3
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:19202,CONTROLLER://127.0.0.1:19203"
    for p in props:
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
    assert cluster.nodes[0].data_dir == tmp_path.absolute() / "kafka" / "4.1.1" / "cluster-3" / "node-1" / "data"


def test_cluster_brokers_get_the_cluster_heap(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    cluster = KafkaCluster.from_settings(settings, 3)
    assert all(f"-Xmx{settings.stack.cluster_kafka_heap}" in node._jvm_options() for node in cluster.nodes)
    assert KafkaCluster.sizes(settings) == []
    (cluster.home / "node-1").mkdir(parents=True)
    assert KafkaCluster.sizes(settings) == [3]


def test_a_single_broker_keeps_its_own_settings(tmp_path: Path) -> None:
    from inferstream.stack import KafkaServer

    props = _props(KafkaServer(tmp_path, port=19300, controller_port=19301).render_properties())
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19301"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"


@pytest.mark.parametrize(
    ("brokers", "replication", "config"),
    [
        (1, 1, {}),
        (2, 2, {}),
        (3, 3, {"min.insync.replicas": "2"}),
        (6, 3, {"min.insync.replicas": "2"}),
    ],
)
def test_replication_is_picked_from_the_cluster_size(brokers: int, replication: int, config: dict[str, str]) -> None:
    assert replication_for(brokers) == (replication, config)


def test_topic_replication_is_unset_by_default_so_the_cluster_decides() -> None:
    assert Settings().topics.replication_factor is None
    assert Settings(topics={"replication_factor": 2}).topics.replication_factor == 2


# -- Elasticsearch cluster ----------------------------------------------------------------


def test_search_nodes_find_each_other_and_live_apart(tmp_path: Path) -> None:
    cluster = ElasticsearchCluster(tmp_path, port=19400, transport_port=19401)
    configs = [yaml.safe_load(node.render_config()) for node in cluster.nodes]
    assert [c["node.name"] for c in configs] == ["inferstream-1", "inferstream-2"]
    assert [c["http.port"] for c in configs] == ["19400", "19402"]
    for config in configs:
        assert "discovery.type" not in config
        assert config["discovery.seed_hosts"] == ["127.0.0.1:19401", "127.0.0.1:19403"]
        assert config["cluster.initial_master_nodes"] == ["inferstream-1", "inferstream-2"]
        assert config["cluster.name"] == "inferstream-cluster-2"
    assert cluster.nodes[0].data_dir != cluster.nodes[1].data_dir
    assert cluster.url == "http://127.0.0.1:19400,http://127.0.0.1:19402"


def test_the_index_gets_a_replica_once_a_second_node_holds_data() -> None:
    assert [replicas_for(n) for n in (1, 2, 3)] == [0, 1, 1]
    auto = ElasticsearchSettings(url="http://a:9200")
    assert render_settings(auto, data_nodes=2)["number_of_replicas"] == 1
    assert render_settings(auto)["number_of_replicas"] == 0
    fixed = ElasticsearchSettings(url="http://a:9200", replicas=0)
    assert render_settings(fixed, data_nodes=2)["number_of_replicas"] == 0


def test_the_index_url_may_name_every_node() -> None:
    settings = ElasticsearchSettings(url="http://127.0.0.1:9200, http://127.0.0.1:9202")
    assert settings.client_options()["hosts"] == ["http://127.0.0.1:9200", "http://127.0.0.1:9202"]


# -- CLI ----------------------------------------------------------------------------------


def test_status_down_and_up_see_a_running_cluster_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process standing in for node 2 (its command line names the node's properties, as the JVM's would)."""
    from typer.testing import CliRunner

    from inferstream.cli import app
    from inferstream.stack.process import process_alive, spawn_detached, terminate

    port, controller_port = sorted(free_ports(2))
    monkeypatch.setenv("INFERSTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("INFERSTREAM_STACK__KAFKA_PORT", str(port))
    monkeypatch.setenv("INFERSTREAM_STACK__CONTROLLER_PORT", str(controller_port))
    node = KafkaCluster.from_settings(Settings.load(), 3).nodes[1]
    node.home.mkdir(parents=True)
    pid = spawn_detached(
        ["/bin/sh", "-c", "sleep 60", "kafka.Kafka", str(node.properties_file)], log_file=tmp_path / "node.log"
    )
    node.pid_file.write_text(f"{pid}\n")
    runner = CliRunner()
    try:
        assert node.running
        status = runner.invoke(app, ["status"])
        assert status.exit_code == 0, status.output
        assert "1 of 3 brokers running" in status.stdout
        assert f"127.0.0.1:{node.port} (pid {pid})" in status.stdout
        single = runner.invoke(app, ["up"])
        assert single.exit_code == 1, single.output
        assert "a 3-broker cluster of this state directory is running" in " ".join(single.output.split())
        down = runner.invoke(app, ["down", "--timeout", "5"])
        assert down.exit_code == 0, down.output
        assert "cluster stopped (3 brokers)" in down.output
        assert not process_alive(pid)
        assert runner.invoke(app, ["status"]).exit_code == 3
    finally:
        terminate(pid, timeout=1)
