"""Elasticsearch as the vector index: mapping on start, bulk upserts and deletes, kNN and BM25.

The index is created with an explicit mapping (and an index template of the same
name, so an index deleted while the sink runs comes back with the right mapping
instead of a guessed one)::

    vector      dense_vector: the model's dims and similarity, index type pinned
                (int8_hnsw by default; recent servers would pick bbq_hnsw for 384+ dims)
    text        text, standard analyzer (BM25; the minimal server has no language analyzers)
    model, version   keyword
    event_time  date
    attributes  flattened (filters on attributes.<key>)
    _meta.inferstream   model, version, dims, similarity: what search embeds queries with

Documents are written with the embedding id as ``_id`` (``index`` operations, so
writing one twice leaves one document) and vectors as base64 of big-endian
float32, which the server decodes itself: no float-by-float JSON on the hot path.
A tombstone is a ``delete``; deleting a missing document counts as done.

Per-document refusals (a mapping conflict, a vector the similarity cannot take)
come back from ``flush()`` by position for the dead-letter topic. A server that is
unreachable, times out, or answers 429/5xx raises ``SinkBackpressureError``: the
operations stay buffered for the next ``flush()``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np

from inferstream.config import ElasticsearchSettings
from inferstream.connectors.vectors import (
    FloatArray,
    Hit,
    IndexMeta,
    Op,
    OpBuffer,
    Ops,
    Rejection,
)
from inferstream.errors import SearchError, SinkBackpressureError, SinkError

log = logging.getLogger(__name__)

#: Key under the mapping's ``_meta`` that holds what the index was built for.
META_KEY = "inferstream"
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
_MAX_REASON = 300
_SOURCE_FIELDS = {"includes": ["text", "model", "version", "event_time", "attributes"]}


def encode_vector(vector: FloatArray) -> str:
    """A vector as the server's binary form: base64 of big-endian float32."""
    return base64.b64encode(np.asarray(vector, dtype=">f4").tobytes()).decode("ascii")


def _encoded(vectors: FloatArray | list[FloatArray]) -> list[str]:
    """Each row's vector as :func:`encode_vector` writes it (a block: made big-endian once)."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        big = np.asarray(vectors, dtype=">f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in big]
    return [encode_vector(vector) for vector in vectors]


def render_mapping(meta: IndexMeta, settings: ElasticsearchSettings) -> dict[str, Any]:
    """The index mapping for vectors of ``meta``."""
    index_options: dict[str, Any] = {"type": settings.index_type}
    if settings.index_type.endswith("hnsw"):
        index_options |= {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction}
    return {
        "_meta": {
            META_KEY: {"model": meta.model, "version": meta.version, "dims": meta.dims, "similarity": meta.similarity}
        },
        "dynamic": "strict",
        "properties": {
            "vector": {
                "type": "dense_vector",
                "dims": meta.dims,
                "similarity": meta.similarity,
                "index": True,
                "index_options": index_options,
            },
            "text": {"type": "text", "analyzer": "standard"},
            "model": {"type": "keyword"},
            "version": {"type": "keyword"},
            "event_time": {"type": "date"},
            "attributes": {"type": "flattened"},
        },
    }


def replicas_for(data_nodes: int) -> int:
    """Replicas of the index on a cluster of ``data_nodes``: one copy more wherever a second node can hold it."""
    return 1 if data_nodes >= 2 else 0


def render_settings(settings: ElasticsearchSettings, *, data_nodes: int = 1) -> dict[str, Any]:
    """Index settings: shards, replicas (``settings.replicas``, else from ``data_nodes``), refresh interval."""
    return {
        "number_of_shards": settings.shards,
        "number_of_replicas": settings.replicas if settings.replicas is not None else replicas_for(data_nodes),
        "refresh_interval": settings.refresh_interval,
    }


def filter_clauses(filters: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Query DSL filter clauses for normalized filters (every field must match one of its values)."""
    clauses: list[dict[str, Any]] = []
    for name, values in filters.items():
        if name == "id":
            clauses.append({"ids": {"values": list(values)}})
        else:
            clauses.append({"terms": {name: list(values)}})
    return clauses


def _meta_of(mapping: Mapping[str, Any]) -> IndexMeta | None:
    meta = mapping.get("_meta", {}).get(META_KEY)
    if not isinstance(meta, Mapping):
        return None
    return IndexMeta(
        model=str(meta["model"]),
        version=str(meta["version"]),
        dims=int(meta["dims"]),
        similarity=str(meta["similarity"]),
    )


