"""OpenTelemetry spans of this process, exported over OTLP/HTTP when ``tracing.enabled``.

Off by default: then :func:`spans_for` returns None without importing OpenTelemetry, and
the only tracing work left is carrying ``traceparent`` headers (:mod:`._context`).

On, each process has one ``TracerProvider`` (service name, a parent-based sampler with
``tracing.sample_ratio`` for new traces, a batching span processor, the OTLP exporter).
Spans:

- the gateway: one ``SERVER`` span per HTTP request, the child of its ``traceparent``;
- a worker: one ``CONSUMER`` span per batch (``serve <model>:<version>``), the child of
  the first sampled request's context and linked to the other sampled requests' (up to 32,
  see ``_MAX_LINKS``), with children
  ``batch wait`` (oldest request read → batch taken), ``inference`` (each model run) and
  ``produce`` (outputs built and queued). The outputs of a request in the batch span's trace
  carry the batch span as their parent; the others keep their request's parent (one span per
  batch, not per record: what batching systems do, since a span costs ~10 µs);
- the ingest processor: one ``CONSUMER`` span per event (``ingest <events topic>``: decoded,
  routed, its requests queued), the child of the event's ``traceparent``; an event without one
  starts a trace there. Its requests name the span as their parent (:meth:`Spans.record`);
- the inference-table sink: one ``CONSUMER`` span per write (``table <predictions topic>``),
  a batch of the records it writes, with children ``batch wait`` (oldest record read → write)
  and ``write`` (files written and renamed into place).

What each output carries is one rule for every stage: :func:`carried`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inferstream.config import TracingSettings
from inferstream.errors import ConfigError
from inferstream.tracing._context import TraceParent, valid

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

_lock = threading.Lock()
_provider: TracerProvider | None = None
#: Links of a batch's span to its other sampled requests, at most (OpenTelemetry's own limit is
#: 128): a link costs ~3 µs (the SDK gives each its own attribute set and lock), 128 of them a
#: full batch of 256 another 0.1 of the worker's throughput. A request not linked keeps its own
#: parent on its outputs, so its trace stays connected without the batch's span.
_MAX_LINKS = 32
# The trace flags of a header's last two digits (almost always 00 or 01), made once.
_flags: dict[bytes, Any] = {}


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for this process's spans (tests and benchmarks: an in-memory exporter); None: forget it."""
    global _provider
    with _lock:
        _provider = provider


def new_provider(settings: TracingSettings, service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider as ``tracing`` says: service name, sampler, span limits, batching; OTLP unless ``exporter``."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise ConfigError(
            f"tracing.enabled needs OpenTelemetry ({exc.name} is missing): "
            "pip install 'inferstream[tracing]', or set INFERSTREAM_TRACING__ENABLED=false"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name or service}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        span_limits=SpanLimits(max_links=_MAX_LINKS),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    return provider


def _configured(settings: TracingSettings, service: str) -> TracerProvider:
    global _provider
    with _lock:
        if _provider is None:
            _provider = new_provider(settings, service)
        return _provider


def spans_for(settings: TracingSettings, service: str) -> Spans | None:
    """This process's spans when tracing is on, else None (and OpenTelemetry is not imported)."""
    if not settings.enabled:
        return None
    return Spans(_configured(settings, service))


def flush(timeout_ms: int = 5000) -> None:
    """Export the spans ended so far (at exit, and in tests before reading an exporter)."""
    provider = _provider
    if provider is not None:
        provider.force_flush(timeout_ms)


def _otel_context(parent: TraceParent) -> Any:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    span_context = SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), True, TraceFlags(parent.flags))
    return set_span_in_context(NonRecordingSpan(span_context))


def carried(batch: Batch | None, raw: bytes | None) -> bytes | None:
    """The ``traceparent`` the outputs of a record carry, given its raw header (None: carry none).

    The one rule for every stage: with a span (``batch``), as :meth:`Batch.output` says; without
    (tracing off), the record's own header when it is valid. Never raises on hostile bytes.
    """
    return batch.output(raw) if batch is not None else valid(raw)


def traceparent_of(span: Span) -> TraceParent:
    """A span's own context as a ``traceparent`` (for what is sent in its name)."""
    context = span.get_span_context()
    return TraceParent(f"{context.trace_id:032x}", f"{context.span_id:016x}", int(context.trace_flags))


