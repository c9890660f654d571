"""A single-node Elasticsearch run from the minimal distribution on Maven Central.

>>> server = ElasticsearchServer(Path(".inferstream"), port=9200)
>>> server.start()            # fetches and unpacks the distribution once
>>> server.url
'http://127.0.0.1:9200'
>>> server.stop()

The distribution is ``org.elasticsearch.distribution.integ-test-zip:elasticsearch``
(packaging zip): the server, its transport and x-pack core/security modules, no
JDK, no language analyzers (``standard`` works), no rank or ingest modules. It
runs on Java 21+ (Elasticsearch 9), found through ``java_home``, ``ES_JAVA_HOME``,
``JAVA_HOME``, the JDKs in ``/usr/lib/jvm`` and ``PATH``, newest first.

It is configured as a single node on 127.0.0.1 with security off, an explicit heap
(512m by default) and the disk watermarks off (small CI disks). Elasticsearch
refuses to run as root: as root it runs as ``user`` (a system user created on
first use) through ``runuser``, and that user owns the server's home.

Layout under the state directory::

    cache/elasticsearch-<version>/elasticsearch-<version>/   the unpacked distribution (shared)
    elasticsearch/<version>/                                 one server
        config/    elasticsearch.yml, jvm.options, log4j2.properties (rewritten on every start)
        data/ logs/ tmp/
        elasticsearch.out   the launcher's stdout/stderr
        elasticsearch.pid

Readiness is ``GET /_cluster/health?wait_for_status=yellow`` (the minimal
distribution may not answer ``GET /``).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstream.errors import StackError
from inferstream.stack import maven
from inferstream.stack.java import JavaRuntime, find_java
from inferstream.stack.server import LocalCluster, LocalServer, ServerStatus, node_ports

if TYPE_CHECKING:
    from inferstream.config import Settings

GROUP = "org.elasticsearch.distribution.integ-test-zip"
MINIMUM_JAVA = 21
_JVM_DIR = Path("/usr/lib/jvm")


@dataclass(frozen=True, slots=True)
class ElasticsearchStatus(ServerStatus):
    """What ``inferstream status`` reports about the local Elasticsearch."""

    url: str


def find_java_21(java_home: Path | None = None) -> JavaRuntime:
    """A Java 21+ runtime for Elasticsearch 9; the default ``java`` is often 17."""
    if java_home is not None:
        return find_java(java_home, minimum=MINIMUM_JAVA, purpose="Elasticsearch 9")
    candidates: list[Path] = [Path(os.environ[name]) for name in ("ES_JAVA_HOME", "JAVA_HOME") if os.environ.get(name)]
    if _JVM_DIR.is_dir():
        # Newest first: directory names carry the feature release (temurin-25-jdk-amd64, java-21-openjdk-amd64).
        def release(path: Path) -> int:
            found = re.search(r"(\d+)", path.name)
            return int(found.group(1)) if found else 0

        installed = [p for p in _JVM_DIR.iterdir() if (p / "bin" / "java").is_file()]
        candidates += sorted(installed, key=release, reverse=True)
    for home in candidates:
        try:
            return find_java(home, minimum=MINIMUM_JAVA, purpose="Elasticsearch 9")
        except StackError:
            continue
    found = shutil.which("java")
    if found is not None:
        try:
            return find_java(Path(found).resolve().parent.parent, minimum=MINIMUM_JAVA, purpose="Elasticsearch 9")
        except StackError:
            pass
    raise StackError(
        "Elasticsearch 9 needs Java 21+ and none was found (ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, PATH); "
        "install one (e.g. `apt-get install openjdk-21-jre-headless`) or set "
        "INFERSTREAM_ELASTICSEARCH__LOCAL__JAVA_HOME"
    )


def _unzip(archive: Path, dest: Path) -> None:
    """Unpack keeping the executable bits (``zipfile`` alone drops them)."""
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            target = Path(zipped.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)


@dataclass(frozen=True, slots=True)
class SearchNode:
    """Where a node stands in a local Elasticsearch cluster: its name, its peers, its own folder."""

    index: int
    #: Every node's name, in order (node *k* is ``names[k-1]``).
    names: tuple[str, ...]
    #: Every node's transport port: the seed hosts each node looks for its peers on.
    transport_ports: tuple[int, ...]
    cluster_name: str
    home: Path

    @property
    def name(self) -> str:
        """This node's name (``node.name``)."""
        return self.names[self.index - 1]


def _options_of(settings: Settings) -> dict[str, Any]:
    """What a local Elasticsearch node takes from the settings."""
    local = settings.elasticsearch.local
    return {
        "port": local.port,
        "transport_port": local.transport_port,
        "version": local.version,
        "heap": local.heap,
        "java_home": local.java_home,
        "user": local.user,
    }