class ElasticsearchStore:
    """The vector index in a real Elasticsearch (``settings.url``); see the module docstring."""

    def __init__(
        self,
        settings: ElasticsearchSettings,
        *,
        client: Any = None,
        max_buffered: int | None = None,
    ) -> None:
        from elasticsearch import Elasticsearch

        if settings.url is None and client is None:
            raise SinkError(
                "elasticsearch.url is not set: use the embedded store, or set INFERSTREAM_ELASTICSEARCH__URL"
            )
        self.settings = settings
        self.index = settings.index
        self.location = f"{settings.url} index {settings.index}"
        self.max_buffered = max_buffered or max(settings.flush_max_records * 2, 1000)
        # No retries inside the client: the sink's own backoff decides, and stalls rather than drops.
        self.client = client or Elasticsearch(**settings.client_options(), max_retries=0, retry_on_timeout=False)
        self._ops = OpBuffer(self.max_buffered, self.location)
        self._rejected: list[Rejection] = []

    # -- setup ----------------------------------------------------------------------------

    def setup(self, meta: IndexMeta) -> None:
        """Put the index template and create the index, or check the existing one holds ``meta``."""
        from elasticsearch import BadRequestError

        mapping = render_mapping(meta, self.settings)
        with self._transient("setting up"):
            data_nodes = 1
            if self.settings.replicas is None:  # picked from the cluster: a replica once a second node holds data
                data_nodes = int(self.client.cluster.health()["number_of_data_nodes"])
            index_settings = render_settings(self.settings, data_nodes=data_nodes)
            self.client.indices.put_index_template(
                name=f"inferstream-{self.index}",
                index_patterns=[self.index],
                template={"settings": index_settings, "mappings": mapping},
                priority=500,
                meta={"managed_by": "inferstream"},
            )
            if not self.client.indices.exists(index=self.index):
                try:
                    self.client.indices.create(index=self.index, settings=index_settings, mappings=mapping)
                except BadRequestError as exc:
                    if exc.error != "resource_already_exists_exception":  # another copy made it first
                        raise
            existing = self._meta()
        if existing is None:
            raise SinkError(
                f"Elasticsearch index {self.index} exists but was not made by inferstream (no _meta.{META_KEY}); "
                "set elasticsearch.index to another name or delete the index"
            )
        if existing != meta:
            raise SinkError(
                f"Elasticsearch index {self.index} holds {existing.ref} vectors ({existing.dims} dims, "
                f"{existing.similarity}); this sink writes {meta.ref} ({meta.dims} dims, {meta.similarity}): "
                "set elasticsearch.index to another name, or delete the index to rebuild it"
            )

    def meta(self) -> IndexMeta | None:
        """What the index holds, from its mapping's ``_meta`` (None when there is no index)."""
        with _searching(self):
            return self._meta()

    def _meta(self) -> IndexMeta | None:
        from elasticsearch import NotFoundError

        try:
            response = self.client.indices.get_mapping(index=self.index)
        except NotFoundError:
            return None
        body = response.body if hasattr(response, "body") else response
        for value in body.values():
            return _meta_of(value.get("mappings", {}))
        return None

    # -- writing --------------------------------------------------------------------------

    def add(self, op: Op) -> None:
        """Buffer one upsert or delete."""
        self._ops.add(op)

    def extend(self, ops: Ops) -> None:
        """Buffer many upserts and deletes, as columns."""
        self._ops.extend(ops)

    @property
    def pending(self) -> int:
        """Operations buffered and not yet acknowledged."""
        return len(self._ops)

    def flush(self) -> list[Rejection]:
        """One bulk request for everything buffered; refusals come back, transient failures raise."""
        if not self._ops:
            return self._done()
        positions, ops = self._ops.latest()  # the last operation on each id
        index = self.index
        vectors = _encoded(ops.vectors)
        body: list[dict[str, Any]] = []
        for row, doc_id in enumerate(ops.ids):
            if ops.deletes[row]:
                body.append({"delete": {"_index": index, "_id": doc_id}})
            else:
                body.append({"index": {"_index": index, "_id": doc_id}})
                body.append(
                    {
                        "vector": vectors[row],
                        "text": ops.texts[row],
                        "model": ops.models[row],
                        "version": ops.versions[row],
                        "event_time": ops.event_times[row].isoformat(),
                        "attributes": dict(ops.attributes[row]),
                    }
                )
        with self._transient(f"writing {len(ops)} documents"):
            response = self.client.bulk(operations=body)
        if len(response["items"]) != len(ops):
            raise SinkError(f"{self.location}: bulk answered {len(response['items'])} items for {len(ops)} operations")
        retry: list[int] = []
        reasons: list[str] = []
        for row, item in enumerate(response["items"]):
            result = next(iter(item.values()))
            status = int(result.get("status", 500))
            if status < 300 or (status == 404 and ops.deletes[row]):
                continue
            error = result.get("error") or {}
            # The server quotes the offending value, which may be huge: keep the start.
            reason = f"{error.get('type', 'error')}: {str(error.get('reason', status))[:_MAX_REASON]}"
            if status in _RETRY_STATUSES:
                retry.append(row)
                reasons.append(reason)
            else:
                refusal = f"Elasticsearch refused document {ops.ids[row]}: {reason}"
                self._rejected.append(Rejection(positions[row], refusal, "IndexRejected"))
        if retry:
            self._ops.keep([positions[row] for row in retry], ops.take(retry))
            raise SinkBackpressureError(
                f"{self.location}: {len(retry)} documents not written yet ({reasons[0]}); retrying",
                retry_after=self.settings.retry_backoff_min_ms / 1000,
            )
        return self._done()

    def _done(self) -> list[Rejection]:
        rejected, self._rejected = self._rejected, []
        self._ops.clear()
        return rejected

    def _transient(self, doing: str) -> _Transient:
        return _Transient(self, doing)

    # -- searching ------------------------------------------------------------------------

    def knn(
        self, vector: FloatArray, k: int, *, num_candidates: int, filters: Mapping[str, Sequence[str]]
    ) -> list[Hit]:
        """Approximate nearest neighbours (the index's HNSW graph), ``num_candidates`` per shard.

        On a quantized index the best ``rescore_oversample × k`` are re-scored with the
        float vectors, which recovers most of the recall the quantization costs.
        """
        knn: dict[str, Any] = {
            "field": "vector",
            "query_vector": np.asarray(vector, dtype=np.float32).tolist(),
            "k": k,
            "num_candidates": max(num_candidates, k),
        }
        if self.settings.rescore_oversample >= 1 and self.settings.index_type not in ("hnsw", "flat"):
            knn["rescore_vector"] = {"oversample": self.settings.rescore_oversample}
        clauses = filter_clauses(filters)
        if clauses:
            knn["filter"] = clauses
        return self._search(knn=knn, size=k)

    def text_search(self, query: str, k: int, *, filters: Mapping[str, Sequence[str]]) -> list[Hit]:
        """BM25 on the text field."""
        body = {"bool": {"must": [{"match": {"text": query}}], "filter": filter_clauses(filters)}}
        return self._search(query=body, size=k)

    def _search(self, **request: Any) -> list[Hit]:
        with _searching(self):
            response = self.client.search(index=self.index, source=_SOURCE_FIELDS, **request)
        hits = []
        for raw in response["hits"]["hits"]:
            source = raw.get("_source", {})
            event_time = source.get("event_time")
            hits.append(
                Hit(
                    id=raw["_id"],
                    score=float(raw["_score"]),
                    text=source.get("text"),
                    model=source.get("model", ""),
                    version=source.get("version", ""),
                    event_time=datetime.fromisoformat(event_time) if event_time else None,
                    attributes=dict(source.get("attributes") or {}),
                )
            )
        return hits

    def count(self) -> int:
        """Documents in the index (as of the last refresh)."""
        with _searching(self):
            return int(self.client.count(index=self.index)["count"])

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], FloatArray]]:
        """Every document's id and float vector (the server keeps them beside a quantized index), in batches.

        A scroll over the whole index: what it holds when the scan starts, whatever is written meanwhile.
        """
        from elasticsearch.helpers import scan

        ids: list[str] = []
        vectors: list[list[float]] = []
        with _searching(self):
            for raw in scan(self.client, index=self.index, size=batch_size, source=["vector"], scroll="5m"):
                vector = raw.get("_source", {}).get("vector")
                if vector is None:
                    continue  # a document the sink never wrote (no vector): nothing to compare
                ids.append(raw["_id"])
                vectors.append(vector)
                if len(ids) == batch_size:
                    yield ids, np.asarray(vectors, dtype=np.float32)
                    ids, vectors = [], []
        if ids:
            yield ids, np.asarray(vectors, dtype=np.float32)

    def refresh(self) -> None:
        """Make every write so far searchable now."""
        with _searching(self):
            self.client.indices.refresh(index=self.index)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


