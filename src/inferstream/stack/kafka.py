"""A single-node Kafka (KRaft, broker and controller in one JVM) run from Maven jars.

>>> server = KafkaServer(Path(".inferstream"), port=9092, controller_port=9093)
>>> server.start()            # fetches the jars once, formats storage once
>>> server.bootstrap_servers
'127.0.0.1:9092'
>>> server.stop()

A server is identified by its home directory (``<state_dir>/kafka/<version>``):
another ``KafkaServer`` on the same state directory, in this process or another,
sees the same pid file and can stop what the first one started.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from inferstream.config import QUICK_JIT, min_insync_for
from inferstream.errors import StackError
from inferstream.stack import maven
from inferstream.stack.java import JavaRuntime, find_java
from inferstream.stack.process import port_accepts
from inferstream.stack.server import LOG_LINES, LocalCluster, LocalServer, ServerStatus, node_ports

if TYPE_CHECKING:
    from inferstream.config import Settings

KAFKA_LIB_ENV = "INFERSTREAM_KAFKA_LIB"
"""Environment variable naming a directory of Kafka jars to use (fetched into if empty)."""

SCALA_VERSION = "2.13"
# Kafka's artifacts name slf4j 1.7 but no binding; this routes its logs into log4j2.
LOG4J_SLF4J_BINDING = maven.Artifact("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")

_LOG4J2 = """\
# Written by inferstream: the broker logs to {logs_dir}/server.log.
status = warn
name = inferstream-kafka
# Kafka's own shutdown hook stops the broker; log4j's would race it and warn.
shutdownHook = disable

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.file.filePattern = ${{sys:kafka.logs.dir}}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file

# Per-request and per-partition chatter: warnings only.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


@dataclass(frozen=True, slots=True)
class KafkaStatus(ServerStatus):
    """What ``inferstream status`` reports about one local broker."""

    bootstrap_servers: str
    lib_dir: Path


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in unpadded URL-safe base64, as Kafka makes them."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka's tools refuse ids that read as options
            return cluster_id


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """Where a broker stands in a local cluster: its id, the voters, the replication, its own folder."""

    node_id: int
    #: (node id, controller port) of every voter of the quorum.
    voters: tuple[tuple[int, int], ...]
    home: Path
    #: The file holding the cluster's id, shared by its nodes (written by the first start).
    cluster_id_file: Path = field(compare=False)

    @property
    def replication(self) -> int:
        """The replication factor of the internal topics: every broker, up to three."""
        return min(len(self.voters), 3)

    @property
    def min_insync(self) -> int:
        """Replicas that acknowledge a write: two of three, so one broker can be lost."""
        return min_insync_for(self.replication)

    def cluster_id(self) -> str:
        """The cluster's id (made by the first node formatted)."""
        try:
            return self.cluster_id_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise StackError(f"{self.cluster_id_file} is missing: start the cluster as a whole") from None


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    if not head.isdigit():
        raise StackError(f"Kafka version {version!r} is not of the form MAJOR.MINOR.PATCH (e.g. 4.1.1)")
    return int(head)


def _options_of(settings: Settings) -> dict[str, Any]:
    """What a local broker takes from the settings, but its heap (one broker's and a cluster's differ)."""
    stack = settings.stack
    return {
        "port": stack.kafka_port,
        "controller_port": stack.controller_port,
        "version": stack.kafka_version,
        "java_home": stack.java_home,
        "jvm_options": stack.kafka_jvm_options,
    }


