"""Trace propagation: the W3C ``traceparent`` header read strictly, written as version 00, carried on."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferstream import tracing
from inferstream.config import TracingSettings
from inferstream.gateway._state import Gateway
from inferstream.gateway._trace import Trace
from inferstream.tracing import TRACEPARENT, TraceParent, header_of, new_trace, outgoing, parse, use, valid

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01".encode()


def test_a_valid_header_parses_and_formats_back() -> None:
    parent = parse(GOOD)
    assert parent == TraceParent(TRACE, SPAN, 1)
    assert parent.sampled
    assert parent.header == GOOD
    assert parse(GOOD.decode()) == parent
    assert valid(GOOD) is GOOD  # the hot path keeps the bytes it was given
    assert not TraceParent(TRACE, SPAN, 0).sampled


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"00",
        GOOD[:-1],  # too short
        GOOD + b"0",  # version 00 is exactly 55 characters
        GOOD + b"-x",  # only a later version may carry more fields
        GOOD.upper(),  # hex digits are lowercase
        f"00-{'0' * 32}-{SPAN}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01".encode(),  # version ff is forbidden
        f"00_{TRACE}-{SPAN}-01".encode(),
        f"00-{TRACE}-{SPAN}-0g".encode(),
        f"00-{TRACE[:-1]}z-{SPAN}-01".encode(),
        b" " + GOOD[1:],
        b"\xff\xfe" + GOOD[2:],  # not UTF-8
        "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",  # not ASCII
        b"00-" + b"a" * 10_000,  # hostile length
        b"\x00" * 55,
    ],
)
def test_a_malformed_header_is_no_trace(value: Any) -> None:
    assert parse(value) is None
    assert valid(value) is None


def test_a_later_version_is_read_as_version_00() -> None:
    later = f"01-{TRACE}-{SPAN}-01".encode()
    assert valid(later) == GOOD
    assert valid(later + b"-what-comes-next") == GOOD


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_ignored_never_raise(value: bytes) -> None:
    parent = parse(value)
    assert parent is None or parse(parent.header) == parent


@given(st.text(max_size=80))
def test_any_text_parses_or_is_ignored_never_raises(value: str) -> None:
    parse(value)


def test_header_of_finds_the_raw_value_among_record_headers() -> None:
    assert header_of(None) is None
    assert header_of([("inferstream-schema", b"prediction/1")]) is None
    assert header_of([("inferstream-schema", b"prediction/1"), (TRACEPARENT, GOOD)]) == GOOD
    assert header_of([(TRACEPARENT, None)]) is None


def test_new_traces_and_children_keep_the_trace() -> None:
    first, second = new_trace(), new_trace(sampled=False)
    assert first.trace_id != second.trace_id
    assert len(first.trace_id) == 32
    assert len(first.span_id) == 16
    assert parse(first.header) == first
    assert not second.sampled
    child = first.child()
    assert child.trace_id == first.trace_id
    assert child.span_id != first.span_id
    assert child.flags == first.flags


def test_outgoing_requests_are_children_of_the_current_trace_else_a_new_one() -> None:
    parent = TraceParent(TRACE, SPAN, 1)
    with use(parent):
        assert outgoing() == parent
    fresh = outgoing()
    assert fresh.trace_id != TRACE
    assert fresh.sampled
    assert not outgoing(sample_ratio=0.0).sampled


def test_the_callers_opentelemetry_span_is_the_parent() -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("caller") as span:
        context = span.get_span_context()
        sent = outgoing()
    assert sent.trace_id == f"{context.trace_id:032x}"
    assert sent.span_id == f"{context.span_id:016x}"


def test_tracing_off_starts_no_spans() -> None:
    assert tracing.spans_for(TracingSettings(), "test") is None


def test_a_batch_span_is_the_child_of_its_first_sampled_request_and_links_the_other_sampled_ones(exporter: Any) -> None:
    spans = tracing.spans_for(TracingSettings(enabled=True), "test")
    assert spans is not None
    other = new_trace()
    unsampled = f"00-{'1' * 32}-{SPAN}-00".encode()
    batch = spans.batch("serve m:1", [None, b"garbage", unsampled, GOOD, other.header], 0.0, {"k": "v"})
    batch.child("inference", 1.0, 2.0)
    ours = batch.output(GOOD)
    assert ours is not None
    assert ours != GOOD
    assert batch.output(other.header) == other.header  # another trace keeps its parent
    assert batch.output(b"garbage") is None
    assert batch.output(None) is None
    batch.end()
    finished = {span.name: span for span in exporter.get_finished_spans()}
    serve, inference = finished["serve m:1"], finished["inference"]
    assert f"{serve.context.trace_id:032x}" == TRACE
    assert f"{serve.parent.span_id:016x}" == SPAN
    # Linked: the other sampled request (one nobody records would be a link to nothing).
    assert [f"{link.context.trace_id:032x}" for link in serve.links] == [other.trace_id]
    assert batch.output(unsampled) == unsampled
    assert inference.parent.span_id == serve.context.span_id
    assert parse(ours) == TraceParent(TRACE, f"{serve.context.span_id:016x}", 1)


def _http(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/models/m/predict", "headers": headers}


async def _call(middleware: Trace, scope: dict[str, Any]) -> list[Any]:
    seen: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        seen.append(message)

    await middleware(scope, receive, send)
    return seen


def test_the_gateway_takes_the_callers_traceparent_else_starts_a_trace_per_request() -> None:
    current: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current.append(tracing.current())
        await send({"type": "http.response.start", "status": 200})

    middleware = Trace(app, None)
    asyncio.run(_call(middleware, _http([(b"traceparent", GOOD)])))
    asyncio.run(_call(middleware, _http([(b"traceparent", b"\xff" * 55)])))
    asyncio.run(_call(middleware, _http([])))
    asyncio.run(_call(Trace(app, None, sample_ratio=0.0), _http([])))
    given, bad, absent, unsampled = current
    assert given == TraceParent(TRACE, SPAN, 1)
    # A bad header is ignored: the request starts a trace of its own, as one without a header.
    assert bad.trace_id != absent.trace_id
    assert TRACE not in (bad.trace_id, absent.trace_id)
    assert bad.sampled
    assert absent.sampled
    assert not unsampled.sampled  # tracing.sample_ratio decides for new traces


def test_the_gateway_records_a_span_per_request_when_tracing_is_on(exporter: Any) -> None:
    current: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        current.append(tracing.current())
        await send({"type": "http.response.start", "status": 200})

    spans = tracing.spans_for(TracingSettings(enabled=True), "test")
    asyncio.run(_call(Trace(app, spans), _http([(b"traceparent", GOOD)])))
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE
    assert f"{span.parent.span_id:016x}" == SPAN
    assert span.attributes["http.response.status_code"] == 200
    assert current == [TraceParent(TRACE, f"{span.context.span_id:016x}", 1)]


def test_outputs_of_a_batch_nobody_records_keep_their_requests_parent() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    try:
        spans = tracing.spans_for(TracingSettings(enabled=True), "test")
        assert spans is not None
        batch = spans.batch("serve m:1", [GOOD], 0.0, {})
        assert batch.output(GOOD) == GOOD
        batch.end()
    finally:
        tracing.install(None)
    assert memory.get_finished_spans() == ()


def test_a_large_batch_links_32_requests_and_the_others_keep_their_own_parent(exporter: Any) -> None:
    spans = tracing.spans_for(TracingSettings(enabled=True), "test")
    assert spans is not None
    traces = [new_trace() for _ in range(100)]
    batch = spans.batch("serve m:1", [t.header for t in traces], 0.0, {})
    batch.end()
    (serve,) = exporter.get_finished_spans()
    linked = [f"{link.context.trace_id:032x}" for link in serve.links]
    assert linked == [t.trace_id for t in traces[1:33]]
    assert parse(batch.output(traces[0].header)) == TraceParent(traces[0].trace_id, f"{serve.context.span_id:016x}", 1)
    assert all(batch.output(t.header) == t.header for t in traces[1:])


def test_a_records_span_continues_its_trace_or_starts_one(exporter: Any) -> None:
    spans = tracing.spans_for(TracingSettings(enabled=True), "test")
    assert spans is not None
    traced = spans.record("ingest events", GOOD, 0.0, {})
    untraced = spans.record("ingest events", None, 0.0, {})
    hostile = spans.record("ingest events", b"\xff" * 55, 0.0, {})
    unsampled = f"00-{TRACE}-{SPAN}-00".encode()
    not_recorded = spans.record("ingest events", unsampled, 0.0, {})
    for span in (traced, untraced, hostile, not_recorded):
        span.end()
    first, second, third = exporter.get_finished_spans()  # an unsampled parent: nothing recorded
    # The event's trace goes on, through this span ...
    assert f"{first.context.trace_id:032x}" == TRACE
    assert f"{first.parent.span_id:016x}" == SPAN
    assert parse(traced.output(GOOD)) == TraceParent(TRACE, f"{first.context.span_id:016x}", 1)
    # ... an event without one (or with a malformed one) starts its trace here ...
    for record, span, raw in ((untraced, second, None), (hostile, third, b"\xff" * 55)):
        assert span.parent is None
        carried = parse(record.output(raw))
        assert carried is not None
        assert carried.sampled
        assert (carried.trace_id, carried.span_id) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    # ... and an unsampled one keeps its parent, recorded by nobody.
    assert not_recorded.output(unsampled) == unsampled


def test_carried_is_the_records_own_header_when_tracing_is_off() -> None:
    assert tracing.carried(None, GOOD) is GOOD
    assert tracing.carried(None, None) is None
    assert tracing.carried(None, GOOD.upper()) is None


def test_a_failed_records_span_says_why(exporter: Any) -> None:
    spans = tracing.spans_for(TracingSettings(enabled=True), "test")
    assert spans is not None
    record = spans.record("ingest events", GOOD, 0.0, {})
    record.fail(ValueError("no rule"))
    record.end()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "ValueError: no rule"
    assert span.attributes["error.type"] == "ValueError"


def test_the_gateways_pool_carries_the_requests_trace_into_its_threads() -> None:
    # The events and OpenAI routes call the SDK on the gateway's thread pool: what it sends
    # there must be in the request's trace, as on the event loop.
    async def sent_from_the_pool() -> list[TraceParent | None]:
        gateway = SimpleNamespace(_pool=ThreadPoolExecutor(2))
        gateway.call = functools.partial(Gateway.call, gateway)  # what Gateway.each calls
        try:
            with use(TraceParent(TRACE, SPAN, 1)):
                one = await Gateway.call(gateway, tracing.current)  # type: ignore[arg-type]
                many = await Gateway.each(gateway, lambda _: tracing.current(), range(3))  # type: ignore[arg-type]
            outside = await Gateway.call(gateway, tracing.current)  # type: ignore[arg-type]
        finally:
            gateway._pool.shutdown()
        return [one, *many, outside]

    assert asyncio.run(sent_from_the_pool()) == [TraceParent(TRACE, SPAN, 1)] * 4 + [None]
