"""One gateway request is one trace across processes, over the real broker.

OpenTelemetry's in-memory exporter takes this process's spans (the gateway, workers, chain
steps and the table sink run here); the ingest processor runs as ``inferstream stream
ingest`` and exports its spans over OTLP/HTTP to a receiver of the test's own. The
``traceparent`` headers of the records and the inference table's ``trace_id`` column carry
the same trace. Three ways in: a chain's predict, an event through ingest to a worker and
the table, and an OpenAI embeddings call (the official client) to the embedding worker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp import otlp_receiver
from test_ingest import ingest_process

from inferstream import Client, Settings, tracing
from inferstream.config import GatewaySettings, TracingSettings
from inferstream.gateway import BackgroundGateway
from inferstream.monitoring.table import read_table, table_dir
from inferstream.schemas import Prediction
from inferstream.serving.chain import ChainRunner
from inferstream.serving.demo_models import (
    CHAIN_NAME,
    EMBEDDER_NAME,
    TABULAR_NAME,
    TABULAR_VERSION,
    TOPIC_NAME,
    tabular_rows,
)
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread
from inferstream.streams.table_sink import InferenceTableSink
from inferstream.tracing import TRACEPARENT, TraceParent, parse

CALLER = TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)


def _finished(exporter: InMemorySpanExporter, *wanted: str) -> dict[str, ReadableSpan]:
    """The finished spans by name, once every one of ``wanted`` is among them."""

    def spans() -> dict[str, ReadableSpan] | None:
        tracing.flush()
        named = {span.name: span for span in exporter.get_finished_spans()}
        return named if all(name in named for name in wanted) else None

    found: dict[str, ReadableSpan] = _wait_for(spans)
    return found


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

        named = _finished(
            exporter, "POST /v1/models/{name}/predict", f"serve {EMBEDDER_NAME}:1", f"serve {TOPIC_NAME}:1"
        )
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


def _children(exporter: InMemorySpanExporter, span_id: str) -> set[str]:
    return {s.name for s in exporter.get_finished_spans() if _hex(s)[2] == span_id}


def _traceparents(settings: Settings, topic: str, count: int) -> list[TraceParent | None]:
    """The ``traceparent`` of each of the first ``count`` records of ``topic``."""
    with Client(settings) as client:
        messages = list(client.subscribe(topic, from_beginning=True, max_records=count, idle_timeout=30, decode=False))
    assert len(messages) == count
    return [parse(dict(m.headers).get(TRACEPARENT)) for m in messages]


def test_an_event_posted_to_the_gateway_is_one_trace_through_ingest_the_worker_and_the_table(
    settings: Settings,
    models_dir: Path,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir, "tracing": TracingSettings(enabled=True)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    events, predictions = settings.topics.name("events"), settings.topics.name("predictions")
    worker = InferenceWorker(settings, ModelRepository(models_dir).get(TABULAR_NAME, TABULAR_VERSION))
    sink = InferenceTableSink(settings, max_delay_s=0.2)
    rules = [{"type": "transaction", "model": TABULAR_NAME, "version": TABULAR_VERSION, "input": "features"}]
    row = tabular_rows()[0][0]
    with otlp_receiver() as receiver:
        # The ingest process's settings: tracing on, its spans to the receiver, exported every 0.1 s.
        monkeypatch.setenv("INFERSTREAM_TRACING__ENABLED", "true")
        monkeypatch.setenv("INFERSTREAM_TRACING__OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        with (
            ingest_process(settings, tmp_path / "ingest.log", rules=rules),
            running_in_thread(worker, timeout=120),
            running_in_thread(sink),
            BackgroundGateway(settings) as gateway,
            httpx.Client(base_url=gateway.url, timeout=60) as http,
        ):
            response = http.post(
                "/v1/events",
                json={"id": "traced-event", "type": "transaction", "features": row},
                headers={"traceparent": CALLER.header.decode()},
            )
            assert response.status_code == 200, response.text
            _wait_for(lambda: sink.stats.rows >= 1, timeout=120)
            (ingest,) = _wait_for(lambda: [s for s in receiver.spans if s.name == f"ingest {events}"], timeout=30)

            named = _finished(
                exporter, "POST /v1/events", f"serve {TABULAR_NAME}:{TABULAR_VERSION}", f"table {predictions}"
            )
    gateway_trace, gateway_span, gateway_parent = _hex(named["POST /v1/events"])
    worker_trace, worker_span, worker_parent = _hex(named[f"serve {TABULAR_NAME}:{TABULAR_VERSION}"])
    table_trace, table_span, table_parent = _hex(named[f"table {predictions}"])
    # One trace, connected across three processes' spans: the caller's → the gateway's →
    # the ingest process's (over OTLP) → the worker's batch → the table sink's write.
    assert gateway_trace == ingest.trace_id == worker_trace == table_trace == CALLER.trace_id
    assert gateway_parent == CALLER.span_id
    assert ingest.parent_id == gateway_span
    assert worker_parent == ingest.span_id
    assert table_parent == worker_span
    assert ingest.service == "inferstream-ingest"
    assert ingest.error is None
    assert ingest.attributes["messaging.destination.name"] == events
    assert ingest.attributes["messaging.kafka.offset"] == 0
    assert _children(exporter, table_span) == {"batch wait", "write"}
    # The request ingest made names its span; the prediction, the worker's batch.
    (request,) = _traceparents(settings, settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION), 1)
    assert request == TraceParent(CALLER.trace_id, ingest.span_id, 1)
    (prediction,) = _traceparents(settings, predictions, 1)
    assert prediction == TraceParent(CALLER.trace_id, worker_span, 1)
    # The inference table's row keeps the trace.
    table = read_table(table_dir(settings))
    assert table["trace_id"].to_pylist() == [CALLER.trace_id]


def test_openai_embeddings_calls_are_each_one_trace_through_the_embedding_worker(
    settings: Settings, models_dir: Path, exporter: InMemorySpanExporter
) -> None:
    # The route embeds each text on the gateway's thread pool: the request's trace must cross into it.
    token = "traces-token"
    settings = settings.model_copy(
        update={
            "models_dir": models_dir,
            "tracing": TracingSettings(enabled=True),
            "gateway": GatewaySettings(token=token),
        }
    )
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    embedder = InferenceWorker(settings, ModelRepository(models_dir).get(EMBEDDER_NAME, "1"))
    texts = ["Heavy snow is expected tonight.", "Kafka keeps a partition in order.", "The cat sat on the mat."]
    with (
        running_in_thread(embedder, timeout=120),
        BackgroundGateway(settings) as gateway,
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0, timeout=60) as client,
    ):
        traced = client.embeddings.create(
            model=f"{EMBEDDER_NAME}:1", input=texts, extra_headers={"traceparent": CALLER.header.decode()}
        )
        fresh = client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=texts[:1])
        assert len(traced.data) == 3
        assert len(fresh.data) == 1

        def spans() -> list[ReadableSpan] | None:
            tracing.flush()
            found = exporter.get_finished_spans()
            routes = [s for s in found if s.name == "POST /v1/embeddings"]
            served = [s for s in found if s.name == f"serve {EMBEDDER_NAME}:1"]
            return (
                [*routes, *served]
                if len(routes) == 2 and {_hex(s)[0] for s in served} >= {_hex(r)[0] for r in routes}
                else None
            )

        found = _wait_for(spans)
    routes = {_hex(s)[2]: _hex(s) for s in found if s.name == "POST /v1/embeddings"}
    # The first call continues the caller's trace; the second, without a header, starts one at the gateway.
    (first_trace, first_span, _), (fresh_trace, fresh_span, _) = routes[CALLER.span_id], routes[None]
    assert first_trace == CALLER.trace_id
    assert fresh_trace != CALLER.trace_id
    # Each text's request on Kafka carries its call's trace, the gateway's span as the parent ...
    # (in any order: the request topic has several partitions).
    requests = _traceparents(settings, settings.topics.request_topic(EMBEDDER_NAME, "1"), 4)
    sent = Counter((r.trace_id, r.span_id, r.sampled) for r in requests if r is not None)
    assert sent == {(first_trace, first_span, True): 3, (fresh_trace, fresh_span, True): 1}
    # ... and the embedding worker's batch spans join those traces under the gateway's span.
    served = {_hex(s)[0:3:2] for s in found if s.name == f"serve {EMBEDDER_NAME}:1"}
    assert served == {(first_trace, first_span), (fresh_trace, fresh_span)}
