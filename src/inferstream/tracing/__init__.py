"""Traces across processes: W3C ``traceparent`` in Kafka headers, OpenTelemetry spans when enabled.

One request is one trace: the SDK or the gateway gives each request a ``traceparent``
header (the caller's, or a new trace), the ingest processor copies an event's onto the
requests it routes, and workers write one on every output (predictions, replies, the next
chain step's requests), which the inference table keeps as its ``trace_id`` column.
:mod:`._context` parses and formats the header (no OpenTelemetry needed);
:mod:`._otel` records spans and exports them over OTLP when ``tracing.enabled`` is set.
"""

from inferstream.tracing._context import (
    TRACEPARENT,
    TraceParent,
    current,
    header_of,
    new_span_id,
    new_trace,
    outgoing,
    parse,
    use,
    valid,
)
from inferstream.tracing._otel import Batch, Spans, carried, flush, install, new_provider, spans_for, traceparent_of

__all__ = [
    "TRACEPARENT",
    "Batch",
    "Spans",
    "TraceParent",
    "carried",
    "current",
    "flush",
    "header_of",
    "install",
    "new_provider",
    "new_span_id",
    "new_trace",
    "outgoing",
    "parse",
    "spans_for",
    "traceparent_of",
    "use",
    "valid",
]
