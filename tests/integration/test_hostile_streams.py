"""Hostile records sent raw into the ingest processor, the index sink and the table sink;
and updates of one document keeping their order through the embedder into the index.

Regressions of the hardening issue: an event whose schema header is not UTF-8 crashed the
ingest agent and its offset moved past it (neither routed nor dead-lettered); the
embedder's regrouping by length left an older text's vector as a document's final state.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hostile import Case, assert_metrics_reconcile, produce_raw, tagged_cases
from test_ingest import _stats, _wait_committed, ingest_process

from inferstream import Client, Settings
from inferstream.config import ElasticsearchSettings
from inferstream.connectors.embedded import EmbeddedStore
from inferstream.connectors.stores import open_store
from inferstream.monitoring.table import read_table, table_dir
from inferstream.schemas import Embedding, EmbeddingRequest, Prediction, codec_for
from inferstream.serving.demo_models import EMBEDDER_NAME
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import SearchServer, running_in_thread
from inferstream.streams.index_sink import IndexSink
from inferstream.streams.table_sink import InferenceTableSink


def _letters(settings: Settings) -> dict[bytes, object]:
    with Client(settings) as client:
        return {letter.original_key or b"": letter for letter in client.dead_letters()}


def test_hostile_events_are_routed_or_dead_lettered_and_counts_reconcile(settings: Settings, tmp_path: Path) -> None:
    rules = [{"type": "review", "model": EMBEDDER_NAME, "version": "1", "input": "text"}]
    tag = uuid.uuid4().hex[:6]
    valid = {"id": "REQ", "type": "review", "text": "a fine review", "features": {"amount": 1.5}}
    hostile = tagged_cases(valid, "features.amount", b"event/1", tag)
    after = Case(
        f"{tag}-after", json.dumps({**valid, "id": f"{tag}-after"}).encode(), [("inferstream-schema", b"event/1")]
    )
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(EMBEDDER_NAME, "1")
    log = tmp_path / "ingest.log"
    group = "ingest-hostile"
    with ingest_process(settings, log, group=group, rules=rules):
        assert produce_raw(settings, settings.topics.name("events"), [*hostile, after]) == len(hostile) + 1
        _wait_committed(settings, f"{settings.topics.prefix}{group}", len(hostile) + 1)
    events, routed, _requests, dead = _stats(log)[-1]
    assert events == len(hostile) + 1 == routed + dead, log.read_text()
    with Client(settings) as client:
        topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
        codec = codec_for(EmbeddingRequest)
        sources = {
            codec.decode(m.value or b"").source_event_id
            for m in client.subscribe(topic, from_beginning=True, idle_timeout=5, decode=False)
        }
    letters = _letters(settings)
    assert f"{tag}-after" in sources
    for case in hostile:
        routed_once = case.name in sources
        assert routed_once != (case.key in letters), (
            f"{case.name}: routed {routed_once}, dead letter {letters.get(case.key)}"
        )
    letter = letters[f"{tag}-schema-header-not-utf8".encode()]
    assert "not UTF-8" in letter.error_message  # type: ignore[attr-defined]
    assert letter.original_headers == [("inferstream-schema", b"\xff\xfe\x00")]  # type: ignore[attr-defined]


def test_updates_of_one_document_in_one_batch_reach_the_index_newest_last(
    settings: Settings, models_dir: Path, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(EMBEDDER_NAME, "1")
    # Older texts long, newer ones short: sorted by length, the newer would be embedded first.
    old = {f"doc-{i}": f"document {i} as first written, " + "with many more words in it " * 12 for i in range(10)}
    new = {f"doc-{i}": f"document {i}, short" for i in range(10)}
    requests = [
        {"request_id": f"req-{doc}", "model": EMBEDDER_NAME, "version": "1", "document_id": doc, "text": text}
        for texts in (old, new)
        for doc, text in texts.items()
    ]
    with Client(settings) as client:  # all waiting before the worker starts: one batch takes both updates
        topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
        assert client.produce(topic, requests, schema="embedding-request").produced == 20
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(EMBEDDER_NAME))
    with running_in_thread(worker):
        deadline = time.monotonic() + 120
        while worker.stats.requests < 20:
            assert time.monotonic() < deadline
            assert worker.failure is None
            time.sleep(0.05)
    assert worker.stats.batches >= 1
    with Client(settings) as client:
        last: dict[str, Embedding] = {}
        for message in client.subscribe("embeddings", from_beginning=True, max_records=20, idle_timeout=30):
            assert isinstance(message.record, Embedding)
            last[message.record.id] = message.record  # in offset order: the last is what the index keeps
    assert {doc: e.text for doc, e in last.items()} == new
    sink = IndexSink(settings, group_id=f"{settings.topics.prefix}index-order")
    sink.run(idle_timeout=5)
    assert sink.stats.upserts == 20
    store = EmbeddedStore(settings.state_dir / "vectors", settings.elasticsearch)
    try:
        for doc, embedding in last.items():
            hit = store.knn(np.asarray(embedding.vector), 1, num_candidates=10, filters={})[0]
            assert (hit.id, hit.text) == (doc, new[doc])
    finally:
        store.close()


@pytest.mark.parametrize("store", ["embedded", "elasticsearch"])
def test_hostile_embeddings_are_dead_lettered_by_the_index_sink(
    settings: Settings, models_dir: Path, request: pytest.FixtureRequest, store: str
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})
    if store == "elasticsearch":
        server: SearchServer = request.getfixturevalue("elasticsearch")
        index = ElasticsearchSettings(url=server.url, index=f"{settings.topics.prefix}hostile")
        settings = settings.model_copy(update={"elasticsearch": index})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    tag = uuid.uuid4().hex[:6]
    vector = [0.1] * 384
    valid = {
        "id": "REQ",
        "event_time": "2026-01-01T00:00:00Z",
        "model": EMBEDDER_NAME,
        "version": "1",
        "vector": vector,
    }
    hostile = tagged_cases(valid, "vector.0", b"embedding/1", tag)
    wrong_dims = {**valid, "id": f"{tag}-wrong-dims", "vector": [0.1] * 3}
    hostile.append(Case(f"{tag}-wrong-dims", json.dumps(wrong_dims).encode()))
    after = Case(f"{tag}-after", json.dumps({**valid, "id": f"{tag}-after"}).encode())
    produce_raw(settings, settings.topics.name("embeddings"), [*hostile, after])
    sink = IndexSink(settings, group_id=f"{settings.topics.prefix}index-hostile")
    stats = sink.run(idle_timeout=5)
    assert stats.records == len(hostile) + 1
    assert stats.reconciles
    assert_metrics_reconcile(sink.metrics.registry, "index")
    letters = _letters(settings)
    index = open_store(settings)
    try:
        index.refresh()
        hits = index.knn(np.asarray(vector, dtype=np.float32), 50, num_candidates=100, filters={})
    finally:
        index.close()
    indexed = {hit.id for hit in hits}
    assert f"{tag}-after" in indexed
    for case in hostile:
        if case.value is None:
            continue  # a tombstone deletes (nothing here): written, not dead-lettered
        assert (case.name in indexed) != (case.key in letters), case.name
    assert "dims" in letters[f"{tag}-wrong-dims".encode()].error_message  # type: ignore[attr-defined]


def test_hostile_predictions_are_dead_lettered_by_the_table_sink(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    tag = uuid.uuid4().hex[:6]
    valid = {
        "request_id": "REQ",
        "event_time": "2026-01-01T00:00:00Z",
        "model": "m",
        "version": "1",
        "inputs": {"x": 1.5},
        "outputs": {"label": "a"},
        "latency": {"queue_ms": 1, "compute_ms": 1, "total_ms": 2},
    }
    hostile = tagged_cases(valid, "inputs.x", b"prediction/1", tag)
    after = Case(f"{tag}-after", json.dumps({**valid, "request_id": f"{tag}-after"}).encode())
    produce_raw(settings, settings.topics.name("predictions"), [*hostile, after])
    sink = InferenceTableSink(settings)
    with running_in_thread(sink):
        deadline = time.monotonic() + 120
        while sink.stats.consumed < len(hostile) + 1:
            assert time.monotonic() < deadline, sink.stats
            time.sleep(0.1)
    stats = sink.stats
    assert stats.consumed == stats.written + stats.dead_letters + stats.skipped, stats
    assert_metrics_reconcile(sink.metrics.registry, "table")
    letters = _letters(settings)
    rows = set(read_table(table_dir(settings)).column("request_id").to_pylist())
    assert f"{tag}-after" in rows
    for case in hostile:
        assert (case.name in rows) != (case.key in letters), case.name


def test_hostile_embedding_requests_are_dead_lettered_and_the_next_text_is_embedded(
    settings: Settings, models_dir: Path
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(EMBEDDER_NAME, "1")
    tag = uuid.uuid4().hex[:6]
    valid = {"request_id": "REQ", "model": EMBEDDER_NAME, "version": "1", "document_id": "REQ", "text": "hi there"}
    hostile = tagged_cases(valid, "text", b"embedding-request/1", tag)
    after = Case(
        f"{tag}-after", json.dumps({**valid, "request_id": f"{tag}-after", "document_id": f"{tag}-after"}).encode()
    )
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(EMBEDDER_NAME))
    with running_in_thread(worker):
        produce_raw(settings, settings.topics.request_topic(EMBEDDER_NAME, "1"), [*hostile, after])
        deadline = time.monotonic() + 120
        while worker.stats.requests < len(hostile) + 1:
            assert time.monotonic() < deadline, worker.stats
            assert worker.failure is None
            time.sleep(0.05)
    stats = worker.stats
    assert stats.requests == stats.predictions + stats.dead_letters
    with Client(settings) as client:
        embedded = {
            m.record.id
            for m in client.subscribe("embeddings", from_beginning=True, idle_timeout=5)
            if isinstance(m.record, Embedding)
        }
    letters = _letters(settings)
    assert f"{tag}-after" in embedded
    for case in hostile:
        assert (case.name in embedded) != (case.key in letters), case.name


def test_hostile_predictions_never_stop_a_drift_monitor(settings: Settings) -> None:
    from test_drift import WINDOW, _predictions, _produce, _reference, _Running, _spec

    from inferstream.streams.drift_monitor import DriftMonitor

    spec = _spec()
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _reference(settings, spec)
    first = _predictions(WINDOW)
    valid = json.loads(codec_for(Prediction).encode(first[0]))
    valid["request_id"] = "REQ"
    hostile = tagged_cases(valid, "inputs.mean_radius", b"prediction/1", uuid.uuid4().hex[:6])
    _produce(settings, first[: WINDOW // 2])
    produce_raw(settings, settings.topics.name("predictions"), hostile)
    _produce(settings, first[WINDOW // 2 :] + _predictions(WINDOW, start=WINDOW, seed=4))
    running = _Running(DriftMonitor(settings, spec))
    running.wait_windows(1)
    running.stop()
    assert_metrics_reconcile(running.monitor.metrics.registry, "monitor")
    window = running.monitor.recent[0]
    # Every hostile record is in the first window's counts: as a prediction (with its column
    # counted missing, invalid or NaN), or as a bad record; the stream went on to close it.
    assert window["count"] + window["bad_records"] >= WINDOW + 1
    assert running.monitor.stats.predictions + running.monitor.stats.bad_records >= WINDOW + len(hostile)
