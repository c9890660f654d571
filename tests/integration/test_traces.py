"""One gateway request through a chain is one trace: gateway → step 1 → step 2, over the real broker.

OpenTelemetry's in-memory exporter takes this process's spans (the gateway, both chain
steps' workers and the table sink all run here); the ``traceparent`` header of the
prediction and the inference table's ``trace_id`` column carry the same trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferstream import Client, Settings, tracing
from inferstream.config import TracingSettings
from inferstream.gateway import BackgroundGateway
from inferstream.monitoring.table import read_table, table_dir
from inferstream.schemas import Prediction
from inferstream.serving.chain import ChainRunner
from inferstream.serving.demo_models import CHAIN_NAME, EMBEDDER_NAME, TOPIC_NAME
from inferstream.serving.repository import ModelRepository
from inferstream.stack.testing import running_in_thread
from inferstream.streams.table_sink import InferenceTableSink
from inferstream.tracing import TRACEPARENT, TraceParent, parse

CALLER = TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory
    tracing.install(None)


def _wait_for(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)
    return found


def _hex(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) as the header writes them."""
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", f"{parent.span_id:016x}" if parent else None


def test_a_gateway_request_through_a_chain_is_one_connected_trace(
    settings: Settings, models_dir: Path, exporter: InMemorySpanExporter
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir, "tracing": TracingSettings(enabled=True)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    runner = ChainRunner(settings, ModelRepository(models_dir).get_chain(CHAIN_NAME, "1"))
    sink = InferenceTableSink(settings, max_delay_s=0.2)
    with (
        running_in_thread(runner, timeout=120),
        running_in_thread(sink),
        BackgroundGateway(settings) as gateway,
        httpx.Client(base_url=gateway.url, timeout=60) as http,
    ):
        response = http.post(
            f"/v1/models/{CHAIN_NAME}:1/predict",
            json={"inputs": {"text": "Heavy snow and strong winds are expected tonight."}, "request_id": "traced"},
            headers={"traceparent": CALLER.header.decode()},
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["label"] == "weather"
        _wait_for(lambda: sink.stats.rows >= 1)

        def spans() -> dict[str, ReadableSpan] | None:
            tracing.flush()
            named = {span.name: span for span in exporter.get_finished_spans()}
            wanted = ("POST /v1/models/{name}/predict", f"serve {EMBEDDER_NAME}:1", f"serve {TOPIC_NAME}:1")
            return named if all(name in named for name in wanted) else None

        named = _wait_for(spans)
    gateway_trace, gateway_span, gateway_parent = _hex(named["POST /v1/models/{name}/predict"])
    step1_trace, step1_span, step1_parent = _hex(named[f"serve {EMBEDDER_NAME}:1"])
    step2_trace, step2_span, step2_parent = _hex(named[f"serve {TOPIC_NAME}:1"])
    # One trace, connected: the caller's span → the gateway's → chain step 1's batch → step 2's batch.
    assert gateway_trace == step1_trace == step2_trace == CALLER.trace_id
    assert gateway_parent == CALLER.span_id
    assert step1_parent == gateway_span
    assert step2_parent == step1_span

    # Each batch's children: waiting for the batch, the model run, producing its outputs (and step 1's
    # outputs are step 2's requests).
    def children(span_id: str) -> set[str]:
        return {s.name for s in exporter.get_finished_spans() if _hex(s)[2] == span_id}

    assert children(step1_span) == {"batch wait", "inference", "produce", f"serve {TOPIC_NAME}:1"}
    # (and the table sink's write of the prediction is step 2's child).
    predictions = settings.topics.name("predictions")
    assert children(step2_span) == {"batch wait", "inference", "produce", f"table {predictions}"}
    # The prediction record carries the trace on (its parent: the last step's batch span) ...
    with Client(settings) as client:
        (received,) = [
            m
            for m in client.subscribe("predictions", from_beginning=True, max_records=1, idle_timeout=30)
            if isinstance(m.record, Prediction)
        ]
    assert received.record.request_id == "traced"
    headers = dict(received.headers)
    assert parse(headers[TRACEPARENT]) == TraceParent(CALLER.trace_id, step2_span, 1)
    # ... and the inference table keeps its trace id.
    table = read_table(table_dir(settings))
    assert table["request_id"].to_pylist() == ["traced"]
    assert table["trace_id"].to_pylist() == [CALLER.trace_id]
