"""The vector index's pure parts: RRF, filters, mappings, the stores' write rules (no services)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from elastic_transport import ConnectionError as TransportConnectionError

from inferstream.config import ElasticsearchSettings, Settings
from inferstream.connectors.elasticsearch import ElasticsearchStore, encode_vector, filter_clauses, render_mapping
from inferstream.connectors.embedded import EmbeddedStore, filter_sql
from inferstream.connectors.vectors import (
    Delete,
    Document,
    IndexMeta,
    MemoryStore,
    Ops,
    Upsert,
    VectorStore,
    normalize_filters,
)
from inferstream.errors import SearchError, SinkBackpressureError, SinkError
from inferstream.search import Searcher, reciprocal_rank_fusion
from inferstream.stack.elasticsearch import ElasticsearchServer

META = IndexMeta(model="m", version="1", dims=4, similarity="cosine")


def _doc(doc_id: str, vector: list[float], text: str | None = None, **attributes: str) -> Upsert:
    return Upsert(
        Document(
            id=doc_id,
            vector=np.asarray(vector, dtype=np.float32),
            model="m",
            version="1",
            event_time=datetime(2026, 1, 1, tzinfo=UTC),
            text=text,
            attributes=attributes,
        )
    )


# -- reciprocal rank fusion ------------------------------------------------------------------


def test_rrf_rewards_documents_ranked_well_by_both_lists() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["d", "b", "e"]], k=60)
    ids = [doc_id for doc_id, _ in fused]
    assert ids == ["b", "a", "d", "c", "e"]  # 2nd in both lists beats 1st in only one
    assert dict(fused)["b"] == pytest.approx(2 / 62)
    assert dict(fused)["e"] == pytest.approx(1 / 63)


def test_rrf_ties_keep_first_seen_order_and_k_must_be_positive() -> None:
    assert [d for d, _ in reciprocal_rank_fusion([["x"], ["y"]])] == ["x", "y"]
    assert reciprocal_rank_fusion([]) == []
    with pytest.raises(ValueError, match="at least 1"):
        reciprocal_rank_fusion([["a"]], k=0)


# -- filters --------------------------------------------------------------------------------


def test_filters_accept_known_fields_and_refuse_others() -> None:
    assert normalize_filters({"model": "m", "attributes.lang": ["en", "fr"]}) == {
        "model": ["m"],
        "attributes.lang": ["en", "fr"],
    }
    with pytest.raises(SearchError, match=r"cannot filter on 'text'.*attributes.<key>"):
        normalize_filters({"text": "x"})
    with pytest.raises(SearchError, match="no values"):
        normalize_filters({"id": []})


def test_filters_translate_to_query_dsl_and_sql() -> None:
    filters = {"id": ["a"], "attributes.lang": ["en", "o'c"]}
    assert filter_clauses(filters) == [{"ids": {"values": ["a"]}}, {"terms": {"attributes.lang": ["en", "o'c"]}}]
    assert filter_sql(filters) == (
        "id IN ('a') AND (array_has(attribute_pairs, 'lang=en') OR array_has(attribute_pairs, 'lang=o''c'))"
    )
    assert filter_sql({}) is None


# -- Elasticsearch mapping and bulk handling (a stand-in client; the real server is in integration) --


def test_mapping_pins_int8_hnsw_with_model_dims_and_records_the_model() -> None:
    mapping = render_mapping(IndexMeta("minilm", "1", 384, "cosine"), ElasticsearchSettings())
    vector = mapping["properties"]["vector"]
    assert vector["dims"] == 384
    assert vector["similarity"] == "cosine"
    assert vector["index_options"]["type"] == "int8_hnsw"
    assert mapping["_meta"]["inferstream"] == {"model": "minilm", "version": "1", "dims": 384, "similarity": "cosine"}
    assert mapping["properties"]["text"] == {"type": "text", "analyzer": "standard"}
    assert mapping["dynamic"] == "strict"


def test_vectors_travel_as_big_endian_base64() -> None:
    import base64

    raw = base64.b64decode(encode_vector(np.array([1.0, -2.5], dtype=np.float32)))
    assert np.frombuffer(raw, dtype=">f4").tolist() == [1.0, -2.5]


class _BulkClient:
    """Answers bulk requests with scripted per-item statuses (or raises)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[list[dict[str, Any]]] = []

    def bulk(self, operations: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append(operations)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        actions = [op for op in operations if set(op) & {"index", "delete"}]
        items = []
        for action, status in zip(actions, answer, strict=True):
            kind = next(iter(action))
            result: dict[str, Any] = {"_id": action[kind]["_id"], "status": status}
            if status >= 300:
                result["error"] = {"type": "document_parsing_exception", "reason": f"status {status}"}
            items.append({kind: result})
        return {"errors": any(s >= 300 for s in answer), "items": items}

    def close(self) -> None:
        pass


def test_bulk_refusals_come_back_by_position_and_transient_items_are_retried() -> None:
    client = _BulkClient([201, 400, 429, 404], [201])
    store = ElasticsearchStore(ElasticsearchSettings(url="http://127.0.0.1:1"), client=client)
    store.add(_doc("a", [1, 0, 0, 0]))
    store.add(_doc("b", [0, 1, 0, 0]))
    store.add(_doc("c", [0, 0, 1, 0]))
    store.add(Delete("gone"))  # 404 on delete: already gone, done
    with pytest.raises(SinkBackpressureError) as raised:
        store.flush()
    assert raised.value.retry_after > 0
    assert store.pending == 1  # only the 429 document waits
    rejected = store.flush()
    assert [(r.position, r.error_class) for r in rejected] == [(1, "IndexRejected")]
    assert "document_parsing_exception" in rejected[0].reason
    assert [op["index"]["_id"] for op in client.requests[1] if "index" in op] == ["c"]


def test_unreachable_server_is_backpressure_and_keeps_everything() -> None:
    client = _BulkClient(TransportConnectionError("refused"), [200])
    store = ElasticsearchStore(ElasticsearchSettings(url="http://127.0.0.1:1"), client=client)
    store.add(_doc("a", [1, 0, 0, 0]))
    with pytest.raises(SinkBackpressureError, match="unreachable"):
        store.flush()
    assert store.pending == 1
    assert store.flush() == []
    assert store.pending == 0


def test_only_the_last_operation_on_an_id_is_sent() -> None:
    client = _BulkClient([200, 200])
    store = ElasticsearchStore(ElasticsearchSettings(url="http://127.0.0.1:1"), client=client)
    store.add(_doc("a", [1, 0, 0, 0]))
    store.add(_doc("b", [0, 1, 0, 0]))
    store.add(Delete("a"))
    assert store.flush() == []
    sent = [next(iter(op.items())) for op in client.requests[0] if set(op) & {"index", "delete"}]
    assert [(kind, body["_id"]) for kind, body in sent] == [("delete", "a"), ("index", "b")]


def test_buffer_is_bounded() -> None:
    store = MemoryStore(max_buffered=2)
    store.add(Delete("a"))
    store.add(Delete("b"))
    with pytest.raises(SinkError, match="flush"):
        store.add(Delete("c"))


# -- the embedded store (LanceDB runs in-process) --------------------------------------------


def _embedded(path: Path) -> EmbeddedStore:
    return EmbeddedStore(path, ElasticsearchSettings(index="docs"))


def test_embedded_upserts_by_id_deletes_and_refuses_wrong_dims(tmp_path: Path) -> None:
    store = _embedded(tmp_path)
    store.setup(META)
    store.add(_doc("a", [1, 0, 0, 0], "the cat sat", lang="en"))
    store.add(_doc("b", [0, 1, 0, 0], "dogs bark loudly", lang="fr"))
    store.add(_doc("bad", [1, 0, 0]))
    assert [r.position for r in store.flush()] == [2]
    store.add(_doc("a", [0.9, 0.1, 0, 0], "the cat sat on the mat", lang="en"))  # same id: replaced
    store.add(_doc("c", [0, 0, 1, 0], "birds", lang="en"))
    store.add(Delete("c"))
    store.add(Delete("never-there"))
    assert store.flush() == []
    assert store.count() == 2
    hits = store.knn(np.array([1, 0, 0, 0], np.float32), 5, num_candidates=10, filters={})
    assert [h.id for h in hits] == ["a", "b"]
    assert hits[0].text == "the cat sat on the mat"
    assert hits[0].attributes == {"lang": "en"}
    assert hits[0].score == pytest.approx((1 + 0.9 / np.hypot(0.9, 0.1)) / 2, rel=1e-4)
    assert [h.id for h in store.text_search("cat", 5, filters={})] == ["a"]
    only_fr = store.knn(np.array([1, 0, 0, 0], np.float32), 5, num_candidates=10, filters={"attributes.lang": ["fr"]})
    assert [h.id for h in only_fr] == ["b"]
    store.close()


def test_embedded_store_persists_and_takes_one_writer(tmp_path: Path) -> None:
    first = _embedded(tmp_path)
    first.setup(META)
    first.add(_doc("a", [1, 0, 0, 0], "kept"))
    first.flush()
    second = _embedded(tmp_path)
    with pytest.raises(SinkError, match="one writer"):
        second.setup(META)
    reader = _embedded(tmp_path)  # searching needs no lock
    assert reader.meta() == META
    assert reader.count() == 1
    first.close()
    second.setup(META)  # the first writer is gone: the next one may start
    second.close()
    other = _embedded(tmp_path)
    with pytest.raises(SinkError, match=r"holds m:1 vectors \(4 dims"):
        other.setup(IndexMeta("m", "2", 4, "cosine"))
    other.close()


def test_memory_store_is_a_vector_store() -> None:
    assert isinstance(MemoryStore(), VectorStore)


def test_search_without_an_index_says_what_to_run(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    with Searcher(settings) as searcher, pytest.raises(SearchError, match="stream index"):
        searcher.search("anything")


# -- the local Elasticsearch's pure parts ---------------------------------------------------


def test_local_elasticsearch_config_is_single_node_on_loopback(tmp_path: Path) -> None:
    server = ElasticsearchServer(tmp_path, port=19200, transport_port=19300)
    config = server.render_config()
    for line in (
        'discovery.type: "single-node"',
        'xpack.security.enabled: "false"',
        'network.host: "127.0.0.1"',
        'http.port: "19200"',
        'cluster.routing.allocation.disk.threshold_enabled: "false"',
    ):
        assert line in config
    assert server.url == "http://127.0.0.1:19200"
    assert not server.running
    with pytest.raises(Exception, match="JVM size"):
        ElasticsearchServer(tmp_path, heap="lots")


def test_elasticsearch_credentials_reach_the_client_only() -> None:
    settings = Settings(
        elasticsearch={"url": "https://es:9200", "api_key": "k3y", "ca_certs": "/etc/ca.pem", "verify_certs": True}
    )
    options = settings.elasticsearch.client_options()
    assert options["api_key"] == "k3y"
    assert options["ca_certs"] == "/etc/ca.pem"
    assert "k3y" not in repr(settings)
    basic = ElasticsearchSettings(url="https://es:9200", username="svc", password="pw").client_options()
    assert basic["basic_auth"] == ("svc", "pw")
    assert "api_key" not in basic


def test_embedded_writes_through_the_native_merge_and_falls_back_to_the_public_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lancedb.merge import LanceMergeInsertBuilder

    public = LanceMergeInsertBuilder.execute
    calls: list[int] = []

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return public(self, *args, **kwargs)

    monkeypatch.setattr(LanceMergeInsertBuilder, "execute", counted)
    store = _embedded(tmp_path)
    store.setup(META)
    store.add(_doc("a", [1, 0, 0, 0], "native"))
    assert store.flush() == []
    assert calls == []  # the pinned lancedb: rows go straight to the native merge
    store._native_schema = False  # as for a table in another schema: LanceDB's public path casts
    store.add(_doc("a", [0, 1, 0, 0], "public"))
    store.add(_doc("b", [0, 0, 1, 0], "public"))
    assert store.flush() == []
    assert calls == [1]
    assert store.count() == 2
    hits = store.knn(np.array([0, 1, 0, 0], np.float32), 1, num_candidates=10, filters={})
    assert (hits[0].id, hits[0].text) == ("a", "public")
    store.close()


def test_embedded_refuses_vectors_with_nan_or_infinity(tmp_path: Path) -> None:
    store = _embedded(tmp_path)
    store.setup(META)
    store.add(_doc("nan", [1, float("nan"), 0, 0]))
    store.add(_doc("ok", [1, 0, 0, 0]))
    store.add(_doc("inf", [float("inf"), 0, 0, 0]))
    store.add(_doc("zero", [0, 0, 0, 0]))
    refused = store.flush()
    assert [(r.position, "NaN or infinite" in r.reason) for r in refused] == [(0, True), (2, True), (3, False)]
    assert store.count() == 1
    store.close()


def test_bulk_from_columns_sends_the_last_operation_on_each_id_with_each_rows_vector() -> None:
    client = _BulkClient([200, 200, 200])
    store = ElasticsearchStore(ElasticsearchSettings(url="http://127.0.0.1:1"), client=client)
    block = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    store.extend(
        Ops(
            ids=["a", "b", "a", "c"],
            deletes=[False, False, True, False],
            vectors=block,
            models=["m"] * 4,
            versions=["1"] * 4,
            event_times=[when] * 4,
            texts=["ta", "tb", None, "tc"],
            attributes=[{}, {"lang": "en"}, {}, {}],
        )
    )
    assert store.flush() == []
    sent = client.requests[0]
    actions = [next(iter(op.items())) for op in sent if set(op) & {"index", "delete"}]
    assert [(kind, body["_id"]) for kind, body in actions] == [("delete", "a"), ("index", "b"), ("index", "c")]
    docs = [op for op in sent if "vector" in op]
    assert [d["vector"] for d in docs] == [encode_vector(block[1]), encode_vector(block[3])]
    assert docs[0]["attributes"] == {"lang": "en"}
    assert docs[0]["event_time"] == when.isoformat()
