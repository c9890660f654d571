"""Footprint: how fast the CLI starts, and how much memory the whole demo takes at its peak.

CLI start: the wall time of ``inferstream --help`` (``python -m inferstream --help`` from this
interpreter, a fresh process each run) against a bare ``python -c pass`` in the same run, the
two alternating; the median of the runs, after one unmeasured warm-up of each.

Memory: a plain ``inferstream demo`` (1000 events; it starts its own Kafka, the ingest
processor, the workers, the index sink and the drift monitor), sampled every 0.2 s until it
exits: the resident memory (RSS) of its whole process tree summed, Kafka's JVM included.
Shared pages count once per process, as ``ps`` shows them. The demo runs in a temporary
directory on free ports (so another broker on 9092 is not used instead of its own), with the
Kafka jars from the repository's cache and the demo models built there beforehand: building
them (scikit-learn, once per checkout) is not measured.

Kept: the same demo with ``--keep`` (it goes on serving the live dashboard), sampled the same
way. Once it prints the dashboard's address, a visitor here opens the page as a browser would
(the login link, the page, its script, style and chart library), polls its state once a second
for :data:`KEEP_VIEW_S` seconds and asks its search box once; then the demo gets SIGTERM (its
Ctrl-C) and is sampled until it has stopped. The visitor's own memory is not counted: it is
not the platform's.

    .venv/bin/python benchmarks/footprint.py --quick     # 5 CLI runs, one demo: about a minute
    .venv/bin/python benchmarks/footprint.py             # 15 CLI runs, three demos (median peak)

``--keep`` adds one kept demo (three in a full run) and ``keep_peak_rss_mb`` to the RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import inferstream
from _harness import add_common_args, kafka_lib_dir, note, result_line
from inferstream.config import Settings
from inferstream.stack.kafka import KAFKA_LIB_ENV
from inferstream.stack.testing import free_ports

SAMPLE_EVERY_S = 0.2
DEMO_TIMEOUT_S = 600.0
SHOWN_PROCESSES = 5
#: Seconds the visitor of a kept demo's dashboard polls its state (as the page does, once a second).
KEEP_VIEW_S = 20.0
#: The kept demo's line with the dashboard's address.
DASHBOARD_LINE = re.compile(r"the live dashboard: (\S+)")
MB = 1024 * 1024


# -- CLI start ------------------------------------------------------------------------------


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def start_times(runs: int, env: dict[str, str], cwd: Path) -> tuple[list[float], list[float]]:
    """Wall times of ``python -c pass`` and ``inferstream --help``, alternating, after a warm-up of each."""
    bare = [sys.executable, "-c", "pass"]
    cli = [sys.executable, "-m", "inferstream", "--help"]
    _wall(bare, env, cwd)
    _wall(cli, env, cwd)  # also writes the bytecode caches a first run would
    python_s, cli_s = [], []
    for run in range(runs):
        for argv, times in ((bare, python_s), (cli, cli_s)) if run % 2 == 0 else ((cli, cli_s), (bare, python_s)):
            times.append(_wall(argv, env, cwd))
    return python_s, cli_s


# -- demo memory ----------------------------------------------------------------------------


@dataclass
class Peak:
    """The demo's process tree over one run."""

    total_bytes: int = 0
    by_label: dict[str, int] = field(default_factory=dict)  # peak of the label's sum over the samples
    count_by_label: dict[str, int] = field(default_factory=dict)  # most processes of a label at once
    samples: int = 0
    wall_s: float = 0.0
    started_kafka: bool = False
    #: Kept demos: seconds from the start to its SIGTERM, and what the dashboard's visitor saw.
    stopping: float | None = None
    visit: str = ""


def label(process: psutil.Process) -> str:
    """What a process is: the inferstream command it runs, Kafka, or its name."""
    try:
        argv = process.cmdline()
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] == "inferstream":
            words = [a for a in argv[i + 2 :] if not a.startswith("-")]
            return " ".join(["inferstream", *words[:2]])
    if "java" in (name, Path(argv[0]).name if argv else ""):
        main_class = _java_main(argv)
        return "Kafka broker (java)" if main_class == "kafka.Kafka" else f"java {main_class}"
    return name


