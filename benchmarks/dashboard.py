"""The live dashboard with 10k predictions per second flowing, against the same dashboard idle, same run.

``inferstream dashboard`` (a process of its own, as users run it) over a broker whose
predictions topic first gets :data:`HISTORY` predictions (what the page shows on load).
Then two phases of S seconds each, idle first:

- idle: nothing flows but the probes;
- load: a producer (a process of its own, a raw confluent-kafka producer of ready-made
  prediction JSON, paced) pushes R predictions/s (10,000 by default) of one model
  version to the predictions topic.

In both phases a visitor here does what the page does, faster: it asks for
``GET /ui/api/state`` every :data:`POLL_S` seconds (latency p50/p99, bytes of the
document), and once a second produces a probe prediction of a model version of its
own and times until the state counts it (the update delay: Kafka, the dashboard's
fan-out and fold, and its snapshot, reused for up to half a second; the page's own poll
interval of a second comes on top). Meanwhile: the dashboard process's CPU (cores used) and
resident memory. At the end of the load phase, the predictions the state counts against
those produced (``ratio_kept_up``, after a drain of at most :data:`DRAIN_S` s), and the rate it
counted them at while they flowed (``dash_pred_per_s``). What the browser gets does not
grow with the load: one state document a poll (``state_kib``), whatever flows.

``ratio_delay`` and ``ratio_state_p99`` are the load phase's figure over the idle one's
(1.0: the load costs the page nothing). ``load_s``: from the first request for the
state to the history of :data:`HISTORY` predictions read and folded.

``--browser``: the page is also open in Debian's headless ``chromium`` (through
``chromium-driver`` and selenium, nothing downloaded) during both phases; in the page,
a timer every :data:`JS_TICK_MS` ms measures how late it fires (the main thread's lag:
what a user's click would wait), long tasks (over 50 ms) are counted, and the JS heap is
read at each phase's end (``js_lag_p99_ms_idle``/``_load``: milliseconds, too few for a
ratio to mean much). The browser's CPU is not the dashboard's and is not counted in it.

    .venv/bin/python benchmarks/dashboard.py --quick     # 10 s a phase: about a minute
    .venv/bin/python benchmarks/dashboard.py             # 30 s a phase
    .venv/bin/python benchmarks/dashboard.py --quick --browser
    .venv/bin/python benchmarks/dashboard.py --rate 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from _harness import add_common_args, bench_client, broker, note, result_line
from _records import predictions
from inferstream.config import Settings
from inferstream.schemas.codec import SCHEMA_HEADER, schema_header_value
from inferstream.schemas.records import Prediction

#: Predictions on the topic before the dashboard starts (it reads about 60,000 on load).
HISTORY = 60_000
#: Seconds between the visitor's requests for the state (the page asks once a second).
POLL_S = 0.2
#: Seconds between probes, and the most one may take to be counted.
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 10.0
#: Seconds the dashboard gets to count what was produced once the load stops.
DRAIN_S = 15.0
LOAD = ("load", "1")
PROBE = ("probe", "1")
MB = 1024 * 1024
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Milliseconds between the page's lag timer's ticks.
JS_TICK_MS = 50
#: Installed in the page at each phase's start: the lag of a timer, long tasks.
_JS_PROBE = f"""
if (window.__bench) {{ clearInterval(window.__bench.timer); window.__bench.observer.disconnect(); }}
const bench = window.__bench = {{lags: [], longTasks: 0, expected: performance.now() + {JS_TICK_MS}}};
bench.timer = setInterval(() => {{
  const now = performance.now();
  bench.lags.push(Math.max(now - bench.expected, 0));
  bench.expected = now + {JS_TICK_MS};
}}, {JS_TICK_MS});
bench.observer = new PerformanceObserver(list => {{ bench.longTasks += list.getEntries().length; }});
bench.observer.observe({{entryTypes: ["longtask"]}});
"""
_JS_READ = """
const bench = window.__bench;
return {lags: bench.lags, longTasks: bench.longTasks,
        heap: performance.memory ? performance.memory.usedJSHeapSize : null,
        models: document.querySelectorAll("#models tbody tr").length};
"""

#: The load: a process of its own (as a producing application would be), pacing a raw producer
#: at RATE predictions/s of ready-made JSON (each batch stamped with the time it is sent), for
#: SECONDS; prints how many were acknowledged.
_PRODUCER = """
import sys, time, orjson
from datetime import datetime, timezone
from confluent_kafka import Producer
servers, topic, rate, seconds, header = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
template = orjson.loads(sys.stdin.buffer.read())
producer = Producer({"bootstrap.servers": servers, "linger.ms": 5, "queue.buffering.max.messages": 1000000})
acked = [0]
def done(error, message):
    if error is None:
        acked[0] += 1
