"""Retrieval evaluation (``Client.evaluate_retrieval``): the index's searches against labels and exact search.

For each labelled query and each mode (kNN, hybrid) it runs the search as ``inferstream
search`` does, and the same search made exact: the query's vector scored against every
vector read back from the index (:meth:`~inferstream.connectors.vectors.VectorStore.scan`)
with the index's own similarity, fused with the same BM25 hits in hybrid mode. Both are
scored against the relevant ids (recall@k, MRR@k, nDCG@k), and the index against exact
search: which share of the exact top ``k`` it found (the approximate index's recall), and,
for kNN, the mean exact score of its top ``k`` beside exact search's (never higher).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from inferstream.evaluation.exact import ExactSearch
from inferstream.evaluation.queries import LabelledQuery
from inferstream.evaluation.retrieval import Ranking, ndcg_at_k, overlap_at_k, recall_at_k, reciprocal_rank
from inferstream.search import Searcher, SearchHit, hybrid_window, reciprocal_rank_fusion

Mode = Literal["knn", "hybrid"]
MODES: tuple[Mode, ...] = ("knn", "hybrid")
#: Exact search keeps this many documents past the deepest cut, so ties across it stay whole.
TIE_SLACK = 16


@dataclass(frozen=True, slots=True)
class AtK:
    """Means over the queries at one cut ``k``."""

    k: int
    recall: float
    mrr: float
    ndcg: float
    #: The share of exact search's top k that the index's top k holds (1.0 on exact search itself).
    exact_recall: float = 1.0
    #: The mean exact score of the top k (a missing hit scores 0); kNN only.
    score: float | None = None


@dataclass(frozen=True, slots=True)
class ModeResult:
    """One mode's results: the index's search and exact search, at every k."""

    mode: Mode
    index: list[AtK]
    exact: list[AtK]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What one query found in each mode: the index's ids and exact search's, best first."""

    id: str
    question: str
    relevant: list[str]
    found: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    """The outcome of :func:`evaluate_retrieval`."""

    store: str
    model: str
    similarity: str
    documents: int
    queries: int
    k: list[int]
    modes: list[ModeResult]
    #: Relevant ids of the queries that are not in the index (a query set for another corpus?).
    missing_relevant: list[str]
    per_query: list[QueryResult]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)


def _ranking(hits: Sequence[SearchHit]) -> Ranking:
    return Ranking(tuple(hit.id for hit in hits), tuple(hit.score for hit in hits))


def _fused(exact: Ranking, text_ids: Sequence[str], window: int, depth: int) -> Ranking:
    fused = reciprocal_rank_fusion([exact.ids[:window], text_ids])[:depth]
    return Ranking(tuple(doc_id for doc_id, _ in fused), tuple(score for _, score in fused))


def _score_at(scores: Sequence[float], k: int) -> float:
    return sum(scores[:k]) / k


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _at_k(
    rankings: Sequence[Ranking],
    queries: Sequence[LabelledQuery],
    k: int,
    exact: Sequence[Ranking],
    scores: Sequence[Sequence[float]] | None,
) -> AtK:
    return AtK(
        k=k,
        recall=_mean([recall_at_k(r, q.relevant, k) for r, q in zip(rankings, queries, strict=True)]),
        mrr=_mean([reciprocal_rank(r, q.relevant, k) for r, q in zip(rankings, queries, strict=True)]),
        ndcg=_mean([ndcg_at_k(r, q.relevant, k) for r, q in zip(rankings, queries, strict=True)]),
        exact_recall=_mean([overlap_at_k(r.ids, e, k) for r, e in zip(rankings, exact, strict=True)]),
        score=None if scores is None else _mean([_score_at(s, k) for s in scores]),
    )


def _check(queries: Sequence[LabelledQuery], k: Sequence[int], modes: Sequence[str]) -> tuple[list[int], list[Mode]]:
    from inferstream.errors import SearchError

    if not queries:
        raise SearchError("there are no queries to evaluate")
    cuts = sorted(set(k))
    if not cuts or cuts[0] < 1:
        raise SearchError(f"every k must be at least 1, not {list(k)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise SearchError(f"unknown mode {', '.join(unknown) or '(none)'}: use {' or '.join(MODES)}")
    return cuts, [m for m in MODES if m in modes]


def evaluate_retrieval(
    searcher: Searcher,
    queries: Sequence[LabelledQuery],
    *,
    k: Sequence[int] = (1, 5, 10),
    modes: Sequence[str] = ("knn",),
    num_candidates: int | None = None,
    batch_size: int = 1000,
) -> RetrievalReport:
    """Recall@k, MRR@k and nDCG@k of the index's searches on labelled ``queries``, and of exact search.

    ``modes`` holds ``knn`` and/or ``hybrid``; each search runs as ``search()`` runs it
    (``num_candidates`` as there), and again exactly over every vector of the index,
    read ``batch_size`` at a time. Queries come from
    :func:`~inferstream.evaluation.queries.parse_queries` (a JSONL file) or
    :func:`~inferstream.evaluation.queries.shipped_queries` (the demo corpus's set).
    """
    cuts, wanted = _check(queries, k, modes)
    depth = cuts[-1]
    candidates = num_candidates or searcher.settings.elasticsearch.num_candidates
    window = hybrid_window(depth, candidates) if "hybrid" in wanted else depth
    embedder = searcher.embedder()
    found = {
        mode: [searcher.search(q.question, depth, hybrid=mode == "hybrid", num_candidates=candidates) for q in queries]
        for mode in wanted
    }
    # One query at a time, as the searcher embeds it: exact search starts from the same vector.
    vectors = [embedder.embed([q.question])[0] for q in queries]
    knn_ids = [[hit.id for hit in result.hits] for result in found.get("knn", [])]
    exact = ExactSearch(embedder.meta.similarity, vectors, window + TIE_SLACK, watch=knn_ids)
    relevant = {doc_id for q in queries for doc_id in q.relevant}
    for ids, batch in searcher.store.scan(batch_size):
        exact.add(ids, batch)
        relevant.difference_update(ids)
    exact_knn = exact.rankings()
    results: list[ModeResult] = []
    per_query = [QueryResult(str(q.id), q.question, list(q.relevant)) for q in queries]
    for mode in wanted:
        index = [_ranking(result.hits) for result in found[mode]]
        index_scores: list[list[float]] | None = None
        exact_scores: list[list[float]] | None = None
        if mode == "knn":
            reference = exact_knn
            index_scores = [[seen.get(i, 0.0) for i in r.ids] for r, seen in zip(index, exact.watched, strict=True)]
            exact_scores = [list(r.scores) for r in exact_knn]
        else:
            text = [searcher.store.text_search(q.question, window, filters={}) for q in queries]
            reference = [
                _fused(e, [h.id for h in hits], window, depth + TIE_SLACK)
                for e, hits in zip(exact_knn, text, strict=True)
            ]
        results.append(
            ModeResult(
                mode=mode,
                index=[_at_k(index, queries, cut, reference, index_scores) for cut in cuts],
                exact=[_at_k(reference, queries, cut, reference, exact_scores) for cut in cuts],
            )
        )
        for row, r, e in zip(per_query, index, reference, strict=True):
            row.found[mode] = {"index": list(r.ids), "exact": list(e.ids[:depth])}
    return RetrievalReport(
        store=searcher.store.location,
        model=embedder.meta.ref,
        similarity=embedder.meta.similarity,
        documents=exact.documents,
        queries=len(queries),
        k=cuts,
        modes=results,
        missing_relevant=sorted(relevant),
        per_query=per_query,
    )