def _java_main(argv: list[str]) -> str:
    """The main class (or -jar file) of a java command line."""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-cp", "-classpath", "--class-path", "-jar"):
            value = next(args, "?")
            if arg == "-jar":
                return Path(value).name
        elif not arg.startswith("-"):
            return arg
    return "?"


def _tree(root: psutil.Process, known: dict[int, psutil.Process]) -> list[psutil.Process]:
    """The root and its descendants now, and any process seen in the tree before that still runs.

    A detached service whose parent died is no longer a descendant, but its memory still counts.
    """
    try:
        for child in root.children(recursive=True):
            known.setdefault(child.pid, child)
    except psutil.NoSuchProcess:
        pass
    alive = [p for p in known.values() if _alive(p)]
    return [root, *alive] if root.is_running() else alive


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sample(root: psutil.Process, known: dict[int, psutil.Process], peak: Peak) -> None:
    total = 0
    by_label: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for process in _tree(root, known):
        try:
            rss = process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        which = label(process)
        total += rss
        by_label[which] += rss
        count[which] += 1
    peak.samples += 1
    peak.total_bytes = max(peak.total_bytes, total)
    for which, rss in by_label.items():
        peak.by_label[which] = max(peak.by_label.get(which, 0), rss)
        peak.count_by_label[which] = max(peak.count_by_label.get(which, 0), count[which])
    if "Kafka broker (java)" in by_label:
        peak.started_kafka = True


def demo_peak(env: dict[str, str], cwd: Path, log: Path, *, keep: bool = False) -> Peak:
    """Run ``inferstream demo`` in ``cwd`` (its state directory under it) and sample its tree until it exits.

    ``keep``: run it with ``--keep``, visit its dashboard once it is served, then stop it (SIGTERM).
    """
    cwd.mkdir()
    peak = Peak()
    known: dict[int, psutil.Process] = {}
    started = time.perf_counter()
    argv = [sys.executable, "-m", "inferstream", "demo", *(["--keep"] if keep else [])]
    with log.open("wb") as out:
        demo = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(demo.pid)
    visitor: Visitor | None = None
    try:
        tick = time.monotonic()
        while demo.poll() is None:
            if time.perf_counter() - started > DEMO_TIMEOUT_S:
                raise RuntimeError(f"the demo ran past {DEMO_TIMEOUT_S:.0f} s; its output: {log}")
            _sample(root, known, peak)
            if keep and visitor is None and (link := _dashboard_link(log)) is not None:
                visitor = Visitor(link)
                visitor.start()
            elif visitor is not None and visitor.finished.is_set() and peak.stopping is None:
                peak.stopping = time.perf_counter() - started
                demo.terminate()  # the demo's Ctrl-C: it stops the dashboard, its platform and its Kafka
            tick += SAMPLE_EVERY_S
            time.sleep(max(tick - time.monotonic(), 0.0))
        peak.wall_s = time.perf_counter() - started
    finally:
        _stop(demo, known)
    if demo.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"the demo exited with {demo.returncode}:\n" + "\n".join(tail))
    if not peak.started_kafka:
        raise RuntimeError("the demo did not start its own Kafka: its memory would be missing from the figure")
    if keep:
        if visitor is None or peak.stopping is None:
            raise RuntimeError(f"the kept demo never served its dashboard; its output: {log}")
        if visitor.error is not None:
            raise RuntimeError(f"visiting the dashboard failed: {visitor.error}")
        peak.visit = visitor.summary()
    return peak


def _dashboard_link(log: Path) -> str | None:
    found = DASHBOARD_LINE.search(log.read_text(errors="replace"))
    return found.group(1) if found else None


