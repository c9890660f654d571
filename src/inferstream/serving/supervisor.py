"""Worker processes for one model version: a fixed number, or as many as the lag needs.

Each copy is an ``inferstream serve`` process (one ONNX session each) in the version's
consumer group, so Kafka shares the partitions among them. With autoscaling the
supervisor reads the group's lag (committed offsets against end offsets, without
joining the group) every few seconds: it adds a copy while the lag is high and not
shrinking, and removes one (SIGTERM: it finishes the batch in hand and commits) after
the lag stayed low for a while, between one copy and the partition count. A copy
that dies is started again; a copy whose supervisor dies stops by itself.

With ``metrics_port`` set, the supervisor's own metrics go on that port (the caller
serves them) and copy N exports its own on ``metrics_port + 1 + N``; without it the
copies export nothing, whatever ``metrics.port`` says (they would all want one port).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.metrics import Metrics
from inferstream.serving.metrics import SupervisorMetrics

log = logging.getLogger("inferstream.supervisor")


@dataclass(frozen=True)
class ScalePolicy:
    """When the supervisor adds or removes a copy."""

    min_replicas: int = 1
    max_replicas: int = 4
    #: Lag (requests behind) above which another copy is added, while it is not shrinking.
    scale_up_lag: int = 1000
    #: Lag at or under which the group counts as drained.
    scale_down_lag: int = 10
    #: Consecutive drained samples before a copy is removed.
    drained_samples: int = 3
    interval_s: float = 2.0


@dataclass
class ScaleEvent:
    """One change of the number of copies, and why."""

    at: float
    replicas: int
    lag: int
    reason: str


@dataclass
class _Copy:
    instance: int
    process: subprocess.Popen[bytes]
    stopping: bool = False


@dataclass
class Supervisor:
    """Runs and scales the worker processes of one model version."""

    settings: Settings
    command: Sequence[str]  # the serve command of one copy, without --instance
    topics: Sequence[str]  # the request topics the group reads
    group_id: str
    replicas: int = 1
    policy: ScalePolicy | None = None  # None: a fixed number of copies
    on_event: Callable[[ScaleEvent], None] | None = None
    events: list[ScaleEvent] = field(default_factory=list)
    metrics: Metrics | None = None
    #: The supervisor's metrics port: copy N exports on this + 1 + N (0: the copies export none).
    metrics_port: int = 0

    def __post_init__(self) -> None:
        self.metrics = self.metrics or Metrics(namespace=self.settings.metrics.namespace)
        part = self.metrics.part(SupervisorMetrics)
        self._replicas_gauge = part.replicas.labels(self.group_id)
        self._lag_gauge = part.lag.labels(self.group_id)
        self._scaled_up = part.scale_events.labels(self.group_id, "up")
        self._scaled_down = part.scale_events.labels(self.group_id, "down")
        self._restarts = part.restarts.labels(self.group_id)
        self._copies: list[_Copy] = []
        self._stop = threading.Event()
        self._lag_reader: confluent_kafka.Consumer | None = None
        self.lag = 0

    # -- copies -----------------------------------------------------------------------

    def _start_copy(self) -> None:
        used = {c.instance for c in self._copies}
        instance = next(i for i in range(len(used) + 1) if i not in used)
        port = self.metrics_port + 1 + instance if self.metrics_port else 0
        command = [
            *self.command,
            *("--instance", str(instance), "--supervisor", str(os.getpid()), "--metrics-port", str(port)),
        ]
        process = subprocess.Popen(command, env=os.environ.copy())
        self._copies.append(_Copy(instance, process))

    def _stop_copy(self) -> None:
        live = [c for c in self._copies if not c.stopping]
        if len(live) <= 1:
            return
        newest = max(live, key=lambda c: c.instance)
        newest.stopping = True
        newest.process.send_signal(signal.SIGTERM)

    @property
    def running(self) -> int:
        """Copies running (not on their way out)."""
        return sum(1 for c in self._copies if not c.stopping)

    def _reap(self) -> None:
        for copy in list(self._copies):
            code = copy.process.poll()
            if code is None:
                continue
            self._copies.remove(copy)
            if not copy.stopping and not self._stop.is_set():
                log.warning("worker copy %d exited with %d; starting it again", copy.instance, code)
                self._restarts.inc()
                time.sleep(1.0)
                self._start_copy()
        self._replicas_gauge.set(self.running)

    # -- lag --------------------------------------------------------------------------

    def group_lag(self) -> int:
        """Requests the group has not committed yet, over all partitions of its topics."""
        if self._lag_reader is None:
            self._lag_reader = confluent_kafka.Consumer(
                {**self.settings.kafka.base_config(), "group.id": self.group_id, "enable.auto.commit": False}
            )
        reader = self._lag_reader
        parts: list[TopicPartition] = []
        for topic in self.topics:
            metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is not None and metadata.error is None:
                parts += [TopicPartition(topic, p) for p in metadata.partitions]
        total = 0
        assert self.metrics is not None
        for tp in reader.committed(parts, timeout=10):
            low, high = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            lag = max(high - (tp.offset if tp.offset >= 0 else low), 0)
            self.metrics.consumer_lag.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)
            total += lag
        self._lag_gauge.set(total)
        return total

    def partitions(self) -> int:
        """Partitions of the request topics: more copies than this would sit idle."""
        if self._lag_reader is None:
            self.group_lag()
        assert self._lag_reader is not None
        count = 0
        for topic in self.topics:
            metadata = self._lag_reader.list_topics(topic, timeout=10).topics.get(topic)
            count += len(metadata.partitions) if metadata is not None else 0
        return max(count, 1)

    def _scale(self, history: list[int]) -> None:
        policy = self.policy
        assert policy is not None
        lag = history[-1]
        ceiling = min(policy.max_replicas, self.partitions())
        # The trend needs two samples since the last change: a copy just added has not had
        # its effect yet, and one more on the next sample alone would ramp to the ceiling.
        growing = len(history) >= 2 and lag >= history[-2]
        if lag > policy.scale_up_lag and growing and self.running < ceiling:
            self._start_copy()
            self._scaled_up.inc()
            self._record(lag, f"lag {lag} > {policy.scale_up_lag} and not shrinking")
            history.clear()
        elif (
            len(history) >= policy.drained_samples
            and all(v <= policy.scale_down_lag for v in history[-policy.drained_samples :])
            and self.running > policy.min_replicas
        ):
            self._stop_copy()
            self._scaled_down.inc()
            self._record(lag, f"lag ≤ {policy.scale_down_lag} for {policy.drained_samples} samples")
            history.clear()

    def _record(self, lag: int, reason: str) -> None:
        event = ScaleEvent(at=time.time(), replicas=self.running, lag=lag, reason=reason)
        self._replicas_gauge.set(event.replicas)
        self.events.append(event)
        log.info("%d copies: %s", event.replicas, reason)
        if self.on_event is not None:
            self.on_event(event)

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        """Start the copies and watch them until ``stop()``; the worst exit status of the copies."""
        start = self.policy.min_replicas if self.policy else self.replicas
        for _ in range(start):
            self._start_copy()
        self._record(0, "started")
        history: list[int] = []
        interval = self.policy.interval_s if self.policy else 1.0
        try:
            while not self._stop.wait(interval):
                self._reap()
                if self.policy is None:
                    continue
                try:
                    self.lag = self.group_lag()
                except confluent_kafka.KafkaException as exc:
                    log.warning("could not read the lag of %s: %s", self.group_id, exc)
                    continue
                history = [*history[-9:], self.lag]
                self._scale(history)
        finally:
            codes = self._shutdown()
            if self._lag_reader is not None:
                self._lag_reader.close()
        return max(codes, key=abs, default=0)

    def stop(self, *_: Any) -> None:
        """Stop every copy (each finishes the batch in hand and commits)."""
        self._stop.set()

    def _shutdown(self) -> list[int]:
        for copy in self._copies:
            if copy.process.poll() is None:
                copy.process.send_signal(signal.SIGTERM)
        codes = []
        for copy in self._copies:
            try:
                codes.append(copy.process.wait(60))
            except subprocess.TimeoutExpired:
                copy.process.kill()
                codes.append(copy.process.wait())
        return [0 if c == -signal.SIGTERM else c for c in codes]


def threads_per_copy(configured: int, copies: int, cpus: int | None = None) -> int | None:
    """ONNX Runtime intra-op threads for each of ``copies`` processes on this machine.

    None keeps a model's own setting; a model that leaves it to ONNX Runtime (0) would
    start as many threads as cores in every copy, so the copies share the CPUs instead.
    """
    if configured > 0:
        return None
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // max(1, copies))


def serve_command(config_file: str | None, bootstrap_servers: str | None, ref: str, *extra: str) -> list[str]:
    """The command line of one worker copy."""
    args = [sys.executable, "-m", "inferstream"]
    if config_file:
        args += ["--config", config_file]
    if bootstrap_servers:
        args += ["--bootstrap-servers", bootstrap_servers]
    return [*args, "serve", "--model", ref, *extra]
