"""Prometheus metrics every long-running inferstream process exports on 127.0.0.1.

- :mod:`._core`: :class:`Metrics`, one registry per process with the metrics every
  stage shares (records in/out, dead letters, consumer lag, ...), and its metric sets:
  the families one kind of process adds (``metrics.part(InferenceMetrics)``);
- :mod:`._bulk`: :class:`BulkHistogram`, a histogram that takes a batch of observations
  in one call (per-request latencies on the hot path);
- :mod:`._http`: the loopback check and the warning when metrics are served beyond it.

``docs/metrics.md`` lists every metric, its labels and the processes exporting it.
"""

from inferstream.metrics._bulk import BulkChild, BulkHistogram
from inferstream.metrics._core import LATENCY_BUCKETS, Metrics
from inferstream.metrics._http import is_loopback, warn_if_exposed

__all__ = ["LATENCY_BUCKETS", "BulkChild", "BulkHistogram", "Metrics", "is_loopback", "warn_if_exposed"]