headers = [tuple(header.split("=", 1))]
ahead, sent, started = 0.01, 0, time.monotonic()
print("started", flush=True)
while (now := time.monotonic()) - started < seconds:
    due = int((now - started + ahead) * rate) - sent
    stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    for _ in range(max(due, 0)):
        template["request_id"] = f"l{sent:010d}"
        template["predicted_at"] = stamp
        try:
            value = orjson.dumps(template)
            producer.produce(topic, value, key=template["request_id"], headers=headers, on_delivery=done)
        except BufferError:
            producer.poll(0.01)
            continue
        sent += 1
    producer.poll(0)
    time.sleep(max(started + (sent / rate) - time.monotonic(), 0.0))
producer.flush(60)
print(sent, acked[0], time.monotonic() - started, flush=True)
"""


@dataclass
class Phase:
    """What the visitor saw in one phase."""

    name: str
    state_ms: list[float] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    lost_probes: int = 0
    cpu_cores: float = 0.0
    rss_mb: float = 0.0
    produced: int = 0
    produce_s: float = 0.0
    counted: int = 0  # the load model's predictions the state counted by the end of the phase
    counted_per_s: float = 0.0
    drained: int = 0  # ... and after the drain
    js_lags_ms: list[float] = field(default_factory=list)  # --browser: the page's timer, how late
    long_tasks: int = 0
    js_heap_mb: float = float("nan")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _template(model: str, version: str) -> dict[str, Any]:
    record = predictions(1)[0]
    return {**record, "model": model, "version": version, "predicted_at": _stamp()}


@contextmanager
def dashboard(settings: Settings, port: int) -> Iterator[psutil.Process]:
    """``inferstream dashboard`` on ``port`` until the block ends."""
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
    }
    env.pop("INFERSTREAM_GATEWAY__TOKEN", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "dashboard", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("`inferstream dashboard` did not start")
            time.sleep(0.2)
        yield psutil.Process(child.pid)
    finally:
        child.terminate()
        child.wait(60)


@contextmanager
def browser(url: str, profile: Path) -> Iterator[webdriver.Chrome]:
    """Headless chromium (the system's, through its chromedriver) on the page, until the block ends."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        raise SystemExit(f"--browser needs Debian's chromium and chromium-driver ({', '.join(missing)} missing)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,3200"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(url)
        deadline = time.monotonic() + 60
        while not driver.execute_script("return !!(window.inferstream && window.inferstream.state)"):
            if time.monotonic() > deadline:
                raise RuntimeError("the page never got its state")
            time.sleep(0.2)
        yield driver
    finally:
        driver.quit()


class Visitor:
    """Polls the state; produces probes and times until the state counts them."""

    def __init__(self, http: httpx.Client, settings: Settings) -> None:
        self.http = http
        self.topic = settings.topics.platform_topics()["predictions"]
        self.producer = Producer({**settings.kafka.base_config(), "linger.ms": 0})
        self.header = (SCHEMA_HEADER, schema_header_value(Prediction))
        self.probe = _template(*PROBE)
        self.probes = 0
        self.latest: dict[str, Any] = {}

    def state(self, phase: Phase | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        response = self.http.get("/ui/api/state")
        took = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        if phase is not None:
            phase.state_ms.append(took)
            phase.state_bytes.append(len(response.content))
        self.latest = orjson.loads(response.content)
        return self.latest

    def total(self, key: tuple[str, str], document: dict[str, Any] | None = None) -> int:
        for model in (document or self.latest).get("models", []):
            if (model["model"], model["version"]) == key:
                return int(model["total"])
        return 0

    def run(self, phase: Phase, seconds: float) -> None:
        """Poll and probe for ``seconds``."""
        until = time.monotonic() + seconds
        next_probe = time.monotonic()
        pending: tuple[float, int] | None = None  # (when produced, the total that counts it)
        while (now := time.monotonic()) < until:
            document = self.state(phase)
            if pending is not None:
                sent, wanted = pending
                if self.total(PROBE, document) >= wanted:
                    phase.delays_ms.append((time.perf_counter() - sent) * 1000)
                    pending = None
                elif time.perf_counter() - sent > PROBE_TIMEOUT_S:
                    phase.lost_probes += 1
                    pending = None
            if pending is None and now >= next_probe:
                self.probes += 1
                self.probe |= {"request_id": f"probe-{self.probes}", "predicted_at": _stamp()}
                sent = time.perf_counter()
                self.producer.produce(self.topic, orjson.dumps(self.probe), headers=[self.header])
                self.producer.flush(10)
                pending = (sent, self.probes)
                next_probe = now + PROBE_EVERY_S
            time.sleep(max(POLL_S - (time.monotonic() - now), 0.0))
        if pending is not None:
            phase.lost_probes += 1


class Load:
    """The paced producer process (see :data:`_PRODUCER`)."""

    def __init__(self, settings: Settings, rate: float, seconds: float) -> None:
        topic = settings.topics.platform_topics()["predictions"]
        header = f"{SCHEMA_HEADER}={schema_header_value(Prediction).decode()}"
        argv = [
            sys.executable,
            "-c",
            _PRODUCER,
            settings.kafka.bootstrap_servers,
            topic,
            str(rate),
            str(seconds),
            header,
        ]
        self.child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.child.stdin is not None
        assert self.child.stdout is not None
        self.child.stdin.write(orjson.dumps(_template(*LOAD)))
        self.child.stdin.close()
        if self.child.stdout.readline().strip() != b"started":
            raise RuntimeError("the load producer did not start")

    def result(self) -> tuple[int, int, float]:
        """(sent, acknowledged, seconds) once it ends."""
        assert self.child.stdout is not None
        out = self.child.stdout.read()
        self.child.wait(60)
        sent, acked, seconds = out.split()
        return int(sent), int(acked), float(seconds)


def prefill(settings: Settings, count: int) -> None:
    """``count`` predictions of the load model on the topic, stamped now (the history shown on load)."""
    topic = settings.topics.platform_topics()["predictions"]
    producer = Producer({**settings.kafka.base_config(), "linger.ms": 20})
    header = [(SCHEMA_HEADER, schema_header_value(Prediction))]
    record = _template(*LOAD)
    for i in range(count):
        record["request_id"] = f"h{i:09d}"
        while True:
            try:
                producer.produce(topic, orjson.dumps(record), key=record["request_id"], headers=header)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the history was not acknowledged")


def measure(
    visitor: Visitor,
    process: psutil.Process,
    phase: Phase,
    seconds: float,
    load: Load | None,
    page: webdriver.Chrome | None = None,
) -> None:
    """One phase: poll and probe for ``seconds`` while ``load`` (if any) runs; CPU and RSS of the dashboard."""
    before = visitor.total(LOAD, visitor.state())
    if page is not None:
        page.execute_script(_JS_PROBE)
    cpu_before, started = process.cpu_times(), time.perf_counter()
    rss: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            rss.append(process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    visitor.run(phase, seconds)
    cpu_after, wall = process.cpu_times(), time.perf_counter() - started
    stop.set()
    watcher.join()
    if page is not None:
        seen = page.execute_script(_JS_READ)
        phase.js_lags_ms, phase.long_tasks = seen["lags"], seen["longTasks"]
        phase.js_heap_mb = (seen["heap"] or float("nan")) / MB
        if not seen["models"]:
            raise RuntimeError("the page shows no model")
    phase.cpu_cores = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
    phase.rss_mb = max(rss, default=process.memory_info().rss) / MB
    phase.counted = visitor.total(LOAD) - before
    phase.counted_per_s = phase.counted / wall
    if load is not None:
        sent, acked, phase.produce_s = load.result()
        phase.produced = acked
        if acked < sent:
            note(f"{sent - acked} of the load's predictions were not acknowledged")
        deadline = time.monotonic() + DRAIN_S
        while visitor.total(LOAD, visitor.state()) - before < acked and time.monotonic() < deadline:
            time.sleep(0.2)
    phase.drained = visitor.total(LOAD) - before


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(
    idle: Phase, loaded: Phase, load_s: float, rate: float, seconds: float, *, quick: bool, page: bool
) -> dict[str, float]:
    console = Console()
    if not console.is_terminal:
        console.width = 140
    mode = "quick" if quick else "full"
    table = Table(
        title=f"the dashboard idle and with {rate:,.0f} predictions/s flowing ({mode}: {seconds:.0f} s a phase; "
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    table.add_column("")
    for phase in (idle, loaded):
        table.add_column(phase.name, justify="right")
    rows = [
        ("state requests", lambda p: f"{len(p.state_ms)}"),
        ("state latency p50 / p99 ms", lambda p: f"{_pct(p.state_ms, 50):.1f} / {_pct(p.state_ms, 99):.1f}"),
        ("state document KiB (median)", lambda p: f"{_pct(p.state_bytes, 50) / 1024:.1f}"),
        (
            "update delay p50 / p99 ms (probes)",
            lambda p: (
                f"{_pct(p.delays_ms, 50):.0f} / {_pct(p.delays_ms, 99):.0f} ({len(p.delays_ms)}, {p.lost_probes} lost)"
            ),
        ),
        ("predictions produced (acked)", lambda p: f"{p.produced:,}"),
        ("counted by the dashboard while flowing", lambda p: f"{p.counted:,} ({p.counted_per_s:,.0f}/s)"),
        ("counted after the drain", lambda p: f"{p.drained:,}"),
        ("dashboard CPU (cores)", lambda p: f"{p.cpu_cores:.2f}"),
        ("dashboard peak RSS MB", lambda p: f"{p.rss_mb:,.0f}"),
    ]
    if page:
        rows += [
            (
                "page: timer lag p50 / p99 / max ms",
                lambda p: f"{_pct(p.js_lags_ms, 50):.1f} / {_pct(p.js_lags_ms, 99):.1f} / {max(p.js_lags_ms):.0f}",
            ),
            ("page: long tasks (> 50 ms)", lambda p: f"{p.long_tasks}"),
            ("page: JS heap MB at the end", lambda p: f"{p.js_heap_mb:.1f}"),
        ]
    for label, cell in rows:
        table.add_row(label, *(cell(p) for p in (idle, loaded)))
    console.print(table)
    console.print(
        f"history: {HISTORY:,} predictions read and folded {load_s:.1f} s after the first request for the state. "
        "The update delay includes the dashboard's snapshot, reused for up to 0.5 s; the page polls once a "
        "second on top of it, and gets one state document a poll however many predictions flow."
    )
    produced_per_s = loaded.produced / loaded.produce_s if loaded.produce_s else 0.0
    metrics = {
        "produced_per_s": produced_per_s,
        "dash_pred_per_s": loaded.counted_per_s,
        "ratio_kept_up": loaded.drained / loaded.produced if loaded.produced else 0.0,
        "state_p99_ms_idle": _pct(idle.state_ms, 99),
        "state_p99_ms_load": _pct(loaded.state_ms, 99),
        "ratio_state_p99": _pct(loaded.state_ms, 99) / _pct(idle.state_ms, 99),
        "delay_p50_ms_idle": _pct(idle.delays_ms, 50),
        "delay_p50_ms_load": _pct(loaded.delays_ms, 50),
        "ratio_delay": _pct(loaded.delays_ms, 50) / _pct(idle.delays_ms, 50),
        "cpu_cores_idle": idle.cpu_cores,
        "cpu_cores_load": loaded.cpu_cores,
        "state_kib": _pct(loaded.state_bytes, 50) / 1024,
        "rss_mb_load": loaded.rss_mb,
        "load_s": load_s,
    }
    if page:
        metrics |= {
            "js_lag_p99_ms_idle": _pct(idle.js_lags_ms, 99),
            "js_lag_p99_ms_load": _pct(loaded.js_lags_ms, 99),
            "long_tasks_load": loaded.long_tasks,
        }
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--rate", type=float, default=10_000.0, help="Predictions/s produced in the load phase.")
    parser.add_argument("--browser", action="store_true", help="Also keep the page open in headless chromium.")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else 30.0
    rate: float = args.rate
    with broker(args.bootstrap_servers) as servers, bench_client(servers) as client:
        settings = client.settings
        client.topics.ensure_platform_topics()
        note(f"producing {HISTORY:,} predictions of history ...")
        prefill(settings, HISTORY)
        port = _free_port()
        note("starting the dashboard ...")
        with (
            dashboard(settings, port) as process,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            tempfile.TemporaryDirectory(prefix="inferstream-chromium-") as profile,
        ):
            visitor = Visitor(http, settings)
            started = time.perf_counter()
            while not visitor.state()["loaded"]["predictions"]:
                time.sleep(0.05)
            load_s = time.perf_counter() - started
            if visitor.total(LOAD) < HISTORY * 0.9:
                raise RuntimeError(f"the dashboard shows {visitor.total(LOAD)} of the {HISTORY} predictions on load")
            idle, loaded = Phase("idle"), Phase(f"{rate:,.0f}/s")
            with contextlib.ExitStack() as stack:
                page = stack.enter_context(browser(f"{http.base_url}/ui", Path(profile))) if args.browser else None
                note(f"history loaded in {load_s:.1f}s; idle for {seconds:.0f}s ...")
                measure(visitor, process, idle, seconds, None, page)
                note(f"{rate:,.0f} predictions/s for {seconds:.0f}s ...")
                measure(visitor, process, loaded, seconds, Load(settings, rate, seconds), page)
        metrics = report(idle, loaded, load_s, rate, seconds, quick=args.quick, page=args.browser)
    print(result_line(metrics), flush=True)


if __name__ == "__main__":
    main()
