"""Search the vector index: kNN on the query's embedding, optionally fused with BM25; retrieval for RAG.

>>> with Searcher(settings) as searcher:                            # doctest: +SKIP
...     result = searcher.search("how do I open a file", k=5, hybrid=True)
...     for hit in result.hits:
...         print(hit.id, round(hit.score, 3), hit.text[:60])

The query is embedded here, in-process, with the model version the index was
built for (recorded in the index: Elasticsearch mapping ``_meta``, LanceDB schema
metadata), so queries and documents always share one vector space. kNN runs in
the store (``elasticsearch.num_candidates`` per shard); hybrid search also runs
BM25 on the text field and fuses both rankings with reciprocal rank fusion here
on the client (the minimal Elasticsearch has no rank module, and the embedded
store gets the same fusion). Each result says how long embedding and searching took.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from inferstream.closing import Closing
from inferstream.config import Settings
from inferstream.connectors.stores import open_store
from inferstream.connectors.vectors import FloatArray, Hit, IndexMeta, VectorStore, normalize_filters
from inferstream.errors import ModelError, SearchError

#: How long a searcher trusts the index's recorded model before asking again (an index rebuilt
#: for another model is noticed within this time).
META_TTL_S = 30.0
#: RRF's rank constant: 60, as in the original paper and in Elasticsearch's retriever.
RRF_K = 60

Filters = Mapping[str, str | Sequence[str]]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked id lists: ``score(d) = Σ 1 / (k + rank(d))`` (ranks from 1), best first.

    Ties keep the order in which ids were first seen (earlier lists first).
    """
    if k < 1:
        raise ValueError(f"the RRF rank constant must be at least 1, not {k}")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


def hybrid_window(k: int, num_candidates: int) -> int:
    """How many hits of each list (kNN, BM25) hybrid search fuses for ``k`` results."""
    return max(k, min(num_candidates, 100))


@dataclass(frozen=True, slots=True)
class Latency:
    """Where a query's time went, in milliseconds."""

    embed_ms: float
    search_ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class SearchHit(Hit):
    """One result: the store's hit (its score fused in hybrid search), and its rank in each list."""

    knn_rank: int | None = None
    text_rank: int | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What ``search()`` found, with the model the query was embedded with and the latency."""

    query: str
    hits: list[SearchHit]
    model: str
    hybrid: bool
    latency: Latency


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage for RAG: the text, where it came from, and how well it matched."""

    text: str
    source: str
    score: float
    document_id: str
    event_time: datetime | None = None
    attributes: dict[str, str] = field(default_factory=dict)


class QueryEmbedder:
    """Embeds query texts with one model version of the repository (ONNX Runtime, in-process)."""

    def __init__(self, settings: Settings, meta: IndexMeta) -> None:
        from inferstream.serving.onnx import OnnxModel
        from inferstream.serving.repository import ModelRepository
        from inferstream.serving.text import TextPreprocessor

        try:
            version = ModelRepository(settings.models_dir).get(meta.model, meta.version)
        except ModelError as exc:
            raise SearchError(
                f"the index holds {meta.ref} vectors, so queries must be embedded with {meta.ref}, "
                f"which is not in the model repository: {exc}"
            ) from None
        self.meta = meta
        self.config = version.config
        if self.config.kind != "embedder" or self.config.outputs.embedding is None:
            raise SearchError(f"{meta.ref} in {settings.models_dir} is a {self.config.kind}, not an embedder")
        self._text = TextPreprocessor(self.config, version.directory).load()
        self._model = OnnxModel(version).load()
        self._lock = threading.Lock()  # one ONNX run at a time per embedder keeps latency predictable

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """One vector per text (pooled and normalised as the model's config says)."""
        from inferstream.schemas.records import EmbeddingRequest
        from inferstream.serving.text import pool

        requests = [
            EmbeddingRequest.model_construct(
                request_id=str(i), model=self.meta.model, version=self.meta.version, document_id=str(i), text=t
            )
            for i, t in enumerate(texts)
        ]
        prepared = self._text.prepare(requests)
        if prepared.errors:
            position, reason = next(iter(prepared.errors.items()))
            raise SearchError(f"cannot embed query {texts[position][:80]!r} with {self.meta.ref}: {reason}")
        spec = self.config.outputs
        assert spec.embedding is not None
        with self._lock:
            hidden = self._model.run(prepared.feeds)[spec.embedding]
        vectors = pool(hidden, prepared.attention_mask, spec.pooling, spec.normalize)
        if vectors.shape[1] != self.meta.dims:
            raise SearchError(f"{self.meta.ref} gives {vectors.shape[1]}-dim vectors; the index holds {self.meta.dims}")
        return vectors