class ElasticsearchServer(LocalServer[ElasticsearchStatus]):
    """One local Elasticsearch node: fetch, configure, start, probe, stop."""

    product = "Elasticsearch"
    heap_setting = "elasticsearch.local.heap"
    stop_timeout = 60.0
    poll_s = 0.5

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 9200,
        transport_port: int = 9300,
        version: str = "9.3.2",
        heap: str = "512m",
        java_home: Path | None = None,
        user: str = "inferstream-es",
        cache_dir: Path | None = None,
        host: str = "127.0.0.1",
        node: SearchNode | None = None,
    ) -> None:
        self.transport_port = transport_port
        self.user = user
        self.node = node
        super().__init__(
            state_dir,
            "elasticsearch",
            port=port,
            version=version,
            heap=heap,
            java_home=java_home,
            host=host,
            home=node.home if node is not None else None,
        )
        default_cache = self.state_dir / "cache" / f"elasticsearch-{version}"
        self.cache_dir = Path(cache_dir).absolute() if cache_dir else default_cache

    @classmethod
    def from_settings(cls, settings: Settings, *, cache_dir: Path | None = None) -> ElasticsearchServer:
        """The server ``inferstream up --with-elasticsearch`` runs for these settings."""
        return cls(settings.state_dir, **_options_of(settings), cache_dir=cache_dir)

    # -- where things are ---------------------------------------------------------------

    @property
    def dist_dir(self) -> Path:
        """The unpacked distribution in the cache."""
        return self.cache_dir / f"elasticsearch-{self.version}"

    @property
    def config_dir(self) -> Path:
        """``ES_PATH_CONF``: the configuration written for this server."""
        return self.home / "config"

    @property
    def log_file(self) -> Path:
        """The server's main log."""
        return self.logs_dir / "inferstream.log"

    @property
    def out_file(self) -> Path:
        """The launcher's stdout and stderr (start-up failures land here)."""
        return self.home / "elasticsearch.out"

    @property
    def pid_file(self) -> Path:
        """Holds the launcher's pid while it runs."""
        return self.home / "elasticsearch.pid"

    @property
    def url(self) -> str:
        """The HTTP endpoint for clients."""
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where clients reach it: the HTTP URL."""
        return self.url

    @property
    def fetched(self) -> bool:
        """Whether the distribution is unpacked in the cache."""
        return (self.dist_dir / "bin" / "elasticsearch").is_file() and (self.dist_dir / "lib").is_dir()

    @property
    def as_root(self) -> bool:
        """Whether the server must run as another user (this process is root)."""
        return os.geteuid() == 0

    def render_config(self) -> str:
        """``elasticsearch.yml`` of a single node (or of a cluster's node) on loopback, security and watermarks off."""
        node = self.node
        discovery: dict[str, Any] = (
            {"discovery.type": "single-node"}
            if node is None
            else {
                "discovery.seed_hosts": [f"{self.host}:{port}" for port in node.transport_ports],
                # Read only when the cluster first forms; every node is master-eligible.
                "cluster.initial_master_nodes": list(node.names),
            }
        )
        settings: dict[str, Any] = {
            "cluster.name": "inferstream" if node is None else node.cluster_name,
            "node.name": "inferstream-1" if node is None else node.name,
            "path.logs": str(self.logs_dir),
            "network.host": self.host,
            "http.port": str(self.port),
            "transport.port": str(self.transport_port),
            **discovery,
            "xpack.security.enabled": "false",
            # Small CI disks would otherwise turn indices read-only at 95% use.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "action.destructive_requires_name": "false",
        }
        lines = ["# Written by inferstream on every start; edits are overwritten."]
        lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    # -- lifecycle ------------------------------------------------------------------------

    def fetch(self, *, timeout: float = 900.0) -> Path:
        """Fetch the zip with ``mvn`` and unpack it into the cache unless it is there; returns it."""
        if self.fetched:
            return self.dist_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        artifact = maven.Artifact(GROUP, "elasticsearch", self.version)
        staging = self.cache_dir / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            archive = maven.copy_artifact(artifact, "zip", staging, timeout=timeout)
            _unzip(archive, staging)
            unpacked = staging / f"elasticsearch-{self.version}"
            if not (unpacked / "bin" / "elasticsearch").is_file():
                raise StackError(f"{archive} holds no elasticsearch-{self.version}/bin/elasticsearch")
            try:
                os.replace(unpacked, self.dist_dir)
            except OSError:
                if not self.fetched:  # another process may have put a complete one there first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # The server runs as another user when this is root: it must read the distribution.
        for path in (self.cache_dir, self.dist_dir):
            path.chmod(0o755)
        return self.dist_dir

    def java(self) -> JavaRuntime:
        """The Java runtime the server runs on (21+)."""
        return find_java_21(self.java_home)

    def start(self, *, wait: bool = True, timeout: float = 120.0) -> ElasticsearchStatus:
        """Start the server unless it runs; with ``wait``, return once the cluster is yellow.

        Raises :class:`StackError` when a port is taken, Java 21+ is missing, or the
        server exits or is not ready within ``timeout`` (with the tail of its logs).
        """
        return self._start(wait=wait, timeout=timeout)

    def health(self, *, wait_s: float = 1.0) -> str | None:
        """The cluster status (green/yellow/red) once it is at least yellow within ``wait_s``, else None."""
        url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout={max(int(wait_s), 1)}s"
        try:
            with urllib.request.urlopen(url, timeout=wait_s + 5) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        if body.get("timed_out"):
            return None
        return str(body.get("status"))

    # -- internals ------------------------------------------------------------------------

    def _ports(self) -> list[tuple[str, int, str]]:
        if self.node is not None and self.node.index > 1:
            derived = (
                "INFERSTREAM_ELASTICSEARCH__LOCAL__PORT or INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT "
                f"(node {self.node.index}'s ports are derived from the larger of the two)"
            )
            return [
                (f"Elasticsearch HTTP (node {self.node.index})", self.port, derived),
                (f"Elasticsearch transport (node {self.node.index})", self.transport_port, derived),
            ]
        return [
            ("Elasticsearch HTTP", self.port, "INFERSTREAM_ELASTICSEARCH__LOCAL__PORT"),
            ("Elasticsearch transport", self.transport_port, "INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT"),
        ]

    def _launch(self, java: JavaRuntime) -> int:
        self._write_config()
        env = {
            "ES_JAVA_HOME": str(java.executable.parent.parent),
            "ES_PATH_CONF": str(self.config_dir),
            "ES_TMPDIR": str(self.home / "tmp"),
            "ES_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}",
        }
        dist = self._prepare_user() if self.as_root else self.dist_dir
        launcher = [str(dist / "bin" / "elasticsearch"), f"-Epath.data={self.data_dir}"]
        if self.as_root:
            argv = [
                _which("runuser"),
                "-u",
                self.user,
                "--",
                _which("env"),
                *(f"{k}={v}" for k, v in env.items()),
                *launcher,
            ]
            process_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            argv = launcher
            process_env = {**os.environ, **env}
        return self._spawn(argv, env=process_env)

    def _status(self, common: ServerStatus) -> ElasticsearchStatus:
        return ElasticsearchStatus(**self._status_fields(common), url=self.url)

    def _signature(self) -> tuple[str, ...]:
        # The data path is on the launcher's command line (and runuser's): unique per server.
        return (f"-Epath.data={self.data_dir}",)

    def _write_config(self) -> None:
        for directory in (self.config_dir, self.data_dir, self.logs_dir, self.home / "tmp"):
            directory.mkdir(parents=True, exist_ok=True)
        source = self.dist_dir / "config"
        for name in ("jvm.options", "log4j2.properties"):
            shutil.copyfile(source / name, self.config_dir / name)
        (self.config_dir / "jvm.options.d").mkdir(exist_ok=True)
        (self.config_dir / "elasticsearch.yml").write_text(self.render_config(), encoding="utf-8")

    def _prepare_user(self) -> Path:
        """Create the user if needed, give it the home; returns a distribution it can read."""
        try:
            account = pwd.getpwnam(self.user)
        except KeyError:
            useradd = _which("useradd")
            result = subprocess.run(
                [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.user],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 and "already exists" not in result.stderr:
                raise StackError(
                    f"Elasticsearch refuses to run as root and the user {self.user!r} could not be created: "
                    f"{result.stderr.strip()} (create it, or set INFERSTREAM_ELASTICSEARCH__LOCAL__USER)"
                ) from None
            account = pwd.getpwnam(self.user)
        if not self._reachable(self.home):
            raise StackError(
                f"Elasticsearch runs as {self.user!r} (it refuses root), and that user cannot reach {self.home}: "
                "a folder above it is private. Put the state directory somewhere every user can "
                "traverse (INFERSTREAM_STATE_DIR), or run as a user other than root"
            )
        dist = self.dist_dir
        if not self._reachable(dist / "bin" / "elasticsearch"):
            # The shared cache lies in a private folder: the server gets its own copy.
            dist = self.home / "dist"
            if not (dist / "bin" / "elasticsearch").is_file():
                shutil.rmtree(dist, ignore_errors=True)
                shutil.copytree(self.dist_dir, dist, symlinks=True)
        for root, dirs, files in os.walk(self.home):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), account.pw_uid, account.pw_gid)
        os.chown(self.home, account.pw_uid, account.pw_gid)
        return dist

    def _reachable(self, path: Path) -> bool:
        check = subprocess.run(
            [_which("runuser"), "-u", self.user, "--", _which("test"), "-r", str(path)],
            capture_output=True,
            check=False,
        )
        return check.returncode == 0

    def _probe(self, remaining: float) -> str | None:
        if self.health(wait_s=1.0) is None:
            return "the cluster was not yellow"
        return None


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise StackError(f"{name} is not on PATH; the local Elasticsearch needs it (util-linux / coreutils / passwd)")
    return found


