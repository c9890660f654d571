"""A 10x burst of embedding requests: autoscaled workers against one fixed copy, same run.

The embedder (minilm:1) serves some tens of texts/s per process here, so a burst of
ten times a steady rate builds a real backlog. Two runs on fresh topics (4
partitions each), one after the other on the same broker, each with a
``Supervisor`` whose copies are ``inferstream serve`` processes:

1. fixed: one copy (a policy with ``max_replicas=1``, so it never scales). A backlog
   produced up front measures the copy's capacity C (embeddings counted on the
   output topic as they come); the steady rate R is 30% of C.
2. autoscaled: ``ScalePolicy`` up to ``--max-replicas`` copies (default: the CPU
   cores, the model being CPU bound; never above the partitions), sized from the
   fixed run: a copy more while the lag is over three seconds of C (and twice the
   baseline level) and not shrinking, one less after three samples at the baseline
   level. A few requests up front (under that threshold) make sure its first copy is
   serving before the baseline begins.

Each run: R for the baseline window, 10·R for the burst window, then R again until
the group lag is back at its baseline level (the highest lag sampled during the
baseline, at least two seconds of R). Lag is what the autoscaler reads: end offsets
against the group's commits, which move once each batch a copy took is served (an
embedder copy takes up to 16 model batches at once), so it moves in steps. Every second
the group lag, the copies and the resident memory (this process, which runs the
supervisor and the sender, plus every copy, from /proc) are sampled.

Drain time: from the end of the burst to the first sample back at the baseline
level; speedup = fixed drain / autoscaled drain. At the end every request id must
have its embedding (keys of the embeddings topic): lost ones are counted, and so are
duplicates, which at-least-once hand-overs of partitions between copies may produce.

    .venv/bin/python benchmarks/autoscale.py --quick

On a machine with few cores the copies share the CPU: more of them need not drain
any faster. What must hold is that the number of copies and the memory stay bounded.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
from rich.console import Console
from rich.table import Table

from _harness import add_common_args, bench_client, broker, note, result_line
from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.demo import sample_texts
from inferstream.serving.demo_models import EMBEDDER_NAME, EMBEDDER_VERSION, build_embedder
from inferstream.serving.supervisor import ScaleEvent, ScalePolicy, Supervisor, serve_command

PARTITIONS = 4
BASELINE_SHARE = 0.3  # of one copy's capacity
BURST_FACTOR = 10


@dataclass(frozen=True)
class Plan:
    """How long each phase lasts."""

    preload: int  # requests produced before the fixed run starts: one copy's capacity
    warmup: int  # requests produced before the autoscaled run starts: its copy is up before the baseline
    baseline_s: float
    burst_s: float
    recover_max_s: float  # give up waiting for the lag after this long
    settle_s: float  # after the lag is back, how long to wait for the autoscaler to scale down


QUICK = Plan(preload=80, warmup=8, baseline_s=2, burst_s=1, recover_max_s=10, settle_s=0)
FULL = Plan(preload=400, warmup=32, baseline_s=10, burst_s=10, recover_max_s=150, settle_s=30)


@dataclass
class Sample:
    """One second of a run."""

    t: float  # seconds since the baseline began
    phase: str
    rate: float
    lag: int
    embedded: int  # embeddings produced so far (duplicates included)
    replicas: int
    own_mb: float  # this process: the supervisor and the sender
    copies_mb: list[float]

    @property
    def total_mb(self) -> float:
        """Resident memory of the supervisor's process and all its copies."""
        return self.own_mb + sum(self.copies_mb)


@dataclass
class Run:
    """What one run measured."""

    name: str
    rate: float
    capacity: float | None = None  # one copy's requests/s, measured on the backlog produced up front
    samples: list[Sample] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)
    burst_end: float = 0.0
    requested: int = 0
    served: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0

    def baseline_level(self) -> int:
        """The highest lag sampled during the baseline, at least two seconds of the steady rate."""
        lags = [s.lag for s in self.samples if s.phase == "base"]
        return max([*lags, math.ceil(2 * self.rate)])

    def drain_s(self, level: int) -> float:
        """Seconds from the end of the burst to the first sample at or under ``level``."""
        after = [s for s in self.samples if s.t >= self.burst_end]
        back = next((s.t for s in after if s.lag <= level), None)
        return back - self.burst_end if back is not None else math.inf

    @property
    def peak_lag(self) -> int:
        """The highest lag sampled."""
        return max((s.lag for s in self.samples), default=0)

    @property
    def peak_replicas(self) -> int:
        """The most copies running at once."""
        return max((s.replicas for s in self.samples), default=0)

    @property
    def peak_total_mb(self) -> float:
        """The most resident memory, supervisor and copies together."""
        return max((s.total_mb for s in self.samples), default=0.0)

    @property
    def peak_copy_mb(self) -> float:
        """The most resident memory of any one copy."""
        return max((mb for s in self.samples for mb in s.copies_mb), default=0.0)

    @property
    def lost(self) -> int:
        """Requests with neither an embedding nor a dead letter."""
        missing = sum(1 for i in range(self.requested) if f"{self.name}{i}" not in self.served)
        return max(missing - self.dead_letters, 0)

    @property
    def duplicates(self) -> int:
        """Embeddings beyond the first of a request."""
        return sum(count - 1 for count in self.served.values())


