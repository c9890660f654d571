"""The metric sets of serving processes: inference per model version, and the autoscale supervisor.

Names mirror Triton's where Triton has the same thing, in seconds rather than
microseconds and as histograms rather than cumulative counters, as Prometheus
prefers:

=====================================================  ==========================================
inferstream                                            Triton
=====================================================  ==========================================
``inference_requests_total{model,version,outcome}``    ``nv_inference_request_success`` / ``_failure``
``inference_count_total{model,version}``               ``nv_inference_count``
``inference_exec_count_total{model,version}``          ``nv_inference_exec_count``
``inference_queue_seconds{model,version}``             ``nv_inference_queue_duration_us``
``inference_compute_seconds{model,version}``           ``nv_inference_compute_infer_duration_us``
``inference_request_seconds{model,version}``           ``nv_inference_request_duration_us``
=====================================================  ==========================================

The worker updates them once per batch (:class:`ModelMetrics`): per-request latencies
go to a :class:`~inferstream.metrics.BulkHistogram` as one list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from inferstream.metrics import LATENCY_BUCKETS, BulkChild, BulkHistogram, Metrics

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class InferenceMetrics:
    """Requests, inferences and their latencies per model and version (one set per registry)."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg, labels = metrics.namespace, metrics.registry, ("model", "version")
        self.requests = Counter(
            "inference_requests",
            "Requests a worker is done with: success (a prediction or embedding written) or failure (dead-lettered).",
            [*labels, "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.count = Counter(
            "inference_count", "Rows run through the model (a columnar request counts its rows).", labels,
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.exec_count = Counter(
            "inference_exec_count", "Model executions (batches).", labels, namespace=ns, registry=reg
        )
        self.queue = BulkHistogram(
            "inference_queue_seconds",
            "Per request: from consumed by the worker to its batch starting.",
            labels,
            LATENCY_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.compute = BulkHistogram(
            "inference_compute_seconds",
            "Per model execution: the model's run on one batch.",
            labels,
            LATENCY_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.request = BulkHistogram(
            "inference_request_seconds",
            "Per request: from its event time to its prediction (end to end).",
            labels,
            LATENCY_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.batch_size = BulkHistogram(
            "inference_batch_size",
            "Rows per model execution.",
            labels,
            _BATCH_BUCKETS,
            namespace=ns,
            registry=reg,
        )

    def bind(self, model: str, version: str) -> ModelMetrics:
        """The children of one model version (look them up once, not per batch)."""
        return ModelMetrics(
            success=self.requests.labels(model, version, "success"),
            failure=self.requests.labels(model, version, "failure"),
            count=self.count.labels(model, version),
            exec_count=self.exec_count.labels(model, version),
            queue=self.queue.labels(model, version),
            compute=self.compute.labels(model, version),
            request=self.request.labels(model, version),
            batch_size=self.batch_size.labels(model, version),
        )


@dataclass(frozen=True)
class ModelMetrics:
    """One model version's inference metrics, updated once per batch."""

    success: Counter
    failure: Counter
    count: Counter
    exec_count: Counter
    queue: BulkChild
    compute: BulkChild
    request: BulkChild
    batch_size: BulkChild

    def executed(self, rows: int, seconds: float) -> None:
        """One model execution over ``rows`` rows."""
        self.exec_count.inc()
        self.count.inc(rows)
        self.batch_size.observe(rows)
        self.compute.observe(seconds)

    def served(self, count: int) -> None:
        """Requests answered with a prediction or embedding."""
        self.success.inc(count)

    def failed(self) -> None:
        """A request dead-lettered."""
        self.failure.inc()

    def latencies(self, queue_s: Sequence[float], request_s: Sequence[float]) -> None:
        """Queue and end-to-end times of a batch's requests (one list each, one call per batch)."""
        if queue_s:
            self.queue.observe_many(queue_s)
        if request_s:
            self.request.observe_many(request_s)


class SupervisorMetrics:
    """The autoscale supervisor's copies, its group's lag and its decisions (one set per registry)."""

    def __init__(self, metrics: Metrics) -> None:
        ns, reg = metrics.namespace, metrics.registry
        self.replicas = Gauge(
            "supervisor_replicas", "Worker processes running (not on their way out).", ["group"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.lag = Gauge(
            "supervisor_lag", "Requests the group has not committed, over every partition (autoscale only).",
            ["group"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.scale_events = Counter(
            "supervisor_scale_events", "Copies added (up) or removed (down) by the autoscaler.",
            ["group", "direction"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.restarts = Counter(
            "supervisor_restarts", "Copies that exited on their own and were started again.", ["group"],
            namespace=ns, registry=reg,
        )  # fmt: skip