class _Transient:
    """Turns an unreachable, slow or overloaded server into ``SinkBackpressureError``."""

    def __init__(self, store: ElasticsearchStore, doing: str) -> None:
        self.store = store
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        if exc is None:
            return False
        retry_after = self.store.settings.retry_backoff_min_ms / 1000
        if isinstance(exc, TransportError):  # refused connections, timeouts, TLS failures
            raise SinkBackpressureError(
                f"Elasticsearch at {self.store.settings.url} is unreachable while {self.doing} "
                f"({type(exc).__name__}: {exc}); retrying, nothing is committed meanwhile",
                retry_after=retry_after,
            ) from exc
        if isinstance(exc, ApiError) and exc.status_code in _RETRY_STATUSES:
            raise SinkBackpressureError(
                f"Elasticsearch at {self.store.settings.url} answered {exc.status_code} while {self.doing}; retrying",
                retry_after=retry_after,
            ) from exc
        if isinstance(exc, ApiError):
            raise SinkError(
                f"Elasticsearch at {self.store.settings.url} refused {self.doing} on index {self.store.index}: "
                f"{exc} (check elasticsearch.* settings and the credentials' privileges)"
            ) from exc
        return False


@contextlib.contextmanager
def _searching(store: ElasticsearchStore) -> Iterator[None]:
    """Turns the client's errors on the read side into ``SearchError`` saying where and what."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError, NotFoundError

    try:
        yield
    except NotFoundError:
        raise SearchError(
            f"there is no index {store.index} at {store.settings.url} yet: run the index sink "
            "(`inferstream stream index`) on the embeddings topic first"
        ) from None
    except TransportError as exc:
        raise SearchError(f"Elasticsearch at {store.settings.url} is unreachable ({exc}): is it running?") from exc
    except ApiError as exc:
        raise SearchError(f"Elasticsearch at {store.settings.url} refused a request on {store.index}: {exc}") from exc