# -- memory -----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def copy_pids() -> list[int]:
    """The worker copies this process started (the broker, also a child, is not one)."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The parent pid is the second field after the command name, which may hold spaces.
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == me and b"--supervisor" in cmdline:
            pids.append(int(entry.name))
    return pids


# -- load -------------------------------------------------------------------------------


class Sender:
    """Produces embedding requests at ``rate`` per second (changeable on the fly) from a thread."""

    def __init__(self, client: Client, topic: str, prefix: str) -> None:
        self.client = client
        self.topic = topic
        self.prefix = prefix
        self.rate = 0.0
        self.sent = 0
        self._texts = sample_texts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)

    def send(self, count: int) -> None:
        """Produce the next ``count`` requests now (acknowledged)."""
        with self._lock:
            first, self.sent = self.sent, self.sent + count
        texts = self._texts
        self.client.produce(
            self.topic,
            [
                {
                    "request_id": f"{self.prefix}{i}",
                    "model": EMBEDDER_NAME,
                    "version": EMBEDDER_VERSION,
                    "document_id": f"{self.prefix}{i}",  # the embeddings topic is keyed by it
                    "text": texts[i % len(texts)],
                }
                for i in range(first, first + count)
            ],
            schema="embedding-request",
        )

    def start(self) -> None:
        """Begin sending at ``rate``."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sending."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        due = float(self.sent)
        last = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            due += self.rate * (now - last)
            last = now
            if int(due) > self.sent:
                self.send(int(due) - self.sent)


# -- one run ----------------------------------------------------------------------------


def _run_settings(base: Settings, name: str) -> Settings:
    topics = base.topics.model_copy(update={"prefix": f"{base.topics.prefix}{name}.", "partitions": PARTITIONS})
    return base.model_copy(update={"topics": topics})


def run(base: Settings, name: str, plan: Plan, policy_of: Callable[[int], ScalePolicy], rate: float | None) -> Run:
    """One run: its own topics and group, a supervisor, the three phases; ``rate=None`` measures it first."""
    settings = _run_settings(base, name)
    assert settings.models_dir is not None
    # The copies read their topics' prefix and the model directory from the environment.
    os.environ["INFERSTREAM_TOPICS__PREFIX"] = settings.topics.prefix
    os.environ["INFERSTREAM_MODELS_DIR"] = str(settings.models_dir)
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        topic = client.topics.ensure_request_topic(EMBEDDER_NAME, EMBEDDER_VERSION)
        sender = Sender(client, topic, name)
        result = Run(name, rate or 0.0)
        upfront = plan.preload if rate is None else plan.warmup
        note(f"[{name}] {upfront} requests up front: the copy is serving before the baseline begins ...")
        sender.send(upfront)
        supervisor = Supervisor(
            settings,
            serve_command(None, settings.kafka.bootstrap_servers, f"{EMBEDDER_NAME}:{EMBEDDER_VERSION}"),
            topics=[topic],
            group_id=settings.topics.worker_group(EMBEDDER_NAME, EMBEDDER_VERSION),
            policy=policy_of(PARTITIONS),
            on_event=lambda e: note(f"[{name}] {e.replicas} copies: {e.reason} (lag {e.lag})"),
        )
        group_lag(supervisor)  # opens its lag reader here, before its thread shares it
        thread = threading.Thread(target=supervisor.run, name=f"supervisor-{name}", daemon=True)
        thread.start()
        try:
            result.capacity = _served(client, upfront)
            if rate is None:
                if result.capacity is None:
                    raise RuntimeError(f"could not measure one copy's capacity on {upfront} requests")
                result.rate = BASELINE_SHARE * result.capacity
            _phases(supervisor, sender, result, plan)
            sender.stop()
            _wait_drained(supervisor, 300)
        finally:
            sender.stop()
            supervisor.stop()
            thread.join(120)
        result.events = list(supervisor.events)
        result.requested = sender.sent
        note(f"[{name}] reading back the embeddings ...")
        result.served = Counter(
            (message.key() or b"").decode() for message in read_bounded(settings, client.topic("embeddings"))
        )
        result.dead_letters = sum(1 for _ in client.dead_letters())
    return result


