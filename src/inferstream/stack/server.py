"""What the local Kafka and Elasticsearch servers share: a detached JVM, its pid file, its logs.

A subclass says where its files are, what its command line holds (so a reused pid
is never taken for it) and how to probe readiness; this class starts the process
detached, remembers its pid, waits for it to be ready (reporting the tail of what
this start logged when it is not), and stops it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from inferstream.errors import StackError
from inferstream.stack.process import file_size, port_in_use, process_alive, read_pid, spawn_detached, tail, terminate

_LOG_LINES = 40


class LocalServer(ABC):
    """One local server process and the files it keeps under its home."""

    #: How messages name the product ("Kafka", "Elasticsearch").
    product: ClassVar[str]
    #: Seconds a SIGTERM gets before SIGKILL in ``stop()``.
    stop_timeout: ClassVar[float] = 30.0

    version: str
    host: str
    home: Path

    def __init__(self) -> None:
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

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); False if it was not running."""
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, timeout=self.stop_timeout if timeout is None else timeout, cmdline_contains=self._signature())
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
            text = tail(path, _LOG_LINES, since=self._log_marks.get(path, 0))
            if text.strip():
                parts.append(f"--- {path} (last lines)\n{text}")
        return "\n".join(parts) or f"(nothing in {self.home})"

    def _wait_ready(self, timeout: float, *, started: int | None, poll_s: float = 0.2) -> None:
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
            time.sleep(poll_s)
        if started is not None:
            terminate(started, timeout=20, cmdline_contains=self._signature())
            self.pid_file.unlink(missing_ok=True)
        raise StackError(
            f"{self.product} {self.version} on {self.endpoint} was not ready within {timeout:.0f}s "
            f"({last_error}); {'it was stopped. ' if started is not None else ''}Its log:\n{self._log_tail()}"
        )
