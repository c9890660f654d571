"""The index sink and the vector stores: indexing throughput, freshness, kNN recall and latency.

For each store (a real Elasticsearch, started here unless ``--elasticsearch URL`` is
given, and the embedded LanceDB store), on synthetic clustered 384-dim unit
vectors (``--quick``: 3k, full: 100k):

1. Indexing throughput. N embeddings already on the embeddings topic; the
   pipeline is ``IndexSink`` (consume, decode, check, bulk write, commit), timed
   from its first consumed record to the last one written, as the sink itself
   notes them (``IndexStats.first_record_at``, ``last_write_at``: polling for
   them from here would add up to a polling step at either end). The baseline is the
   store's raw client writing the same documents in the same batch size (raw
   ``bulk`` with the same bodies; LanceDB ``merge_insert`` of the same Arrow
   batches), into a second index, same run. Ratio = pipeline / raw.
2. Freshness at 50% of the pipeline's measured capacity: embeddings produced at
   that steady rate while the sink runs; for a sample of them, the time from
   produce to the first search that returns it (polled every 50 ms). Goal p95 <= 2 s.
3. Recall@10 of the store's kNN (HNSW; Elasticsearch int8_hnsw with the configured
   num_candidates and rescoring, LanceDB IVF_FLAT with embedded_nprobes) against exact brute force in numpy over
   every indexed vector, and the query latency p50/p99 of ``store.knn``.

    .venv/bin/python benchmarks/vector.py --quick
    .venv/bin/python benchmarks/vector.py              # 100k x 384, a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from _harness import add_common_args, broker, elasticsearch, note, result_line
from inferstream.client import Client
from inferstream.config import ElasticsearchSettings, Settings
from inferstream.connectors.elasticsearch import ElasticsearchStore, encode_vector, render_mapping, render_settings
from inferstream.connectors.embedded import EmbeddedStore, build_vector_index, needs_vector_index
from inferstream.connectors.kafka import Producer
from inferstream.connectors.vectors import Document, IndexMeta, Upsert, VectorStore
from inferstream.runtime import settle
from inferstream.schemas import Embedding
from inferstream.schemas.codec import codec_for
from inferstream.streams.index_sink import IndexSink

DIMS = 384
META = IndexMeta("bench", "1", DIMS, "cosine")
BATCH = 2000


LATENT = 64


def clustered_vectors(
    count: int, *, clusters: int = 256, latent: int = LATENT, seed: int = 7
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Unit vectors in clusters, lying near a ``latent``-dim subspace of the 384 dims.

    Text embeddings are not isotropic: they fill a space of far fewer effective
    dimensions than they have. Clusters in a 64-dim subspace (one fixed random
    projection, the same for every seed) plus a little full-rank noise give that
    shape. ``latent=384`` gives isotropic clusters, where every neighbour is at
    nearly the same distance and any ANN index (and exact ranking) is a coin toss.
    """
    # The projection and the centres are fixed; ``seed`` draws the points (documents and
    # queries come from the same clusters, as queries about indexed topics do).
    fixed = np.random.default_rng(1)
    projection = fixed.standard_normal((latent, DIMS)).astype(np.float32) / np.sqrt(latent)
    centres = fixed.standard_normal((clusters, latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, clusters, count)] + 0.6 * rng.standard_normal((count, latent)).astype(np.float32)
    vectors = points @ projection + 0.05 * rng.standard_normal((count, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """Row indices of the exact ``k`` nearest (cosine) of each query, in chunks to bound memory."""
    tops = []
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ vectors.T
        tops.append(np.argpartition(-scores, k, axis=1)[:, :k])
    return np.vstack(tops)


def _embedding(doc_id: str, vector: np.ndarray[Any, Any], when: datetime) -> Embedding:
    return Embedding.model_construct(
        id=doc_id,
        event_time=when,
        model=META.model,
        version=META.version,
        vector=vector,
        text=f"synthetic document {doc_id}",
        request_id=None,
        latency=None,
        attributes={},
    )


def produce_embeddings(settings: Settings, ids: list[str], vectors: np.ndarray[Any, Any]) -> None:
    codec = codec_for(Embedding)
    topic = settings.topics.platform_topics()["embeddings"]
    now = datetime.now(UTC)
    with Producer(settings) as producer:
        for doc_id, vector in zip(ids, vectors, strict=True):
            producer.produce(topic, codec.encode(_embedding(doc_id, vector, now)), doc_id.encode(), [codec.header])
        producer.flush()


class SinkThread:
    def __init__(self, sink: IndexSink) -> None:
        self.sink = sink
        self.thread = threading.Thread(target=sink.run, daemon=True)

    def __enter__(self) -> IndexSink:
        self.thread.start()
        if not self.sink.ready.wait(180):
            raise RuntimeError("the index sink did not start")
        return self.sink

    def __exit__(self, *exc: object) -> None:
        self.sink.stop()
        self.thread.join(120)


def wait_for(check: Any, timeout: float, what: str, step: float = 0.01) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(step)
    return time.perf_counter()


# -- raw baselines -------------------------------------------------------------------------------


def raw_elasticsearch(url: str, index: str, ids: list[str], vectors: np.ndarray[Any, Any]) -> float:
    """Seconds for the raw client to bulk-write the same documents, same batch size, refreshed."""
    from elasticsearch import Elasticsearch

    config = ElasticsearchSettings(url=url, index=index)
    client = Elasticsearch(url, request_timeout=120)
    client.indices.create(index=index, settings=render_settings(config), mappings=render_mapping(META, config))
    warm = f"{index}-warm-up"  # a cold server (JIT, caches) would make whichever runs first look slow
    client.indices.create(index=warm, settings=render_settings(config), mappings=render_mapping(META, config))
    when = datetime.now(UTC).isoformat()
    bodies = []
    for start in range(0, len(ids), BATCH):
        body: list[dict[str, Any]] = []
        for doc_id, vector in zip(ids[start : start + BATCH], vectors[start : start + BATCH], strict=True):
            body.append({"index": {"_index": index, "_id": doc_id}})
            body.append(
                {
                    "vector": encode_vector(vector),
                    "text": f"synthetic document {doc_id}",
                    "model": META.model,
                    "version": META.version,
                    "event_time": when,
                    "attributes": {},
                }
            )
        bodies.append(body)
    for body in bodies[:3]:
        client.bulk(
            operations=[{**op, "index": {**op["index"], "_index": warm}} if "index" in op else op for op in body]
        )
    client.indices.delete(index=warm)
    started = time.perf_counter()
    for body in bodies:
        response = client.bulk(operations=body)
        if response["errors"]:
            raise RuntimeError("raw bulk refused documents")
    elapsed = time.perf_counter() - started
    client.indices.delete(index=index)
    client.close()
    return elapsed


def raw_embedded(directory: Path, ids: list[str], vectors: np.ndarray[Any, Any]) -> float:
    """Seconds for LanceDB to merge_insert the same documents (same upsert semantics), same batch size.

    With the same index upkeep as the store: the full-text index after the first batch,
    the vector index from ANN_MIN_ROWS rows and again as the table doubles (so both end
    up equally searchable).
    """
    from lancedb.index import FTS

    store = EmbeddedStore(directory, ElasticsearchSettings(index="raw"))
    store.setup(META)
    now = datetime.now(UTC)
    batches = []
    for start in range(0, len(ids), BATCH):
        upserts = [
            Upsert(Document(doc_id, vector, META.model, META.version, now, f"synthetic document {doc_id}"))
            for doc_id, vector in zip(ids[start : start + BATCH], vectors[start : start + BATCH], strict=True)
        ]
        batches.append(store._arrow(upserts, META))
    table = store._table
    started = time.perf_counter()
    fts = False
    trained_on = 0
    for batch in batches:
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(batch)
        if not fts:
            table.create_index("text", config=FTS(), replace=True)
            fts = True
        rows = table.count_rows()
        if needs_vector_index(rows, trained_on):
            build_vector_index(table, rows, META.similarity)
            trained_on = rows
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


# -- freshness ------------------------------------------------------------------------------


def visible_ids_function(store: VectorStore) -> Any:
    """``ids → the ones a search returns now`` for a store."""
    if isinstance(store, ElasticsearchStore):
        client, index = store.client, store.index

        def es_visible(ids: list[str]) -> set[str]:
            response = client.search(index=index, query={"ids": {"values": ids}}, size=len(ids), source=False)
            return {hit["_id"] for hit in response["hits"]["hits"]}

        return es_visible
    assert isinstance(store, EmbeddedStore)

    def lance_visible(ids: list[str]) -> set[str]:
        table = store._open()
        if table is None:
            return set()
        quoted = ", ".join(f"'{i}'" for i in ids)
        rows = table.search().where(f"id IN ({quoted})").select(["id"]).limit(len(ids)).to_arrow()
        return set(rows.column("id").to_pylist())

    return lance_visible


def freshness(
    settings: Settings, reader: VectorStore, ids: list[str], vectors: np.ndarray[Any, Any], rate: float
) -> list[float]:
    """Seconds from produce to searchable for a sample of ids (up to 500), all produced at ``rate`` per second.

    Only a sample is polled for: asking for thousands of ids every few milliseconds
    would load the server being measured.
    """
    codec = codec_for(Embedding)
    topic = settings.topics.platform_topics()["embeddings"]
    produced: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    visible = visible_ids_function(reader)
    sampled = set(ids[:: max(1, len(ids) // 500)])

    def poll() -> None:
        while not (done.is_set() and len(seen) == len(sampled)):
            with lock:
                waiting = [i for i in produced if i not in seen][:5000]
            if waiting:
                found = visible(waiting)
                now = time.time()
                for doc_id in found:
                    seen[doc_id] = now
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    with Producer(settings) as producer:
        started = time.time()
        for n, (doc_id, vector) in enumerate(zip(ids, vectors, strict=True)):
            due = started + n / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            now = time.time()
            value = codec.encode(_embedding(doc_id, vector, datetime.fromtimestamp(now, UTC)))
            producer.produce(topic, value, doc_id.encode(), [codec.header])
            if doc_id in sampled:
                with lock:
                    produced[doc_id] = now
            producer.poll(0)
        producer.flush()
    done.set()
    poller.join(120)
    if len(seen) != len(sampled):
        raise RuntimeError(f"only {len(seen)} of {len(sampled)} sampled documents became searchable")
    return [seen[i] - produced[i] for i in sampled]


# -- recall and latency -------------------------------------------------------------------------


def recall_and_latency(
    store: VectorStore, queries: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], ids: list[str], candidates: int
) -> tuple[float, list[float]]:
    found = 0
    latencies = []
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        hits = store.knn(query, 10, num_candidates=candidates, filters={})
        latencies.append(time.perf_counter() - started)
        found += len({hit.id for hit in hits} & {ids[j] for j in expected})
    return found / (10 * len(queries)), latencies


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- one store ----------------------------------------------------------------------------------


def run_store(
    kind: str, bootstrap: str, es_url: str | None, sizes: dict[str, int], data: dict[str, Any]
) -> dict[str, float]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    state_dir = Path(tempfile.mkdtemp(prefix="inferstream-vector-bench-"))
    index = f"{prefix}docs".lower()
    config = ElasticsearchSettings(
        url=es_url if kind == "elasticsearch" else None, index=index, dims=DIMS, model="bench:1"
    )
    settings = Settings.load(
        kafka={"bootstrap_servers": bootstrap},
        topics={"prefix": prefix},
        state_dir=state_dir,
        elasticsearch=config.model_dump(),
    )
    n, fresh_n = sizes["docs"], sizes["fresh"]
    ids = [f"d{i}" for i in range(n)]
    fresh_ids = [f"f{i}" for i in range(fresh_n)]
    vectors, fresh_vectors = data["vectors"][:n], data["vectors"][n : n + fresh_n]
    out: dict[str, float] = {}
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        note(f"[{kind}] producing {n} embeddings")
        produce_embeddings(settings, ids, vectors)

        note(f"[{kind}] raw baseline: {n} documents in batches of {BATCH}")
        if kind == "elasticsearch":
            assert es_url is not None
            raw_s = raw_elasticsearch(es_url, f"{index}-raw", ids, vectors)
        else:
            raw_s = raw_embedded(state_dir / "raw", ids, vectors)
        out["raw_docs_s"] = n / raw_s

        sink = IndexSink(settings)
        settle()  # as `inferstream stream index` does before its loop
        with SinkThread(sink):
            note(f"[{kind}] index sink: {n} documents from the topic")
            wait_for(lambda: sink.stats.upserts >= n, 1800, "every document", step=0.005)
            first, last = sink.stats.first_record_at, sink.stats.last_write_at
            assert first is not None
            assert last is not None
            out["sink_docs_s"] = n / (last - first)
            rate = out["sink_docs_s"] * 0.5
            note(f"[{kind}] freshness: {fresh_n} documents at {rate:.0f}/s (50% of capacity)")
            reader: VectorStore = (
                ElasticsearchStore(config) if kind == "elasticsearch" else EmbeddedStore(state_dir / "vectors", config)
            )
            fresh = freshness(settings, reader, fresh_ids, fresh_vectors, rate)
            out["fresh_p50_s"], out["fresh_p95_s"] = pct(fresh, 50), pct(fresh, 95)
            out["fresh_rate"] = rate
        if isinstance(reader, EmbeddedStore):
            note(f"[{kind}] folding every row into the vector index (optimize)")
            writer = EmbeddedStore(state_dir / "vectors", config)
            writer.setup(META)
            writer.optimize()
            writer.close()
        reader.refresh()
        all_ids = ids + fresh_ids
        all_vectors = np.vstack([vectors, fresh_vectors])
        note(f"[{kind}] recall@10 over {len(all_ids)} vectors, {len(data['queries'])} queries (exact: numpy)")
        truth = exact_top(all_vectors, data["queries"], 10)
        candidates = settings.elasticsearch.num_candidates
        recall_and_latency(reader, data["queries"][:20], truth[:20], all_ids, candidates)  # warm caches
        recall, latencies = recall_and_latency(reader, data["queries"], truth, all_ids, candidates)
        out["recall_at_10"] = recall
        out["query_p50_ms"], out["query_p99_ms"] = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
        out["count"] = reader.count()
        reader.close()
        client.topics.delete(*(name for name in client.topics.list() if name.startswith(prefix)))
    if kind == "elasticsearch":
        from elasticsearch import Elasticsearch

        Elasticsearch(es_url or "").options(ignore_status=404).indices.delete(index=index)
    shutil.rmtree(state_dir, ignore_errors=True)
    return out


@contextmanager
def elasticsearch_url(given: str | None) -> Iterator[str]:
    with elasticsearch(given) as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--elasticsearch", metavar="URL", help="Use this Elasticsearch; default: start one.")
    parser.add_argument("--stores", default="elasticsearch,embedded", help="Which stores, comma-separated.")
    parser.add_argument(
        "--latent", type=int, default=LATENT, help="Effective dims of the synthetic vectors (384: isotropic)."
    )
    args = parser.parse_args()
    sizes = (
        {"docs": 3_000, "fresh": 600, "queries": 100}
        if args.quick
        else {"docs": 100_000, "fresh": 5_000, "queries": 500}
    )
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    note(f"generating {sizes['docs'] + sizes['fresh']} clustered {DIMS}-dim vectors")
    data = {
        "vectors": clustered_vectors(sizes["docs"] + sizes["fresh"], latent=args.latent),
        "queries": clustered_vectors(sizes["queries"], latent=args.latent, seed=11),
    }
    results: dict[str, dict[str, float]] = {}
    with broker(args.bootstrap_servers) as bootstrap:
        if "elasticsearch" in stores:
            with elasticsearch_url(args.elasticsearch) as url:
                results["elasticsearch"] = run_store("elasticsearch", bootstrap, url, sizes, data)
        if "embedded" in stores:
            results["embedded"] = run_store("embedded", bootstrap, None, sizes, data)

    table = Table(title=f"vector index, {sizes['docs']} x {DIMS} (+{sizes['fresh']} for freshness)")
    for column in (
        "store",
        "sink docs/s",
        "raw docs/s",
        "ratio",
        "fresh p50 s",
        "fresh p95 s",
        "recall@10",
        "query p50 ms",
        "query p99 ms",
    ):
        table.add_column(column, justify="right")
    for kind, r in results.items():
        table.add_row(
            kind,
            f"{r['sink_docs_s']:.0f}",
            f"{r['raw_docs_s']:.0f}",
            f"{r['sink_docs_s'] / r['raw_docs_s']:.2f}",
            f"{r['fresh_p50_s']:.2f}",
            f"{r['fresh_p95_s']:.2f}",
            f"{r['recall_at_10']:.3f}",
            f"{r['query_p50_ms']:.1f}",
            f"{r['query_p99_ms']:.1f}",
        )
    Console(highlight=False).print(table)
    metrics: dict[str, float] = {}
    short = {"elasticsearch": "es", "embedded": "lance"}
    for kind, r in results.items():
        s = short[kind]
        metrics |= {
            f"{s}_sink_docs_s": r["sink_docs_s"],
            f"{s}_raw_docs_s": r["raw_docs_s"],
            f"{s}_ratio": r["sink_docs_s"] / r["raw_docs_s"],
            f"{s}_fresh_p50_s": r["fresh_p50_s"],
            f"{s}_fresh_p95_s": r["fresh_p95_s"],
            f"{s}_recall10": r["recall_at_10"],
            f"{s}_query_p50_ms": r["query_p50_ms"],
            f"{s}_query_p99_ms": r["query_p99_ms"],
        }
    print(result_line(metrics))


if __name__ == "__main__":
    main()