class KafkaServer(LocalServer[KafkaStatus]):
    """One local Kafka broker+controller: fetch its jars, format, start, probe, stop.

    ``lib_dir`` (else ``$INFERSTREAM_KAFKA_LIB``, else ``<state_dir>/cache/kafka-<version>/lib``)
    holds the jars; servers of the same version can share it.
    """

    product = "Kafka"
    heap_setting = "stack.kafka_heap"

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = "4.1.1",
        heap: str = "512m",
        java_home: Path | None = None,
        lib_dir: Path | None = None,
        host: str = "127.0.0.1",
        jvm_options: Sequence[str] = QUICK_JIT,
        node: ClusterNode | None = None,
    ) -> None:
        if _major(version) < 4 and version.split(".")[:2] != ["3", "9"]:
            raise StackError(
                f"Kafka {version} is not supported by the local stack; use 3.9.x or 4.x (stack.kafka_version)"
            )
        self.controller_port = controller_port
        self.jvm_options = tuple(jvm_options)
        self.node = node
        super().__init__(
            state_dir,
            "kafka",
            port=port,
            version=version,
            heap=heap,
            java_home=java_home,
            host=host,
            home=node.home if node is not None else None,
        )
        env_lib = os.environ.get(KAFKA_LIB_ENV)
        if lib_dir is not None:
            self.lib_dir = Path(lib_dir).absolute()
        elif env_lib:
            self.lib_dir = Path(env_lib).absolute()
        else:
            self.lib_dir = self.state_dir / "cache" / f"kafka-{version}" / "lib"

    @classmethod
    def from_settings(cls, settings: Settings, *, lib_dir: Path | None = None) -> KafkaServer:
        """The server ``inferstream up`` runs for these settings."""
        return cls(settings.state_dir, **_options_of(settings), heap=settings.stack.kafka_heap, lib_dir=lib_dir)

    # -- where things are ---------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2)."""
        return self.logs_dir / "server.log"

    @property
    def out_file(self) -> Path:
        """The JVM's stdout and stderr (start-up failures land here)."""
        return self.logs_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        """Holds the broker's pid while it runs."""
        return self.home / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        """The ``server.properties`` written for this server."""
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        """The log4j2 configuration written for this server."""
        return self.home / "log4j2.properties"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where clients reach it: the bootstrap servers."""
        return self.bootstrap_servers

    @property
    def fetched(self) -> bool:
        """Whether ``lib_dir`` holds this version's jars."""
        return (self.lib_dir / f"kafka_{SCALA_VERSION}-{self.version}.jar").is_file() and (
            self.lib_dir / f"kafka-clients-{self.version}.jar"
        ).is_file()

    # -- rendering ------------------------------------------------------------------------

    def render_properties(self) -> str:
        """The ``server.properties`` of a single-node KRaft cluster on loopback (or of one node of a cluster)."""
        broker = f"{self.host}:{self.port}"
        controller = f"{self.host}:{self.controller_port}"
        node = self.node
        replicas = "1" if node is None else str(node.replication)
        min_isr = "1" if node is None else str(node.min_insync)
        quorum = (
            {"controller.quorum.bootstrap.servers": controller}
            if node is None
            # A fixed voter set: the three nodes are known before any starts.
            else {"controller.quorum.voters": ",".join(f"{i}@{self.host}:{p}" for i, p in node.voters)}
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": "1" if node is None else str(node.node_id),
            **quorum,
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # A cluster's defaults for topics made without a replication factor (the platform's
            # own pick theirs from the cluster's size, the same numbers: connectors/kafka/admin.py).
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "1",
            # A transaction left open by a killed producer holds read_committed readers and its
            # group's offsets until it is aborted: look for timed-out ones every second, not 10 s.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Consumers in tests join at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created on purpose (inferstream topics create), never by a typo.
            "auto.create.topics.enable": "false",
            # The log cleaner (compacted topics: control, consumer offsets) allocates its whole
            # dedupe buffer on the heap at start; 16 MiB holds ~650k keys a pass, far more than
            # a local broker's compacted topics carry, and saves ~85 MB resident (128 MiB default).
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        lines = ["# Written by inferstream on every start; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def render_log4j2(self) -> str:
        """The log4j2 configuration: INFO to ``logs/server.log``, chatty loggers at WARN."""
        return _LOG4J2.format(logs_dir=self.logs_dir)

    def _artifacts(self) -> list[maven.Artifact]:
        kafka = maven.Artifact("org.apache.kafka", f"kafka_{SCALA_VERSION}", self.version)
        # Kafka first: on a version clash its log4j-core wins over the binding's.
        return [kafka, LOG4J_SLF4J_BINDING] if _major(self.version) >= 4 else [kafka]

    # -- lifecycle ------------------------------------------------------------------------

    def fetch(self, *, timeout: float = 900.0) -> Path:
        """Resolve the jars into ``lib_dir`` with ``mvn`` unless they are there; returns ``lib_dir``."""
        if self.fetched:
            return self.lib_dir
        if self.lib_dir.is_dir() and any(self.lib_dir.iterdir()):
            raise StackError(
                f"{self.lib_dir} holds files but not kafka_{SCALA_VERSION}-{self.version}.jar and "
                f"kafka-clients-{self.version}.jar; remove it (or point {KAFKA_LIB_ENV} elsewhere) "
                "and fetch again"
            )
        maven.copy_dependencies(
            self._artifacts(),
            self.lib_dir,
            artifact_id=f"kafka-{self.version}",
            timeout=timeout,
        )
        return self.lib_dir

    def java(self) -> JavaRuntime:
        """The Java runtime this server runs on (Kafka 4.x needs 17+, 3.9 needs 11+)."""
        minimum = 17 if _major(self.version) >= 4 else 11
        return find_java(self.java_home, minimum=minimum, purpose=f"Kafka {self.version}")

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> KafkaStatus:
        """Start the broker unless it runs; with ``wait``, return once it serves metadata.

        Fetches the jars and formats storage first when needed. Raises
        :class:`StackError` when the ports are taken, Java is missing or too old,
        or the broker exits or is not ready within ``timeout`` seconds (the
        message carries the tail of its log).
        """
        return self._start(wait=wait, timeout=timeout)

    # -- internals ------------------------------------------------------------------------

    def _ports(self) -> list[tuple[str, int, str]]:
        if self.node is not None and self.node.node_id > 1:
            derived = (
                f"INFERSTREAM_STACK__KAFKA_PORT or INFERSTREAM_STACK__CONTROLLER_PORT "
                f"(node {self.node.node_id}'s ports are derived from the larger of the two)"
            )
            return [
                (f"Kafka (node {self.node.node_id})", self.port, derived),
                (f"controller (node {self.node.node_id})", self.controller_port, derived),
            ]
        return [
            ("Kafka", self.port, "INFERSTREAM_STACK__KAFKA_PORT"),
            ("controller", self.controller_port, "INFERSTREAM_STACK__CONTROLLER_PORT"),
        ]

    def _launch(self, java: JavaRuntime) -> int:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self.render_properties(), encoding="utf-8")
        self.log4j_file.write_text(self.render_log4j2(), encoding="utf-8")
        if not (self.data_dir / "meta.properties").is_file():
            self._format(java)
        argv = [
            str(java.executable),
            *self._jvm_options(),
            "-cp",
            str(self.lib_dir / "*"),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        return self._spawn(argv)

    def _status(self, common: ServerStatus) -> KafkaStatus:
        fields = self._status_fields(common)
        return KafkaStatus(**fields, bootstrap_servers=self.bootstrap_servers, lib_dir=self.lib_dir)

    def _signature(self) -> tuple[str, ...]:
        # What the broker's command line holds, so a reused pid is not taken for it.
        return ("kafka.Kafka", str(self.properties_file))

    def _jvm_options(self) -> list[str]:
        return [
            "-Xms64m",  # grows as needed up to -Xmx: an idle single-node broker keeps a small footprint
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            *self.jvm_options,
            "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={self.logs_dir}/hs_err_pid%p.log",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
        ]

    def _format(self, java: JavaRuntime) -> None:
        command = [
            str(java.executable),
            "-Xmx256m",
            # No log4j2 file: its default prints errors only, to the output captured here.
            "-cp",
            str(self.lib_dir / "*"),
            "kafka.tools.StorageTool",
            "format",
            # A single node bootstraps a quorum of itself; a cluster's nodes share its fixed voters and id.
            *(["--standalone"] if self.node is None else []),
            "--cluster-id",
            new_cluster_id() if self.node is None else self.node.cluster_id(),
            "--config",
            str(self.properties_file),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed: {exc}") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise StackError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {result.returncode}); "
                f"remove {self.data_dir} if it is left over from another setup. StorageTool said:\n"
                + "\n".join(output.splitlines()[-LOG_LINES:])
            )

    def _probe(self, remaining: float) -> str | None:
        if not port_accepts(self.host, self.port):
            return "the port never accepted a connection"
        return _metadata_error(self.bootstrap_servers, timeout=remaining)


def _metadata_error(bootstrap_servers: str, *, timeout: float) -> str | None:
    """None when the cluster answers a metadata request with a registered broker, else why not."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "client.id": "inferstream-stack-probe"})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return f"metadata request failed: {exc}"
    if not metadata.brokers:
        return "the cluster answered with no registered broker yet"
    return None


class KafkaCluster(LocalCluster[KafkaServer]):
    """A local KRaft cluster of several brokers on this machine (``inferstream up --brokers 3``).

    Every node is broker and controller in one JVM (combined mode), and every node is a
    voter of the quorum. Separate controllers would cost one JVM more each (a quorum that
    survives a lost controller needs three), and on one machine they protect nothing a
    combined node does not: kill -9 of any one node leaves two voters, a majority, so
    the quorum elects a new leader while the partitions it led move to their followers.

    Node 1 listens on the configured ports (``stack.kafka_port``, ``stack.controller_port``);
    the others on pairs derived above both (:func:`inferstream.stack.server.node_ports`),
    all checked free before any node starts. The internal topics (consumer offsets,
    transaction state) have replication factor 3 with ``min.insync.replicas`` 2, and so do
    the topics the platform creates (their replication is picked from the cluster's size).
    Each node has a folder of its own::

        kafka/<version>/cluster-<n>/cluster.id
        kafka/<version>/cluster-<n>/node-<id>/   server.properties, data/, logs/, kafka.pid
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        brokers: int = 3,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = "4.1.1",
        heap: str = "320m",
        host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        """``options`` go to every node's :class:`KafkaServer` (``java_home``, ``lib_dir``, ``jvm_options``)."""
        pairs = node_ports(
            port,
            controller_port,
            brokers,
            what="Kafka",
            settings="INFERSTREAM_STACK__KAFKA_PORT and INFERSTREAM_STACK__CONTROLLER_PORT",
            single="`inferstream up`",
        )
        home = Path(state_dir).absolute() / "kafka" / version / f"cluster-{brokers}"
        voters = tuple((i, controller) for i, (_, controller) in enumerate(pairs, start=1))
        nodes = [
            KafkaServer(
                state_dir,
                port=client,
                controller_port=controller,
                version=version,
                heap=heap,
                host=host,
                **options,
                node=ClusterNode(i, voters, home / f"node-{i}", home / "cluster.id"),
            )
            for i, (client, controller) in enumerate(pairs, start=1)
        ]
        super().__init__(nodes, home)

    @classmethod
    def from_settings(cls, settings: Settings, brokers: int, *, lib_dir: Path | None = None) -> KafkaCluster:
        """The cluster ``inferstream up --brokers N`` runs for these settings."""
        options = _options_of(settings)
        return cls(
            settings.state_dir, brokers=brokers, **options, heap=settings.stack.cluster_kafka_heap, lib_dir=lib_dir
        )

    @staticmethod
    def sizes(settings: Settings) -> list[int]:
        """Broker counts of the clusters that have a folder under the state directory (for down/status)."""
        return LocalCluster.sizes_under(settings.state_dir.absolute() / "kafka" / settings.stack.kafka_version)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's ``host:port``: clients reach the cluster through whichever answers."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> KafkaServer:
        """The node of this broker id."""
        return self.nodes[node_id - 1]

    def _prepare(self) -> None:
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.is_file():
            self.home.mkdir(parents=True, exist_ok=True)
            cluster_id_file.write_text(new_cluster_id() + "\n", encoding="utf-8")

    def _formed(self, remaining: float) -> str | None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "client.id": "inferstream-stack-probe"})
        try:
            metadata = admin.list_topics(timeout=remaining)
        except KafkaException as exc:
            return f"metadata request failed: {exc}"
        if len(metadata.brokers) < len(self.nodes):
            return f"{len(metadata.brokers)} of {len(self.nodes)} brokers registered"
        return None