class Searcher(Closing):
    """Runs searches on the configured index (Elasticsearch, or the embedded store)."""

    def __init__(self, settings: Settings | None = None, *, store: VectorStore | None = None) -> None:
        self.settings = settings or Settings.load()
        self.store = store or open_store(self.settings)
        self._embedder: QueryEmbedder | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def embedder(self) -> QueryEmbedder:
        """The query embedder for the model the index was built with (loaded once, re-checked every 30 s)."""
        with self._lock:
            if self._embedder is not None and time.monotonic() - self._checked < META_TTL_S:
                return self._embedder
            meta = self.store.meta()
            if meta is None:
                raise SearchError(
                    f"there is no index at {self.store.location} yet: run the index sink "
                    "(`inferstream stream index`) on the embeddings topic first"
                )
            if self._embedder is None or self._embedder.meta != meta:
                self._embedder = QueryEmbedder(self.settings, meta)
            self._checked = time.monotonic()
            return self._embedder

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        filters: Filters | None = None,
        hybrid: bool = False,
        num_candidates: int | None = None,
    ) -> SearchResult:
        """The ``k`` documents of the vector index (Elasticsearch, or the embedded store) nearest to ``text``.

        The query is embedded with the model version that built the index; ``hybrid``
        fuses kNN with BM25 on the text (reciprocal rank fusion). ``filters`` maps ``id``,
        ``model``, ``version`` or ``attributes.<key>`` to a value or a list of values (any
        matches); every filter must hold.
        """
        if k < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        if not text or text.isspace():
            raise SearchError("the query text is empty")
        wanted = normalize_filters(filters)
        candidates = num_candidates or self.settings.elasticsearch.num_candidates
        embedder = self.embedder()  # loading the model (first query only) is not the query's latency
        started = time.perf_counter()
        vector = embedder.embed([text])[0]
        embedded = time.perf_counter()
        if hybrid:
            window = hybrid_window(k, candidates)
            knn_hits = self.store.knn(vector, window, num_candidates=max(candidates, window), filters=wanted)
            text_hits = self.store.text_search(text, window, filters=wanted)
            hits = _fuse(knn_hits, text_hits, k)
        else:
            knn_hits = self.store.knn(vector, k, num_candidates=candidates, filters=wanted)
            hits = [_search_hit(hit, hit.score, knn_rank=rank) for rank, hit in enumerate(knn_hits, start=1)]
        finished = time.perf_counter()
        return SearchResult(
            query=text,
            hits=hits,
            model=embedder.meta.ref,
            hybrid=hybrid,
            latency=Latency(
                embed_ms=(embedded - started) * 1000,
                search_ms=(finished - embedded) * 1000,
                total_ms=(finished - started) * 1000,
            ),
        )

    def retrieve(self, question: str, k: int = 5, *, filters: Filters | None = None) -> list[Passage]:
        """Passages for a RAG prompt: hybrid search, documents with text only, each with its source.

        The source is the document's ``source`` attribute when it has one, else its id.
        """
        result = self.search(question, k, filters=filters, hybrid=True)
        return [
            Passage(
                text=hit.text,
                source=hit.attributes.get("source", hit.id),
                score=hit.score,
                document_id=hit.id,
                event_time=hit.event_time,
                attributes=hit.attributes,
            )
            for hit in result.hits
            if hit.text
        ]

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()


def _search_hit(hit: Hit, score: float, *, knn_rank: int | None = None, text_rank: int | None = None) -> SearchHit:
    fields = {f.name: getattr(hit, f.name) for f in dataclasses.fields(Hit)}
    return SearchHit(**{**fields, "score": score}, knn_rank=knn_rank, text_rank=text_rank)


def _fuse(knn_hits: list[Hit], text_hits: list[Hit], k: int) -> list[SearchHit]:
    by_id = {hit.id: hit for hit in text_hits} | {hit.id: hit for hit in knn_hits}
    knn_ranks = {hit.id: rank for rank, hit in enumerate(knn_hits, start=1)}
    text_ranks = {hit.id: rank for rank, hit in enumerate(text_hits, start=1)}
    fused = reciprocal_rank_fusion([[h.id for h in knn_hits], [h.id for h in text_hits]])[:k]
    return [
        _search_hit(by_id[doc_id], score, knn_rank=knn_ranks.get(doc_id), text_rank=text_ranks.get(doc_id))
        for doc_id, score in fused
    ]
