"""What the local Kafka and Elasticsearch servers share: a detached JVM, its pid file, its logs.

A subclass says where its files are, which ports it takes, what its command line holds
(so a reused pid is never taken for it), how to fetch and launch it and how to probe
readiness; this class checks the settings, starts the process detached, remembers its
pid, waits for it to be ready (reporting the tail of what this start logged when it is
not), reports its status, and stops it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from inferstream.errors import StackError
from inferstream.stack.java import JavaRuntime
from inferstream.stack.process import file_size, port_in_use, process_alive, read_pid, spawn_detached, tail, terminate

#: Lines of each log a failure report shows.
LOG_LINES = 40
_HEAP = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What ``inferstream status`` reports about any local server."""

    running: bool
    pid: int | None
    version: str
    home: Path
    data_dir: Path
    log_file: Path


S = TypeVar("S", bound=ServerStatus)


class LocalServer(ABC, Generic[S]):
    """One local server process and the files it keeps under its home (``<state_dir>/<name>/<version>``)."""

    #: How messages name the product ("Kafka", "Elasticsearch").
    product: ClassVar[str]
    #: The setting that sizes the heap, for messages.
    heap_setting: ClassVar[str]
    #: Seconds a SIGTERM gets before SIGKILL in ``stop()``.
    stop_timeout: ClassVar[float] = 30.0
    #: Seconds between readiness probes while starting.
    poll_s: ClassVar[float] = 0.2

    def __init__(
        self,
        state_dir: Path,
        name: str,
        *,
        port: int,
        version: str,
        heap: str,
        java_home: Path | None,
        host: str,
        home: Path | None = None,
    ) -> None:
        if not _HEAP.match(heap):
            raise StackError(f"{self.product} heap {heap!r} is not a JVM size such as 512m or 1g ({self.heap_setting})")
        self.state_dir = Path(state_dir).absolute()
        self.port = port
        self.version = version
        self.heap = heap
        self.java_home = java_home
        self.host = host
        # A node of a local cluster lives apart, under the cluster's own folder.
        self.home = Path(home).absolute() if home is not None else self.state_dir / name / version
        (first, port, _), (second, other, _) = self._ports()
        if port == other:
            raise StackError(f"the {first} and {second} ports are both {port}; pick two ports")
        # Byte offsets of the logs when this start began: failure reports show only what it wrote.
        self._log_marks: dict[Path, int] = {}

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where clients reach it, for messages."""

    @property
    @abstractmethod
    def out_file(self) -> Path:
        """The process's stdout and stderr (start-up failures land here)."""

    @property
    @abstractmethod
    def log_file(self) -> Path:
        """The server's own main log."""

    @property
    @abstractmethod
    def pid_file(self) -> Path:
        """Holds the process's pid while it runs."""

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its data (Kafka's ``log.dirs``, Elasticsearch's ``path.data``)."""
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        """Where the server writes its own logs."""
        return self.home / "logs"

    @abstractmethod
    def fetch(self, *, timeout: float = 900.0) -> Path:
        """Fetch the server's files from Maven Central unless they are there; returns where they are."""

    @abstractmethod
    def java(self) -> JavaRuntime:
        """The Java runtime the server runs on."""

    @abstractmethod
    def _ports(self) -> Sequence[tuple[str, int, str]]:
        """The two ports it takes: (what it is, the port, the setting that moves it)."""

    @abstractmethod
    def _launch(self, java: JavaRuntime) -> int:
        """Write the server's configuration and spawn it (with ``_spawn``); returns its pid."""

    @abstractmethod
    def _status(self, common: ServerStatus) -> S:
        """This kind of server's status: ``common`` with what only it reports."""

    @abstractmethod
    def _signature(self) -> tuple[str, ...]:
        """What this server's command line holds, and no other's."""

    @abstractmethod
    def _probe(self, remaining: float) -> str | None:
        """None once the server serves clients, else why not yet (given ``remaining`` seconds)."""

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The process's pid while it runs, else None."""
        pid = read_pid(self.pid_file)
        if pid is None or not process_alive(pid, cmdline_contains=self._signature()):
            return None
        return pid

    @property
    def running(self) -> bool:
        """Whether the process is alive (it may still be starting)."""
        return self.pid is not None

    def status(self) -> S:
        """A snapshot of where the server is and whether it runs."""
        pid = self.pid
        common = ServerStatus(pid is not None, pid, self.version, self.home, self.data_dir, self.log_file)
        return self._status(common)

    @staticmethod
    def _status_fields(common: ServerStatus) -> dict[str, Any]:
        """``common``'s fields by name, for a subclass's status to start from."""
        return {f.name: getattr(common, f.name) for f in dataclasses.fields(common)}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> S:
        """Start the server unless it runs; with ``wait``, return once it serves clients."""
        return self._start(wait=wait, timeout=timeout)

    def _start(self, *, wait: bool, timeout: float) -> S:
        """Start the server unless it runs; with ``wait``, return once ``_probe`` passes (see ``start``)."""
        if self.running:
            if wait:
                self._wait_ready(timeout, started=None)
            return self.status()
        self.pid_file.unlink(missing_ok=True)  # stale: the process is gone
        self._check_ports(self._ports())
        java = self.java()
        self.fetch()
        pid = self._launch(java)
        if wait:
            self._wait_ready(timeout, started=pid)
        return self.status()

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); False if it was not running."""
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, timeout=self.stop_timeout if timeout is None else timeout, cmdline_contains=self._signature())
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the server at once, as a crash would (no flush, no shutdown hook); False if it was not running."""
        pid = self.pid
        if pid is None:
            return False
        terminate(pid, timeout=0, cmdline_contains=self._signature(), hard=True)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _check_ports(self, ports: Sequence[tuple[str, int, str]]) -> None:
        """Refuse to start on a taken port: (what it is, the port, the setting that moves it)."""
        for name, port, variable in ports:
            if port_in_use(self.host, port):
                raise StackError(
                    f"the {name} port {self.host}:{port} is taken by another process; stop it "
                    f"(`ss -ltnp 'sport = :{port}'` names it) or pick another port with {variable}"
                )

    def _spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
        """Start the process detached, its output appended to ``out_file``; records its pid."""
        self._log_marks = {path: file_size(path) for path in (self.out_file, self.log_file)}
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with self.out_file.open("a", encoding="utf-8") as out:
            out.write(f"\n--- inferstream: starting {self.product} {self.version} at {time.strftime('%F %T')}\n")
        pid = spawn_detached(argv, log_file=self.out_file, env=env)
        self.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        return pid

    def _log_tail(self) -> str:
        parts = []
        for path in (self.out_file, self.log_file):
            text = tail(path, LOG_LINES, since=self._log_marks.get(path, 0))
            if text.strip():
                parts.append(f"--- {path} (last lines)\n{text}")
        return "\n".join(parts) or f"(nothing in {self.home})"

    def _wait_ready(self, timeout: float, *, started: int | None) -> None:
        """Return once ``_probe`` passes; a process that exits or stays unready raises (and is stopped)."""
        deadline = time.monotonic() + timeout
        last_error = "it never answered"
        while True:
            if not self.running:
                self.pid_file.unlink(missing_ok=True)
                what = "exited while starting" if started is not None else "is not running"
                raise StackError(f"{self.product} {self.version} on {self.endpoint} {what}\n{self._log_tail()}")
            error = self._probe(max(1.0, min(5.0, deadline - time.monotonic())))
            if error is None:
                return
            last_error = error
            if time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        if started is not None:
            terminate(started, timeout=20, cmdline_contains=self._signature())
            self.pid_file.unlink(missing_ok=True)
        raise StackError(
            f"{self.product} {self.version} on {self.endpoint} was not ready within {timeout:.0f}s "
            f"({last_error}); {'it was stopped. ' if started is not None else ''}Its log:\n{self._log_tail()}"
        )


