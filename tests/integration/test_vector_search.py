"""The vector index end to end: embeddings topic → index sink → Elasticsearch / embedded store → search.

Real broker, real Elasticsearch (the session's, started by the harness), the real
minilm embedder on Python's own documentation.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from elasticsearch import Elasticsearch

from inferstream import Client, Settings
from inferstream.config import ElasticsearchSettings
from inferstream.connectors.kafka import Producer
from inferstream.connectors.stores import open_store
from inferstream.connectors.vectors import IndexMeta
from inferstream.demo import sample_texts
from inferstream.gateway import BackgroundGateway
from inferstream.schemas import Embedding
from inferstream.schemas.codec import codec_for
from inferstream.search import QueryEmbedder
from inferstream.serving.demo_models import EMBEDDER_NAME
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import SearchServer
from inferstream.streams.index_sink import IndexSink, IndexStats

T = TypeVar("T")
CORPUS = 60
ASSERT_QUERY = "what does the assert statement do"  # sample_texts()[0] is about assert statements
META = IndexMeta(EMBEDDER_NAME, "1", 384, "cosine")


@pytest.fixture(scope="module")
def corpus(models_dir: Path) -> list[Embedding]:
    """The first passages of the docs, embedded by the real model, as the worker would publish them."""
    return pydoc_corpus(Settings(models_dir=models_dir), CORPUS)


def pydoc_corpus(settings: Settings, count: int) -> list[Embedding]:
    """The first ``count`` passages of Python's docs as embeddings of the real model (``doc-<i>``)."""
    texts = sample_texts()[:count]
    vectors = QueryEmbedder(settings, META).embed(texts)
    return [
        Embedding(
            id=f"doc-{i}",
            event_time="2026-01-01T00:00:00Z",
            model=EMBEDDER_NAME,
            version="1",
            vector=vector,
            text=text,
            attributes={"source": f"pydoc#{i}", "part": "even" if i % 2 == 0 else "odd"},
        )
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    ]


def _es_settings(settings: Settings, server: SearchServer, models_dir: Path) -> Settings:
    index = f"{settings.topics.prefix}docs"
    return settings.model_copy(
        update={"models_dir": models_dir, "elasticsearch": ElasticsearchSettings(url=server.url, index=index)}
    )


def _eventually(check: Callable[[], T], *, timeout: float = 90, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


class _Running:
    """An index sink in a thread, stopped (and joined) on exit."""

    def __init__(self, sink: IndexSink) -> None:
        self.sink = sink
        self.stats: IndexStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.stats = self.sink.run()

    def __enter__(self) -> IndexSink:
        self.thread.start()
        assert self.sink.ready.wait(120), "the index sink did not get ready"
        return self.sink

    def __exit__(self, *exc: object) -> None:
        self.sink.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _count(settings: Settings) -> int:
    store = open_store(settings)
    try:
        store.refresh()
        return store.count()
    finally:
        store.close()


def _tombstone(settings: Settings, doc_id: str | None) -> None:
    with Producer(settings) as producer:
        producer.produce(settings.topics.platform_topics()["embeddings"], None, doc_id.encode() if doc_id else None)
        producer.flush()


# -- Elasticsearch ------------------------------------------------------------------------------


def test_worker_embeddings_are_indexed_searched_and_deleted_in_elasticsearch(
    settings: Settings, elasticsearch: SearchServer, models_dir: Path
) -> None:
    settings = _es_settings(settings, elasticsearch, models_dir)
    texts = sample_texts()[:CORPUS]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(f"{EMBEDDER_NAME}:1"))
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    worker_thread.start()
    assert worker.ready.wait(60)
    requests = [
        {
            "request_id": f"r{i}",
            "model": EMBEDDER_NAME,
            "version": "1",
            "document_id": f"doc-{i}",
            "text": text,
            "attributes": {"source": f"pydoc#{i}", "part": "even" if i % 2 == 0 else "odd"},
        }
        for i, text in enumerate(texts)
    ]
    sink = IndexSink(settings)
    try:
        with _Running(sink), Client(settings) as client:
            topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
            assert client.produce(topic, requests, schema="embedding-request").produced == CORPUS
            _eventually(lambda: _count(settings) == CORPUS, what=f"{CORPUS} documents in the index")

            result = client.search(ASSERT_QUERY, k=3)
            assert result.hits[0].id == "doc-0"
            assert result.hits[0].text == texts[0]
            assert result.hits[0].attributes == {"source": "pydoc#0", "part": "even"}
            assert (result.model, result.hybrid) == (f"{EMBEDDER_NAME}:1", False)
            assert 0 < result.latency.embed_ms < result.latency.total_ms
            hybrid = client.search(ASSERT_QUERY, k=3, hybrid=True)
            assert hybrid.hits[0].id == "doc-0"
            assert hybrid.hits[0].knn_rank == 1
            assert hybrid.hits[0].text_rank is not None
            odd = client.search(ASSERT_QUERY, k=5, filters={"attributes.part": "odd"})
            assert len(odd.hits) == 5
            assert all(hit.attributes["part"] == "odd" for hit in odd.hits)
            passages = client.retrieve(ASSERT_QUERY, k=2)
            assert passages[0].text == texts[0]
            assert passages[0].source == "pydoc#0"

            _tombstone(settings, "doc-0")
            _eventually(lambda: _count(settings) == CORPUS - 1, what="the tombstone to delete doc-0")
            assert "doc-0" not in [hit.id for hit in client.search(ASSERT_QUERY, k=3).hits]
    finally:
        worker.stop()
        worker_thread.join(60)
    assert sink.stats.reconciles
    assert (sink.stats.upserts, sink.stats.deletes, sink.stats.dead_letters) == (CORPUS, 1, 0)
    mapping = Elasticsearch(elasticsearch.url).indices.get_mapping(index=settings.elasticsearch.index)
    body = mapping[settings.elasticsearch.index]["mappings"]
    assert body["properties"]["vector"]["index_options"]["type"] == "int8_hnsw"
    assert body["properties"]["vector"]["dims"] == 384
    assert body["_meta"]["inferstream"]["model"] == EMBEDDER_NAME