class ElasticsearchCluster(LocalCluster[ElasticsearchServer]):
    """A local Elasticsearch cluster of several nodes (``inferstream up --es-nodes 2``).

    Every node is master-eligible and holds data; node 1 listens on the configured ports,
    the others on pairs derived above both (:func:`inferstream.stack.server.node_ports`).
    The vector index gets one replica on a cluster of two nodes or more (its replicas are
    picked from the data nodes when ``elasticsearch.replicas`` is unset), so a lost data
    node loses no document. Two master-eligible nodes keep one of them out of the voting
    configuration: the cluster survives losing the node that is not the elected master,
    never the master itself (three nodes would survive either). Layout::

        elasticsearch/<version>/cluster-<n>/node-<k>/   config/, data/, logs/, elasticsearch.pid
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: int = 2,
        port: int = 9200,
        transport_port: int = 9300,
        version: str = "9.3.2",
        host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        """``options`` go to every node's :class:`ElasticsearchServer` (``heap``, ``java_home``, ``user``, ...)."""
        pairs = node_ports(
            port,
            transport_port,
            nodes,
            what="Elasticsearch",
            settings="INFERSTREAM_ELASTICSEARCH__LOCAL__PORT and INFERSTREAM_ELASTICSEARCH__LOCAL__TRANSPORT_PORT",
            single="`inferstream up --with-elasticsearch`",
        )
        home = Path(state_dir).absolute() / "elasticsearch" / version / f"cluster-{nodes}"
        names = tuple(f"inferstream-{k}" for k in range(1, nodes + 1))
        transports = tuple(transport for _, transport in pairs)
        members = [
            ElasticsearchServer(
                state_dir,
                port=http,
                transport_port=transport,
                version=version,
                host=host,
                **options,
                node=SearchNode(k, names, transports, f"inferstream-cluster-{nodes}", home / f"node-{k}"),
            )
            for k, (http, transport) in enumerate(pairs, start=1)
        ]
        super().__init__(members, home)

    @classmethod
    def from_settings(cls, settings: Settings, nodes: int, *, cache_dir: Path | None = None) -> ElasticsearchCluster:
        """The cluster ``inferstream up --es-nodes N`` runs for these settings."""
        return cls(settings.state_dir, nodes=nodes, **_options_of(settings), cache_dir=cache_dir)

    @staticmethod
    def sizes(settings: Settings) -> list[int]:
        """Node counts of the clusters that have a folder under the state directory (for down/status)."""
        local = settings.elasticsearch.local
        return LocalCluster.sizes_under(settings.state_dir.absolute() / "elasticsearch" / local.version)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (``elasticsearch.url`` takes the list: clients fail over)."""
        return ",".join(node.url for node in self.nodes)

    def master(self) -> ElasticsearchServer | None:
        """The node elected master, asked of the nodes that answer (None when none does)."""
        by_name = {node.node.name: node for node in self.nodes if node.node is not None}
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with urllib.request.urlopen(f"{node.url}/_cat/master?format=json", timeout=5) as response:
                    rows = json.loads(response.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            if rows and rows[0].get("node") in by_name:
                return by_name[rows[0]["node"]]
        return None

    def health(self, *, wait_s: float = 1.0, status: str = "yellow") -> dict[str, Any] | None:
        """The cluster's health once all nodes joined and it is at least ``status``, else None."""
        query = f"wait_for_nodes={len(self.nodes)}&wait_for_status={status}&timeout={max(int(wait_s), 1)}s"
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with urllib.request.urlopen(f"{node.url}/_cluster/health?{query}", timeout=wait_s + 5) as response:
                    body: dict[str, Any] = json.loads(response.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            return None if body.get("timed_out") else body
        return None

    def _formed(self, remaining: float) -> str | None:
        if self.health(wait_s=min(remaining, 5.0)) is None:
            return f"the {len(self.nodes)} nodes had not joined one cluster yet"
        return None
