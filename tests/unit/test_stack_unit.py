"""The local stack's pure parts and its failure modes, without starting a broker."""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferstream.config import Settings
from inferstream.errors import StackError
from inferstream.stack import KafkaServer
from inferstream.stack import __main__ as stack_main
from inferstream.stack.java import find_java, parse_java_major
from inferstream.stack.kafka import KAFKA_LIB_ENV, new_cluster_id
from inferstream.stack.maven import Artifact, render_pom
from inferstream.stack.process import (
    port_in_use,
    process_alive,
    spawn_detached,
    tail,
    terminate,
)
from inferstream.stack.testing import free_ports


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\nPATH=/usr/bin:/bin\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``bin`` as the only PATH entry, and no JAVA_HOME or jar override."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv(KAFKA_LIB_ENV, raising=False)
    return bin_dir


@pytest.fixture
def fake_mvn(bare_path: Path, tmp_path: Path) -> Path:
    """An ``mvn`` that puts two empty Kafka jars where it is told; each run appends to the returned log."""
    log = tmp_path / "mvn-runs.log"
    _script(
        bare_path / "mvn",
        f'echo "$*" >> "{log}"\n'
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac; done\n'
        'mkdir -p "$out" && touch "$out/kafka_2.13-4.1.1.jar" "$out/kafka-clients-4.1.1.jar"\n',
    )
    return log


def _server(tmp_path: Path, **kwargs: object) -> KafkaServer:
    port, controller_port = free_ports(2)
    options: dict[str, object] = {"port": port, "controller_port": controller_port}
    options.update(kwargs)
    return KafkaServer(tmp_path / "state", **options)  # type: ignore[arg-type]


# -- rendering ----------------------------------------------------------------------------


def test_server_properties_describe_a_single_node_kraft_cluster(tmp_path: Path) -> None:
    server = _server(tmp_path, port=19111, controller_port=19112)
    props = dict(line.split("=", 1) for line in server.render_properties().splitlines() if not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19111,CONTROLLER://127.0.0.1:19112"
    assert props["advertised.listeners"] == props["listeners"]
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19112"
    assert props["log.dirs"] == str(server.data_dir)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert server.bootstrap_servers == "127.0.0.1:19111"


def test_log4j2_config_writes_server_log_into_the_logs_dir(tmp_path: Path) -> None:
    text = _server(tmp_path).render_log4j2()
    assert "appender.file.fileName = ${sys:kafka.logs.dir}/server.log" in text
    assert "rootLogger.level = INFO" in text
    assert "logger.request.level = WARN" in text


def test_the_broker_jvm_compiles_quickly_unless_told_otherwise(tmp_path: Path) -> None:
    assert "-XX:TieredStopAtLevel=1" in _server(tmp_path)._jvm_options()
    settings = Settings(state_dir=tmp_path, stack={"kafka_jvm_options": ["-XX:+UseCompressedOops"]})
    options = KafkaServer.from_settings(settings)._jvm_options()
    assert "-XX:+UseCompressedOops" in options
    assert "-XX:TieredStopAtLevel=1" not in options


def test_layout_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KAFKA_LIB_ENV, raising=False)
    server = _server(tmp_path, version="4.0.0")
    state = (tmp_path / "state").absolute()
    assert server.home == state / "kafka" / "4.0.0"
    assert server.lib_dir == state / "cache" / "kafka-4.0.0" / "lib"
    assert server.log_file == server.home / "logs" / "server.log"


def test_lib_dir_comes_from_the_parameter_then_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KAFKA_LIB_ENV, str(tmp_path / "from-env"))
    assert _server(tmp_path).lib_dir == tmp_path / "from-env"
    assert _server(tmp_path, lib_dir=tmp_path / "given").lib_dir == tmp_path / "given"


def test_pom_names_each_artifact_in_order() -> None:
    pom = render_pom([Artifact("org.apache.kafka", "kafka_2.13", "4.1.1"), Artifact("g", "a<b", "1")])
    assert re.search(r"kafka_2\.13</artifactId><version>4\.1\.1</version>.*a&lt;b", pom, re.S)


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cid) for cid in ids)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "25" 2025-09-16 LTS', 25),
        ('openjdk version "21-ea" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_version_parsing(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heap": "lots"}, "not a JVM size"),
        ({"version": "3.7.0"}, "use 3.9.x or 4.x"),
        ({"version": "latest"}, "MAJOR.MINOR.PATCH"),
        ({"port": 39092, "controller_port": 39092}, "both 39092"),  # refused before any port is used
    ],
)
def test_bad_server_options_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StackError, match=message):
        _server(tmp_path, **kwargs)