def _raw_embedding(**fields: Any) -> bytes:
    base = {"id": "x", "event_time": "2026-01-01T00:00:00Z", "model": EMBEDDER_NAME, "version": "1"}
    return json.dumps({**base, **fields}).encode()


def _b64(values: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(values.astype("<f4").tobytes()).decode()


def test_bad_embeddings_are_dead_lettered_and_indexing_goes_on(
    settings: Settings, elasticsearch: SearchServer, models_dir: Path, corpus: list[Embedding]
) -> None:
    settings = _es_settings(settings, elasticsearch, models_dir)
    codec = codec_for(Embedding)
    good = corpus[:6]
    nan = np.ones(384, dtype=np.float32)
    nan[7] = np.nan
    bad: list[tuple[bytes | None, bytes | None, str]] = [
        (b"short", _raw_embedding(id="short", vector=_b64(np.ones(3))), "3 dims"),
        (b"nan", _raw_embedding(id="nan", vector=_b64(nan)), "NaN"),
        (b"no-id", json.dumps({"event_time": "2026-01-01T00:00:00Z", "vector": _b64(np.ones(384))}).encode(), "id"),
        (b"other", _raw_embedding(id="other", model="other", version="9", vector=_b64(np.ones(384))), "other:9"),
        (b"zero", _raw_embedding(id="zero", vector=_b64(np.zeros(384))), "zero-magnitude"),
        # A value over Lucene's 32 KB term limit: Elasticsearch itself refuses this one document.
        (
            b"huge",
            _raw_embedding(id="huge", vector=_b64(np.ones(384)), attributes={"blob": "x" * 40_000}),
            "[attributes]",
        ),
        # (A tombstone without a key cannot exist: the embeddings topic is compacted and the broker refuses it.)
    ]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    topic = settings.topics.platform_topics()["embeddings"]
    with Producer(settings) as producer:
        for record in good[:3]:
            producer.produce(topic, codec.encode(record), record.key(), [codec.header])
        for key, value, _reason in bad:
            producer.produce(topic, value, key, [codec.header] if value else None)
        for record in good[3:]:
            producer.produce(topic, codec.encode(record), record.key(), [codec.header])
        producer.flush()
    sink = IndexSink(settings)
    with _Running(sink):
        _eventually(lambda: sink.stats.records == len(good) + len(bad) and sink.in_flight == 0, what="every record")
    assert _count(settings) == len(good)
    with Client(settings) as client:
        letters = list(client.dead_letters())
    assert len(letters) == len(bad)
    by_key = {letter.original_key: letter for letter in letters}
    for key, value, reason in bad:
        letter = by_key[key]
        assert reason in letter.error_message, (key, letter.error_message)
        assert letter.stage == "index"
        assert letter.source_topic == topic
        assert letter.payload == (value or b"")
    assert by_key[b"huge"].error_class == "IndexRejected"
    assert by_key[b"short"].error_class == "DimensionMismatch"
    assert sink.stats.reconciles
    assert (sink.stats.upserts, sink.stats.dead_letters) == (len(good), len(bad))


def test_elasticsearch_down_for_30s_loses_nothing_and_duplicates_nothing(
    settings: Settings, elasticsearch: SearchServer, models_dir: Path, corpus: list[Embedding]
) -> None:
    assert elasticsearch.server is not None, "this test stops and starts the harness's own Elasticsearch"
    settings = _es_settings(settings, elasticsearch, models_dir)
    codec = codec_for(Embedding)
    topic = settings.topics.platform_topics()["embeddings"]
    total = 3000
    records = [
        corpus[i % len(corpus)].model_copy(update={"id": f"e-{i}", "attributes": {"n": str(i)}}) for i in range(total)
    ]
    with Client(settings) as client:
        client.topics.ensure_platform_topics()

    def produce(chunk: list[Embedding]) -> None:
        with Producer(settings) as producer:
            for record in chunk:
                producer.produce(topic, codec.encode(record), record.key(), [codec.header])
            producer.flush()

    sink = IndexSink(settings)
    server = elasticsearch.server
    try:
        with _Running(sink):
            produce(records[:1000])
            _eventually(lambda: sink.stats.upserts >= 500, what="indexing to be under way")
            server.stop()
            produce(records[1000:2000])  # while the index is down
            time.sleep(30)
            assert sink.stats.retries > 0  # the sink noticed, and waited
            assert sink.stats.upserts <= 1000  # nothing written while the server was away
            server.start()
            produce(records[2000:])
            _eventually(lambda: sink.stats.upserts == total, timeout=180, what="every document after the outage")
    finally:
        if not server.running:
            server.start()
    client = Elasticsearch(elasticsearch.url)
    client.indices.refresh(index=settings.elasticsearch.index)
    assert client.count(index=settings.elasticsearch.index)["count"] == total
    ids = {
        hit["_id"]
        for hit in _scan(client, settings.elasticsearch.index)  # every document, by id
    }
    assert ids == {f"e-{i}" for i in range(total)}
    assert sink.stats.dead_letters == 0
    assert sink.stats.reconciles


def _scan(client: Elasticsearch, index: str) -> Iterator[dict[str, Any]]:
    from elasticsearch.helpers import scan

    yield from scan(client, index=index, query={"query": {"match_all": {}}}, _source=False)


# -- the embedded store -------------------------------------------------------------------------


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_MODELS_DIR": str(settings.models_dir),
        "COLUMNS": "200",
    }