class Visitor(threading.Thread):
    """Opens the dashboard as a browser would, polls its state for :data:`KEEP_VIEW_S` s, searches once."""

    def __init__(self, link: str) -> None:
        super().__init__(name="visitor", daemon=True)
        self.link = link
        self.finished = threading.Event()
        self.error: str | None = None
        self.polls = 0
        self.state_bytes = 0
        self.models: list[str] = []

    def run(self) -> None:
        try:
            self._visit()
        except Exception as exc:  # reported by the measuring thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()

    def _visit(self) -> None:
        with httpx.Client(follow_redirects=True, timeout=30) as http:
            page = http.get(self.link)  # logs in (a token link) and lands on the page
            page.raise_for_status()
            base = str(page.url).split("/ui", 1)[0]
            for name in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
                http.get(base + name).raise_for_status()
            until = time.monotonic() + KEEP_VIEW_S
            searched = False
            while time.monotonic() < until:
                state = http.get(f"{base}/ui/api/state")
                state.raise_for_status()
                self.polls += 1
                self.state_bytes = len(state.content)
                document = state.json()
                self.models = [f"{m['model']}:{m['version']}" for m in document["models"]]
                if not searched and document["loaded"]["predictions"]:
                    http.post(f"{base}/ui/api/search", json={"query": "the for statement", "k": 3}).raise_for_status()
                    searched = True
                time.sleep(1.0)

    def summary(self) -> str:
        return f"{self.polls} polls of its state ({self.state_bytes / 1024:,.0f} KiB), models {', '.join(self.models)}"


def _stop(demo: subprocess.Popen[bytes], known: dict[int, psutil.Process]) -> None:
    """The demo stops what it started; if it did not (interrupted, crashed), stop it and what is left."""
    if demo.poll() is None:
        demo.terminate()  # the demo takes SIGTERM like Ctrl-C: it stops its Kafka and workers
        try:
            demo.wait(90)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    left = [p for p in known.values() if _alive(p)]
    for process in left:
        note(f"stopping {label(process)} (pid {process.pid}), left running by the demo")
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, still = psutil.wait_procs(left, timeout=30)
    for process in still:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


# -- the run --------------------------------------------------------------------------------


def environment(work: Path) -> dict[str, str]:
    """Default settings (no INFERSTREAM_* of the caller's) but free ports, the cached Kafka jars, models in ``work``."""
    version = Settings.load().stack.kafka_version
    port, controller_port = free_ports(2)
    env = {key: value for key, value in os.environ.items() if not key.startswith("INFERSTREAM_")}
    # The commands run in a temporary directory: a relative PYTHONPATH (src) would no longer find
    # this checkout, and they would time another inferstream (an installed one) instead.
    source = str(Path(inferstream.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *(str(Path(p).resolve()) for p in _pythonpath() if p)])
    env |= {
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "INFERSTREAM_STACK__KAFKA_PORT": str(port),
        "INFERSTREAM_STACK__CONTROLLER_PORT": str(controller_port),
        KAFKA_LIB_ENV: str(kafka_lib_dir(version)),
        "INFERSTREAM_MODELS_DIR": str(work / "models"),
        "COLUMNS": "200",
    }
    lib = Path(env[KAFKA_LIB_ENV])
    if not lib.is_dir():
        raise SystemExit(f"no Kafka {version} jars in {lib}: run `inferstream up` once (or set {KAFKA_LIB_ENV})")
    note(f"working in {work}; Kafka on 127.0.0.1:{port} (controller {controller_port}), jars from {lib}")
    return env


def _pythonpath() -> list[str]:
    return os.environ.get("PYTHONPATH", "").split(os.pathsep)


def report(
    python_s: list[float], cli_s: list[float], peaks: list[Peak], kept: list[Peak], *, quick: bool
) -> dict[str, float]:
    console = Console()
    if not console.is_terminal:
        console.width = 140
    load = os.getloadavg()[0]
    mode = "quick" if quick else "full"
    start = Table(title=f"start-up ({mode}, median of {len(cli_s)} runs; load {load:.1f} on {os.cpu_count()} CPUs)")
    for column in ("command", "median s", "min s", "max s"):
        start.add_column(column, justify="left" if column == "command" else "right")
    for what, times in (("python -c pass", python_s), ("inferstream --help", cli_s)):
        start.add_row(what, f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}")
    start.add_row("--help beyond the interpreter", f"{statistics.median(cli_s) - statistics.median(python_s):.3f}")
    console.print(start)
    _memory_table(console, "inferstream demo", peaks)
    metrics = {
        "peak_rss_mb": statistics.median(p.total_bytes for p in peaks) / MB,
        "cli_import_s": statistics.median(cli_s),
        "python_start_s": statistics.median(python_s),
    }
    if kept:
        middle = _memory_table(console, "inferstream demo --keep (the dashboard served and visited)", kept)
        console.print(
            f"The kept demo's dashboard was visited for {KEEP_VIEW_S:.0f} s ({middle.visit}); the demo got "
            f"SIGTERM {middle.stopping or 0:.0f} s after its start."
        )
        metrics["keep_peak_rss_mb"] = statistics.median(p.total_bytes for p in kept) / MB
    return metrics


