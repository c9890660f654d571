"""Exact (brute-force) vector search: every document scored against every query, the best kept.

Scores are on Elasticsearch's scale for each similarity (the embedded store reports the
same), so an exact score and a store's score read alike::

    cosine              (1 + cos) / 2
    dot_product         (1 + dot) / 2
    l2_norm             1 / (1 + ||q - d||²)
    max_inner_product   dot + 1, or 1 / (1 - dot) below 0

Documents arrive in batches (:meth:`ExactSearch.add`), so an index larger than memory
is searched with one batch of vectors and the running best of each query held at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from inferstream.evaluation.retrieval import Ranking

SIMILARITIES = ("cosine", "dot_product", "l2_norm", "max_inner_product")
Scores = npt.NDArray[np.float64]


def _unit(matrix: Scores) -> Scores:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Scores = matrix / np.maximum(norms, 1e-12)
    return unit


def similarity_scores(similarity: str, queries: npt.ArrayLike, vectors: npt.ArrayLike) -> Scores:
    """A ``queries × vectors`` matrix of scores under ``similarity`` (float64: ties stay ties)."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    d = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dims, documents {d.shape[1]}")
    if similarity == "cosine":
        return (1.0 + _unit(q) @ _unit(d).T) / 2.0
    dot = q @ d.T
    if similarity == "dot_product":
        return (1.0 + dot) / 2.0
    if similarity == "max_inner_product":
        inner: Scores = np.where(dot < 0, 1.0 / (1.0 - np.minimum(dot, 0.0)), dot + 1.0)
        return inner
    if similarity == "l2_norm":
        squared: Scores = (q * q).sum(axis=1)[:, None] + (d * d).sum(axis=1)[None, :] - 2.0 * dot
        return 1.0 / (1.0 + np.maximum(squared, 0.0))
    raise ValueError(f"unknown similarity {similarity!r}: use one of {', '.join(SIMILARITIES)}")


class ExactSearch:
    """The ``depth`` best documents of each query over every batch added, and the scores of chosen ids.

    ``watch`` names, per query, documents whose exact score is wanted whatever their rank
    (the hits an approximate index returned, to compare like with like).
    """

    def __init__(
        self,
        similarity: str,
        queries: npt.ArrayLike,
        depth: int,
        *,
        watch: Sequence[Sequence[str]] = (),
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.similarity = similarity
        self.queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        self.depth = depth
        self.documents = 0
        count = len(self.queries)
        self._scores = np.full((count, 0), -np.inf)
        self._ids = np.empty((count, 0), dtype=object)
        self._watch = [set(ids) for ids in watch] or [set() for _ in range(count)]
        if len(self._watch) != count:
            raise ValueError(f"{len(self._watch)} watch lists for {count} queries")
        self.watched: list[dict[str, float]] = [{} for _ in range(count)]

    def add(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Score one batch of documents and keep each query's best."""
        if not len(ids):
            return
        scores = similarity_scores(self.similarity, self.queries, vectors)
        batch_ids = np.asarray(ids, dtype=object)
        self.documents += len(batch_ids)
        column = {doc_id: i for i, doc_id in enumerate(ids)}
        for row, wanted in enumerate(self._watch):
            for doc_id in wanted.intersection(column):
                self.watched[row][doc_id] = float(scores[row, column[doc_id]])
        merged = np.concatenate([self._scores, scores], axis=1)
        merged_ids = np.concatenate([self._ids, np.broadcast_to(batch_ids, scores.shape)], axis=1)
        if merged.shape[1] > self.depth:
            keep = np.argpartition(-merged, self.depth - 1, axis=1)[:, : self.depth]
            merged = np.take_along_axis(merged, keep, axis=1)
            merged_ids = np.take_along_axis(merged_ids, keep, axis=1)
        self._scores, self._ids = merged, merged_ids

    def rankings(self) -> list[Ranking]:
        """Each query's best documents, best first (ties in id order, so runs agree)."""
        rankings = []
        for scores, ids in zip(self._scores, self._ids, strict=True):
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
            rankings.append(Ranking(tuple(str(ids[i]) for i in order), tuple(float(scores[i]) for i in order)))
        return rankings