class Spans:
    """Starts this process's spans: a tracer over the process's provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("inferstream")
        # Monotonic seconds (how the worker times) → the epoch nanoseconds spans are stamped with.
        self._epoch_ns = time.time_ns() - time.monotonic_ns()

    def ns(self, monotonic_s: float) -> int:
        """Epoch nanoseconds of a ``time.monotonic()`` reading."""
        return int(monotonic_s * 1e9) + self._epoch_ns

    def request(self, name: str, parent: TraceParent | None, attributes: dict[str, Any] | None = None) -> Span:
        """A ``SERVER`` span of one HTTP request, the child of the caller's ``traceparent`` (if any)."""
        from opentelemetry.trace import SpanKind

        context = _otel_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=context, kind=SpanKind.SERVER, attributes=attributes)

    def batch(self, name: str, traces: Sequence[bytes | None], started: float, attributes: dict[str, Any]) -> Batch:
        """The span of one batch: ``traces`` are its requests' raw ``traceparent`` values (None: none)."""
        return Batch(self, name, traces, started, attributes)

    def record(self, name: str, trace: bytes | None, started: float, attributes: dict[str, Any]) -> Batch:
        """The span of one record (its raw ``traceparent``, or None): a batch of one that starts a trace.

        Unlike a batch's, the outputs of a record without a (valid) ``traceparent`` carry this
        span, when it is recorded: the record's trace starts here.
        """
        return Batch(self, name, (trace,), started, attributes, origin=True)


class Batch:
    """One batch's span and its children; says what ``traceparent`` each output carries."""

    def __init__(
        self,
        spans: Spans,
        name: str,
        traces: Sequence[bytes | None],
        started: float,
        attributes: dict[str, Any],
        *,
        origin: bool = False,
    ) -> None:
        from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

        self._spans = spans
        parent: TraceParent | None = None
        links: list[Link] = []
        # The span's parent (the first sampled request) and links (the next ones): only as many
        # requests are looked at as that takes. What each request's outputs carry is worked out
        # when they are written (``output``): one check of each header, not two.
        seen: set[bytes] = set()
        for raw in traces:
            if raw is None or raw in seen:
                continue
            seen.add(raw)
            header = valid(raw)
            if header is None:
                continue
            flags = _flags.get(header[53:55])
            if flags is None:
                flags = _flags[header[53:55]] = TraceFlags(int(header[53:55], 16))
            # (A record of its own keeps an unsampled parent too: the sampler then records nothing.)
            if parent is None and (flags & 1 or origin):
                parent = TraceParent(header[3:35].decode(), header[36:52].decode(), flags)
                continue
            if flags & 1:  # (a link to what nobody records leads nowhere)
                links.append(Link(SpanContext(int(header[3:35], 16), int(header[36:52], 16), True, flags)))
                if len(links) == _MAX_LINKS:  # (links come after the parent: the span has all it takes)
                    break
        context = _otel_context(parent) if parent is not None else None
        self.span = spans.tracer.start_span(
            name,
            context=context,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
            start_time=spans.ns(started),
        )
        own = self.span.get_span_context()
        child = f"00-{own.trace_id:032x}-{own.span_id:016x}-{int(own.trace_flags):02x}".encode("ascii")
        # The outputs of a request in the batch span's trace carry the span, when it is recorded (a
        # parent nobody exported would cut the trace); b"" matches no header's trace id.
        recorded = self.span.is_recording()
        self._trace_id = f"{own.trace_id:032x}".encode("ascii") if recorded else b""
        self._child = child
        # What the outputs of a record with no valid traceparent carry: nothing, or (origin) this span.
        self._origin = child if origin and recorded else None
        from opentelemetry.trace import set_span_in_context

        self._context = set_span_in_context(self.span)

    def child(self, name: str, start: float, end: float) -> None:
        """A finished child span of the batch (monotonic seconds)."""
        span = self._spans.tracer.start_span(name, context=self._context, start_time=self._spans.ns(start))
        span.end(self._spans.ns(end))

    def output(self, raw: bytes | None) -> bytes | None:
        """The ``traceparent`` of a request's outputs: the batch span's when in its trace, else the request's own."""
        header = valid(raw)
        if header is None:
            return self._origin
        return self._child if header[3:35] == self._trace_id else header

    def fail(self, error: BaseException) -> None:
        """Mark the span failed by ``error`` (a record dead-lettered): its class and message."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.span.set_attribute("error.type", type(error).__name__)

    def end(self, at: float | None = None) -> None:
        """End the batch's span (now, or at monotonic ``at``)."""
        self.span.end(self._spans.ns(at) if at is not None else None)
