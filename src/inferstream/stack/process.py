"""Detached service processes: spawn, check, stop, read their logs.

A service runs in its own session (so a Ctrl-C in the terminal that started it
does not reach it) with its output appended to a file, and outlives the Python
process that started it. Its pid is kept in a file; a pid is only taken as the
service's while the process's command line still names it, so a pid reused by
the system after a crash is not mistaken for the service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from inferstream.errors import StackError


def spawn_detached(argv: Sequence[str], *, log_file: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` (``argv[0]`` an absolute path) in a new session, output appended to ``log_file``.

    Returns the pid, which is also the process group id of the new session.
    """
    if not hasattr(os, "posix_spawn"):
        raise StackError(f"starting local services needs a POSIX system; this is {sys.platform}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (
            os.POSIX_SPAWN_OPEN,
            1,
            str(log_file),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o644,
        ),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # posix_spawn, not subprocess.Popen: the child must outlive this interpreter, and an
    # unreaped Popen object warns (ResourceWarning) when it is collected.
    # Python ignores SIGPIPE and SIGXFSZ; give the child the default handlers back.
    try:
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(os.environ if env is None else env),
            file_actions=file_actions,
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as exc:
        raise StackError(f"could not start {argv[0]}: {exc}") from exc
    _wait_for_exec(pid)
    return pid


def _wait_for_exec(pid: int, timeout: float = 5.0) -> None:
    # posix_spawn may return while the child is still inside execve, when
    # /proc/<pid>/cmdline is empty: wait until it names the new program, so that
    # process_alive's command-line check holds from the first call on.
    cmdline = Path("/proc") / str(pid) / "cmdline"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cmdline.read_bytes():
                return
        except OSError:
            return  # no /proc here, or the child is already gone
        time.sleep(0.005)


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is an exited child of this process; True if it was."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child (started by another process), or already reaped
    return waited == pid


def process_alive(pid: int, *, cmdline_contains: Sequence[str] = ()) -> bool:
    """Whether ``pid`` runs, is not a zombie, and its command line holds every string given.

    The command line is only checked where ``/proc`` exists (Linux).
    """
    if pid <= 0 or _reaped(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True
    try:
        stat = (proc / "stat").read_text()
        # The state follows the parenthesised command name, which may itself hold ')'.
        if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
            return False
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except (OSError, ValueError):
        return False  # exited between the checks
    return all(part in cmdline for part in cmdline_contains)


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None when it is absent or unreadable."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pid: int, *, timeout: float, cmdline_contains: Sequence[str] = (), hard: bool = False) -> bool:
    """SIGTERM ``pid``'s process group, wait up to ``timeout``, then SIGKILL it.

    With ``hard``, SIGKILL at once (a crash: nothing flushed, no shutdown hook).
    Returns True if the process had to be killed.
    """

    def alive() -> bool:
        return process_alive(pid, cmdline_contains=cmdline_contains)

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            # The service leads its own session: signal the group so helpers go too.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not alive():
        return False
    if not hard:
        send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                return False
            time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        raise StackError(f"process {pid} survived SIGKILL; check it with `ps -p {pid} -o stat,cmd`")
    return True


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as servers set it: connections in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_accepts(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist (a mark for :func:`tail`)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, lines: int = 30, *, since: int = 0) -> str:
    """The last ``lines`` lines of a text file written after byte ``since`` ('' if none)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if since > size:
                since = 0  # the file was rotated or truncated meanwhile
            handle.seek(max(since, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