def test_embedded_store_indexes_searches_deletes_and_dead_letters(
    settings: Settings, models_dir: Path, corpus: list[Embedding]
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})
    assert settings.elasticsearch.url is None  # the default: the embedded store
    short = corpus[5].model_copy(update={"id": "short", "vector": np.ones(8, dtype=np.float32)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        assert client.produce("embeddings", [*corpus, short]).produced == CORPUS + 1
    indexed = subprocess.run(
        [sys.executable, "-m", "inferstream", "stream", "index", "--idle-timeout", "3"],
        capture_output=True,
        timeout=300,
        env=_cli_env(settings),
        check=False,
    )
    assert indexed.returncode == 0, indexed.stderr.decode()
    report = indexed.stderr.decode()
    assert "one writer" in report
    assert f"indexed {CORPUS + 1} records: {CORPUS} upserts, 0 deletes, 1 dead letters" in " ".join(report.split())
    assert (settings.state_dir / "vectors").is_dir()

    found = subprocess.run(
        [sys.executable, "-m", "inferstream", "search", ASSERT_QUERY, "-k", "3", "--json"],
        capture_output=True,
        timeout=120,
        env=_cli_env(settings),
        check=False,
    )
    assert found.returncode == 0, found.stderr.decode()
    hits = [json.loads(line) for line in found.stdout.decode().splitlines()]
    assert [hit["id"] for hit in hits][:1] == ["doc-0"]
    assert hits[0]["attributes"] == {"source": "pydoc#0", "part": "even"}

    with BackgroundGateway(settings) as gateway:  # the HTTP gateway's POST /v1/search, same index
        answer = httpx.post(
            f"{gateway.url}/v1/search", json={"query": ASSERT_QUERY, "k": 3, "hybrid": True}, timeout=60
        )
        empty = httpx.post(f"{gateway.url}/v1/search", json={"query": ""}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert [hit["id"] for hit in answer.json()["hits"]][:1] == ["doc-0"]
    assert answer.json()["latency"]["total_ms"] > 0
    assert empty.status_code == 422
    with Client(settings) as client:
        result = client.search(ASSERT_QUERY, k=3, hybrid=True)
        assert result.hits[0].id == "doc-0"
        even = client.search(ASSERT_QUERY, k=4, filters={"attributes.part": ["even"]})
        assert all(hit.attributes["part"] == "even" for hit in even.hits)
        letters = list(client.dead_letters())
    assert [letter.original_key for letter in letters] == [b"short"]
    assert "8 dims" in letters[0].error_message

    _tombstone(settings, "doc-0")
    sink = IndexSink(settings)
    with _Running(sink):
        _eventually(lambda: sink.stats.deletes == 1 and sink.in_flight == 0, what="the tombstone")
    with Client(settings) as client:
        assert "doc-0" not in [hit.id for hit in client.search(ASSERT_QUERY, k=3).hits]
    assert _count(settings) == CORPUS - 1
    assert (sink.stats.records, sink.stats.deletes) == (1, 1)  # the group resumed after what the CLI committed