def group_lag(supervisor: Supervisor) -> int:
    """The group's lag as the supervisor reads it; a broker still electing the group's coordinator is waited out."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return supervisor.group_lag()
        except confluent_kafka.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _served(client: Client, count: int) -> float | None:
    """Wait until ``count`` embeddings are out; requests/s from the first to the last, if measurable.

    Counted on the output topic, not from the lag: a copy commits what it has served
    only once each batch it took (up to several model batches) is done.
    """
    deadline = time.monotonic() + 300
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        done = embedded(client)
        now = time.monotonic()
        if first is None and done > 0:
            first = (now, done)  # the copy is up and serving
        if first is not None and done >= count:
            capacity = (done - first[1]) / (now - first[0]) if done > first[1] else None
            note(f"one copy served {count} requests" + (f": {capacity:.0f}/s" if capacity else ""))
            return capacity
        time.sleep(0.2)
    raise RuntimeError(f"the worker copies did not serve {count} requests in 300 s")


def embedded(client: Client) -> int:
    """Embeddings produced so far (duplicates included): the end offsets of the embeddings topic."""
    return sum(p.high for p in client.topics.describe(client.topic("embeddings"), with_config=False).partitions)


def _phases(supervisor: Supervisor, sender: Sender, result: Run, plan: Plan) -> None:
    rate = result.rate
    level: int | None = None
    started = time.monotonic()
    sender.rate = rate
    sender.start()
    note(f"[{result.name}] baseline {rate:.1f}/s for {plan.baseline_s:.0f} s ...")
    phase, phase_end = "base", plan.baseline_s
    calm = 0  # consecutive samples back at the baseline level
    back_at: float | None = None
    next_tick = started
    while True:
        next_tick += 1.0
        time.sleep(max(next_tick - time.monotonic(), 0))
        t = time.monotonic() - started
        if phase == "base" and t >= phase_end:
            level = result.baseline_level()
            phase, phase_end, sender.rate = "burst", t + plan.burst_s, rate * BURST_FACTOR
            note(f"[{result.name}] burst {sender.rate:.0f}/s for {plan.burst_s:.0f} s (baseline lag ≤ {level}) ...")
        elif phase == "burst" and t >= phase_end:
            phase, sender.rate, result.burst_end = "recover", rate, t
            note(f"[{result.name}] back to {rate:.1f}/s until the lag is back at its baseline level ...")
        pids = copy_pids()
        result.samples.append(
            Sample(
                t=t,
                phase=phase,
                rate=sender.rate,
                lag=group_lag(supervisor),
                embedded=embedded(sender.client),
                replicas=supervisor.running,
                own_mb=rss_mb(os.getpid()),
                copies_mb=[rss_mb(p) for p in pids],
            )
        )
        if phase != "recover":
            continue
        assert level is not None
        calm = calm + 1 if result.samples[-1].lag <= level else 0
        if calm == 2 and back_at is None:
            back_at = t
        policy = supervisor.policy
        settled = policy is None or supervisor.running <= policy.min_replicas
        if back_at is not None and (settled or t - back_at >= plan.settle_s):
            return  # back at the baseline, and the autoscaler scaled down (or had its time to)
        if t - result.burst_end >= plan.recover_max_s:
            note(f"[{result.name}] the lag is not back after {plan.recover_max_s:.0f} s")
            return


def _wait_drained(supervisor: Supervisor, limit_s: float) -> None:
    # Every request served and committed before the copies stop: what is left unserved then is lost.
    deadline = time.monotonic() + limit_s
    while group_lag(supervisor) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)


# -- report -----------------------------------------------------------------------------


def timeline(fixed: Run, auto: Run, rows: int) -> Table:
    """Both runs side by side, one row per sampled second (thinned to about ``rows``)."""
    length = max(len(fixed.samples), len(auto.samples))
    step = max(1, math.ceil(length / rows))
    table = Table(title="timeline (lag: requests the group has not committed; out/s: embeddings produced; MB: RSS)")
    columns = ("t s", "phase", "in/s", "fixed lag", "fixed out/s", "auto lag", "auto out/s", "auto copies", "auto MB")
    for column in columns:
        table.add_column(column, justify="right")

    def at(run: Run, i: int) -> tuple[str, str]:
        if i >= len(run.samples):
            return "", ""
        now, before = run.samples[i], run.samples[max(i - step, 0)]
        elapsed = now.t - before.t
        return str(now.lag), f"{(now.embedded - before.embedded) / elapsed:.0f}" if elapsed > 0 else ""

    for i in range(0, length, step):
        ref = auto.samples[i] if i < len(auto.samples) else fixed.samples[i]
        a = auto.samples[i] if i < len(auto.samples) else None
        table.add_row(
            f"{ref.t:.0f}",
            ref.phase,
            f"{ref.rate:.0f}",
            *at(fixed, i),
            *at(auto, i),
            str(a.replicas) if a else "",
            f"{a.total_mb:.0f}" if a else "",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument(
        "--max-replicas",
        type=int,
        default=min(PARTITIONS, os.cpu_count() or 1),
        help="Most copies when autoscaled (default: the CPU cores, at most the 4 partitions).",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        metavar="N",
        help="ONNX Runtime threads per copy (default: the model's setting, 0: as many as cores).",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="inferstream-models-") as models, broker(args.bootstrap_servers) as servers:
        build_embedder(Path(models))
        if args.intra_op_threads is not None:
            # Several copies each with a thread per core oversubscribe the CPU; this sets one count for all.
            toml = Path(models) / EMBEDDER_NAME / EMBEDDER_VERSION / "model.toml"
            setting = f"intra_op_threads = {args.intra_op_threads}"
            toml.write_text(re.sub(r"(?m)^intra_op_threads = \d+$", setting, toml.read_text()))
        with bench_client(servers) as client:
            base = client.settings.model_copy(update={"models_dir": Path(models)})
            fixed = run(base, "fixed", plan, lambda _: ScalePolicy(min_replicas=1, max_replicas=1), None)
            scale_down = fixed.baseline_level()

            # Sized from the fixed run: more copies once the backlog holds three seconds of one
            # copy's work (and twice the baseline lag), fewer once it is back at the baseline level.
            scale_up = max(2 * scale_down, math.ceil(3 * (fixed.capacity or 0)))

            def autoscale(partitions: int) -> ScalePolicy:
                return ScalePolicy(
                    min_replicas=1,
                    max_replicas=min(args.max_replicas, partitions),
                    scale_up_lag=scale_up,
                    scale_down_lag=scale_down,
                    drained_samples=3,
                    interval_s=1.0,
                )

            auto = run(base, "auto", plan, autoscale, fixed.rate)
    level = max(fixed.baseline_level(), auto.baseline_level())
    fixed_drain, auto_drain = fixed.drain_s(level), auto.drain_s(level)
    speedup = fixed_drain / auto_drain if auto_drain > 0 else math.inf
    console = Console()
    console.print(timeline(fixed, auto, rows=30 if args.quick else 60))
    summary = Table(title=f"10x burst on {EMBEDDER_NAME}:{EMBEDDER_VERSION} ({'quick' if args.quick else 'full'})")
    for column in ("run", "peak lag", "drain s", "peak copies", "peak RSS MB", "peak RSS/copy MB", "lost", "dups"):
        summary.add_column(column, justify="right")
    for r, drain in ((fixed, fixed_drain), (auto, auto_drain)):
        summary.add_row(
            r.name,
            str(r.peak_lag),
            f"{drain:.0f}",
            str(r.peak_replicas),
            f"{r.peak_total_mb:.0f}",
            f"{r.peak_copy_mb:.0f}",
            str(r.lost),
            str(r.duplicates),
        )
    console.print(summary)
    print(
        f"steady {fixed.rate:.1f}/s ({BASELINE_SHARE:.0%} of one copy), burst {fixed.rate * BURST_FACTOR:.0f}/s for "
        f"{plan.burst_s:.0f} s; baseline lag level {level}; drain {auto_drain:.0f} s autoscaled against "
        f"{fixed_drain:.0f} s with one copy (speedup {speedup:.2f}); {os.cpu_count()} CPU cores"
    )
    capacities = ", ".join(f"{r.name} run {r.capacity:.0f}/s" for r in (fixed, auto) if r.capacity)
    print(f"one copy serves (measured up front): {capacities}; autoscale up over lag {scale_up}, down at {scale_down}")
    print(
        f"scale events: {' → '.join(f'{e.replicas} ({e.reason})' for e in auto.events)}; "
        f"{auto.requested} + {fixed.requested} requests, {auto.dead_letters + fixed.dead_letters} dead letters"
    )
    metrics: dict[str, Any] = {
        "peak_lag": auto.peak_lag,
        "drain_s": auto_drain,
        "fixed_drain_s": fixed_drain,
        "speedup": speedup,
        "peak_replicas": auto.peak_replicas,
        "peak_rss_mb": auto.peak_total_mb,
        "peak_rss_copy_mb": auto.peak_copy_mb,
        "lost": auto.lost + fixed.lost,
        "duplicates": auto.duplicates + fixed.duplicates,
    }
    print(result_line(metrics))


if __name__ == "__main__":
    main()