#: The highest TCP port.
MAX_PORT = 65535


def node_ports(first: int, second: int, count: int, *, what: str, settings: str, single: str) -> list[tuple[int, int]]:
    """The two ports of each of ``count`` nodes of a local cluster.

    Node 1 takes the configured pair (``first``, ``second``); node *k* takes the pair
    ``base + 2(k-2)``, ``base + 2(k-2) + 1`` with ``base`` just above the larger configured
    port, so a derived port never lands on a configured one, whatever the two are. A pair
    past 65535 is refused with the ``settings`` that move the ports down; fewer than two
    nodes are no cluster (``single`` says how to start one node).
    """
    if count < 2:
        raise StackError(f"a local {what} cluster has at least 2 nodes, not {count} (one node: {single})")
    base = max(first, second) + 1
    pairs = [(first, second)] + [(base + 2 * i, base + 2 * i + 1) for i in range(count - 1)]
    if pairs[-1][1] > MAX_PORT:
        raise StackError(
            f"{count} {what} nodes need the ports {base}..{pairs[-1][1]}, past {MAX_PORT}: lower {settings}"
        )
    return pairs


N = TypeVar("N", bound=LocalServer[Any])


class LocalCluster(ABC, Generic[N]):
    """Several local servers of one kind forming one cluster: start them together, stop them all.

    Every node's ports are checked before any node starts, so a taken port never leaves
    half a cluster behind; the nodes start side by side (a quorum forms only once enough
    of them run), and the cluster is ready once each node is and ``_formed`` passes.
    """

    def __init__(self, nodes: Sequence[N], home: Path) -> None:
        self.nodes = list(nodes)
        self.home = home

    @staticmethod
    def sizes_under(root: Path) -> list[int]:
        """Node counts of the clusters with a ``cluster-<n>`` folder under ``root`` (for down and status)."""
        counts = (path.name.removeprefix("cluster-") for path in root.glob("cluster-*"))
        return sorted(int(count) for count in counts if count.isdigit() and int(count) >= 2)

    @abstractmethod
    def _formed(self, remaining: float) -> str | None:
        """None once every node has joined the cluster, else why not yet."""

    @property
    def version(self) -> str:
        """The version every node runs."""
        return self.nodes[0].version

    def fetch(self) -> Path:
        """Fetch the files the nodes share (once); returns where they are."""
        return self.nodes[0].fetch()

    @property
    def running(self) -> bool:
        """Whether any node's process is alive."""
        return any(node.running for node in self.nodes)

    def start(self, *, timeout: float) -> None:
        """Start the nodes that do not run and wait until the cluster is whole; on failure, stop what started."""
        pending = [node for node in self.nodes if not node.running]
        for node in pending:
            node._check_ports(node._ports())
        self._prepare()
        deadline = time.monotonic() + timeout
        try:
            for node in pending:
                node.start(wait=False, timeout=timeout)
            for node in self.nodes:
                node.start(wait=True, timeout=max(1.0, deadline - time.monotonic()))
            last = "it never answered"
            while True:
                error = self._formed(max(1.0, min(5.0, deadline - time.monotonic())))
                if error is None:
                    return
                last = error
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            raise StackError(
                f"the local {len(self.nodes)}-node {self.nodes[0].product} cluster did not form within "
                f"{timeout:.0f}s ({last}); logs under {self.home}"
            )
        except BaseException:
            for node in pending:
                node.stop(timeout=20)
            raise

    def _prepare(self) -> None:
        """Whatever the nodes share that must exist before the first starts (nothing by default)."""

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop every node at once; False if none was running.

        Side by side, not one after another: the last nodes of a quorum stopped one by one
        would wait out their timeout for a majority that is already gone.
        """
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            stopped = list(pool.map(lambda node: node.stop(timeout=timeout), self.nodes))
        return any(stopped)