def _memory_table(console: Console, what: str, peaks: list[Peak]) -> Peak:
    """The per-process table of the median run; that run."""
    ordered = sorted(peaks, key=lambda p: p.total_bytes)
    middle = ordered[len(ordered) // 2]
    runs = ", ".join(f"{p.total_bytes / MB:,.0f}" for p in peaks)
    memory = Table(title=f"{what}: peak RSS of its process tree")
    for column in ("process", "peak MB", "processes"):
        memory.add_column(column, justify="left" if column == "process" else "right")
    labels = sorted(middle.by_label, key=middle.by_label.__getitem__, reverse=True)
    for which in labels[:SHOWN_PROCESSES]:
        memory.add_row(which, f"{middle.by_label[which] / MB:,.0f}", str(middle.count_by_label[which]))
    if len(labels) > SHOWN_PROCESSES:
        rest = labels[SHOWN_PROCESSES:]
        memory.add_row(f"others ({', '.join(rest)})", f"{sum(middle.by_label[w] for w in rest) / MB:,.0f}", "")
    memory.add_row("[bold]whole tree at its peak[/]", f"[bold]{middle.total_bytes / MB:,.0f}[/]", "")
    console.print(memory)
    console.print(
        f"{len(peaks)} run(s), whole tree at its peak: {runs} MB; the rows are from the median run "
        f"({middle.samples} samples every {SAMPLE_EVERY_S} s over {middle.wall_s:.0f} s). Each row is that "
        "process's own peak; the whole tree's peak is one sample's sum, so it can be less than the rows added "
        "up. RSS counts shared pages in every process that maps them."
    )
    return middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Also measure the demo with --keep: the live dashboard served and visited (keep_peak_rss_mb).",
    )
    args = parser.parse_args()
    if args.bootstrap_servers:
        parser.error("--bootstrap-servers: the demo measured here starts its own Kafka, whose memory is part of it")
    quick: bool = args.quick
    with tempfile.TemporaryDirectory(prefix="inferstream-footprint-") as directory:
        work = Path(directory)
        env = environment(work)
        python_s, cli_s = start_times(5 if quick else 15, env, work)
        note(f"start-up: python -c pass {statistics.median(python_s):.3f}s, --help {statistics.median(cli_s):.3f}s")
        note("building the demo models (not measured) ...")
        subprocess.run(
            [sys.executable, "-m", "inferstream", "models", "build-demo"],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        peaks = []
        for run in range(1 if quick else 3):
            # Each run in a directory of its own: a fresh broker's data and the demo's files, same models.
            peak = demo_peak(env, work / f"run-{run}", work / f"demo-{run}.log")
            peaks.append(peak)
            note(f"demo {run + 1}: peak {peak.total_bytes / MB:,.0f} MB over {peak.wall_s:.0f} s")
        kept = []
        for run in range(1 if quick else 3) if args.keep else ():
            peak = demo_peak(env, work / f"keep-{run}", work / f"keep-{run}.log", keep=True)
            kept.append(peak)
            note(f"kept demo {run + 1}: peak {peak.total_bytes / MB:,.0f} MB over {peak.wall_s:.0f} s; {peak.visit}")
        metrics = report(python_s, cli_s, peaks, kept, quick=quick)
    print(result_line(metrics), flush=True)


if __name__ == "__main__":
    main()