# -- Java -------------------------------------------------------------------------------


def test_missing_java_says_what_to_install(bare_path: Path) -> None:
    with pytest.raises(StackError, match=r"java is not on PATH.*Java 17\+.*openjdk-17"):
        find_java(minimum=17, purpose="Kafka 4.1.1")


def test_old_java_is_refused(bare_path: Path) -> None:
    _script(bare_path / "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    with pytest.raises(StackError, match=r"Kafka 4\.1\.1 needs Java 17\+, but .* is Java 11"):
        find_java(minimum=17, purpose="Kafka 4.1.1")


def test_java_home_without_java_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="has no bin/java"):
        find_java(tmp_path, minimum=17, purpose="Kafka")


def test_java_home_wins_over_path(bare_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    _script(home / "bin" / "java", "echo 'openjdk version \"25\" 2025-09-16' >&2\n")
    _script(bare_path / "java", "echo 'openjdk version \"11.0.22\"' >&2\n")
    runtime = find_java(home, minimum=17, purpose="Kafka")
    assert runtime.major == 25
    assert runtime.executable == home / "bin" / "java"


def test_start_without_java_fails_before_spawning(bare_path: Path, tmp_path: Path) -> None:
    server = _server(tmp_path, port=0, controller_port=1)
    with pytest.raises(StackError, match="java is not on PATH"):
        server.start()
    assert not server.pid_file.exists()


# -- fetching -----------------------------------------------------------------------------


def test_fetch_without_mvn_points_at_the_jar_override(bare_path: Path, tmp_path: Path) -> None:
    with pytest.raises(StackError, match=rf"mvn .* not on PATH.*{KAFKA_LIB_ENV}"):
        _server(tmp_path).fetch()


def test_fetch_runs_mvn_once_and_keeps_the_pom(fake_mvn: Path, tmp_path: Path) -> None:
    server = _server(tmp_path)
    assert not server.fetched
    assert server.fetch() == server.lib_dir
    assert server.fetched
    assert server.fetch() == server.lib_dir
    runs = fake_mvn.read_text().splitlines()
    assert len(runs) == 1
    assert "dependency:copy-dependencies" in runs[0]
    assert "-DincludeScope=runtime" in runs[0]
    pom = (server.lib_dir / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom
    assert "log4j-slf4j-impl" in pom  # Kafka names no slf4j binding: without it, no broker log
    assert [p.name for p in server.lib_dir.parent.iterdir()] == ["lib"]  # no staging left behind


def test_fetch_reports_what_mvn_said(bare_path: Path, tmp_path: Path) -> None:
    _script(bare_path / "mvn", "echo '[ERROR] Could not resolve org.apache.kafka:kafka_2.13:9.9.9'\nexit 1\n")
    with pytest.raises(StackError, match=r"(?s)exit 1.*Could not resolve org\.apache\.kafka:kafka_2\.13:9\.9\.9"):
        _server(tmp_path).fetch()


def test_fetch_refuses_a_lib_dir_holding_something_else(fake_mvn: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "other.jar").touch()
    with pytest.raises(StackError, match=r"holds files but not kafka_2\.13-4\.1\.1\.jar"):
        _server(tmp_path, lib_dir=lib).fetch()


def test_fetch_fills_an_empty_lib_dir_from_the_environment(
    fake_mvn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "shared-lib"
    lib.mkdir()
    monkeypatch.setenv(KAFKA_LIB_ENV, str(lib))
    _server(tmp_path).fetch()
    assert (lib / "kafka_2.13-4.1.1.jar").is_file()


def test_module_fetch_command_reports_the_cache(
    fake_mvn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack_main.main(["fetch", "--state-dir", str(tmp_path / "s")]) == 0
    assert stack_main.main(["fetch", "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "fetched in" in out[0]
    assert "already there" in out[1]
    assert str(tmp_path / "s" / "cache" / "kafka-4.1.1" / "lib") in out[1]


def _fake_broker(bare_path: Path, tmp_path: Path, behaviour: str) -> KafkaServer:
    """A server whose jars and storage exist and whose ``java`` runs ``behaviour`` for kafka.Kafka."""
    _script(
        bare_path / "java",
        'if [ "$1" = -version ]; then echo \'openjdk version "17.0.9"\' >&2; exit 0; fi\n' + behaviour,
    )
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "kafka_2.13-4.1.1.jar").touch()
    (lib / "kafka-clients-4.1.1.jar").touch()
    server = _server(tmp_path, lib_dir=lib)
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "meta.properties").touch()  # formatted already
    return server


def test_a_broker_that_exits_at_start_is_reported_with_its_output(bare_path: Path, tmp_path: Path) -> None:
    server = _fake_broker(bare_path, tmp_path, "echo 'Error: could not reserve enough space'\nexit 1\n")
    with pytest.raises(StackError, match=r"(?s)exited while starting.*could not reserve enough space"):
        server.start(timeout=10)
    assert not server.pid_file.exists()


def test_a_broker_that_never_answers_is_stopped_after_the_timeout(bare_path: Path, tmp_path: Path) -> None:
    # Stays up (its command line names kafka.Kafka and the properties file) but never listens.
    server = _fake_broker(bare_path, tmp_path, "echo waiting\nwhile :; do sleep 0.1; done\n")
    started = time.monotonic()
    with pytest.raises(StackError, match=r"(?s)not ready within 2s.*it was stopped.*waiting"):
        server.start(timeout=2)
    assert time.monotonic() - started < 15
    assert not server.running
    assert not server.pid_file.exists()
    assert server.properties_file.read_text().startswith("# Written by inferstream")


# -- processes and ports ------------------------------------------------------------------


def test_taken_port_is_named_before_anything_starts(bare_path: Path, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        server = _server(tmp_path, port=port, controller_port=port + 1 if port < 65535 else port - 1)
        with pytest.raises(StackError, match=rf"Kafka port 127\.0\.0\.1:{port} is taken.*KAFKA_PORT"):
            server.start()
    assert not port_in_use("127.0.0.1", port)


def test_stale_pid_file_is_not_taken_for_a_running_broker(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.home.mkdir(parents=True)
    server.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not this broker
    assert not server.running
    status = server.status()
    assert status.running is False
    assert status.pid is None
    assert server.stop() is False
    assert not server.pid_file.exists()


def _wait_for_line(log: Path, line: str) -> None:
    deadline = time.monotonic() + 10
    while tail(log) != line:
        assert time.monotonic() < deadline, f"{log} never said {line!r}"
        time.sleep(0.01)


def test_detached_process_lifecycle(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    pid = spawn_detached(["/bin/sh", "-c", "echo hello; exec sleep 30"], log_file=log)
    _wait_for_line(log, "hello")
    assert os.getpgid(pid) == pid  # its own session and group
    assert process_alive(pid, cmdline_contains=("sleep", "30"))
    assert not process_alive(pid, cmdline_contains=("kafka.Kafka",))
    assert terminate(pid, timeout=10) is False  # SIGTERM was enough
    assert not process_alive(pid)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    pid = spawn_detached(["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"], log_file=log)
    _wait_for_line(log, "ready")
    assert terminate(pid, timeout=0.5) is True
    assert not process_alive(pid)


def test_tail_reads_only_what_came_after_the_mark(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("old 1\nold 2\n")
    mark = log.stat().st_size
    with log.open("a") as handle:
        handle.write("new 1\nnew 2\nnew 3\n")
    assert tail(log, 2, since=mark) == "new 2\nnew 3"
    assert tail(log, 10, since=mark) == "new 1\nnew 2\nnew 3"
    assert tail(tmp_path / "missing") == ""


# -- CLI ----------------------------------------------------------------------------------


def test_cli_status_and_down_when_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferstream.cli import app

    monkeypatch.setenv("INFERSTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("INFERSTREAM_STACK__KAFKA_PORT", "39192")
    runner = CliRunner()
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 3, status.output
    assert "stopped" in status.stdout
    assert "127.0.0.1:39192" in status.stdout
    down = runner.invoke(app, ["down"])
    assert down.exit_code == 0, down.output
    assert "was not running" in down.output
