"""The registry of one process: the metrics every stage shares, and the sets a kind of process adds.

One registry per process (``Metrics``), created explicitly: nothing registers at
import time, so tests and several pipelines in one process do not collide.
Names are stable snake_case: ``inferstream_records_in_total{topic,stage}``, ...
A kind of process adds its own families as a metric set, a class taking the
``Metrics`` it registers on: ``metrics.part(InferenceMetrics)`` creates it once per
registry (several workers of a chain share one).

Every stage reconciles in its metrics: the records it consumed
(``records_in_total{stage}``) are the records it handled,
``records_handled_total{stage,outcome}`` with outcome ``out`` (served, routed, written),
``dead_letter``, ``skipped`` (already written before a restart) or ``invalid`` (counted in
a monitor's window instead), once nothing is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from inferstream.metrics._http import warn_if_exposed

_Part = TypeVar("_Part")

#: Latency buckets in seconds (half a millisecond to a minute) for every latency histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Metrics:
    """The counters, gauges and histograms of one process."""

    namespace: str = "inferstream"
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    records_in: Counter = field(init=False)
    records_out: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    records_handled: Counter = field(init=False)
    delivery_errors: Counter = field(init=False)
    consumer_lag: Gauge = field(init=False)
    batch_size: Histogram = field(init=False)
    stage_seconds: Histogram = field(init=False)
    _server: Any = field(default=None, init=False, repr=False)
    _parts: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)
    _parts_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        ns, reg = self.namespace, self.registry
        self.records_in = Counter("records_in", "Records consumed.", ["topic", "stage"], namespace=ns, registry=reg)
        self.records_out = Counter(
            "records_out", "Records produced and acknowledged.", ["topic", "stage"], namespace=ns, registry=reg
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Records sent to the dead-letter topic.",
            ["source_topic", "stage", "error_class"],
            namespace=ns,
            registry=reg,
        )
        self.records_handled = Counter(
            "records_handled",
            "Consumed records a stage is done with, by outcome (out, dead_letter, skipped, invalid).",
            ["stage", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.delivery_errors = Counter(
            "delivery_errors",
            "Produced records the broker did not acknowledge.",
            ["topic", "code"],
            namespace=ns,
            registry=reg,
        )
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Messages behind the end of the partition.",
            ["group", "topic", "partition"],
            namespace=ns,
            registry=reg,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Records per processed batch.",
            ["stage"],
            namespace=ns,
            registry=reg,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self.stage_seconds = Histogram(
            "stage_seconds",
            "Time spent per batch in a stage (queue, compute, produce, ...).",
            ["stage", "step"],
            namespace=ns,
            registry=reg,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def handled(self, stage: str, outcome: str, count: int = 1) -> None:
        """Count records ``stage`` is done with (``out``, ``dead_letter``, ``skipped``, ``invalid``)."""
        if count:
            self.records_handled.labels(stage, outcome).inc(count)

    def part(self, kind: Callable[[Metrics], _Part]) -> _Part:
        """The metric set ``kind`` on this registry, created on first use (one per registry)."""
        with self._parts_lock:
            found = self._parts.get(kind)
            if found is None:
                found = self._parts[kind] = kind(self)
            return found

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Export on http://host:port/metrics (loopback by default, a loud warning beyond); the bound port."""
        if self._server is None:
            warn_if_exposed(host, port)
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop exporting."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
