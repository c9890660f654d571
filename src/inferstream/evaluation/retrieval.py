"""Ranking metrics of a search against labelled relevant ids: recall@k, reciprocal rank, nDCG@k.

A ranking is what a search returned, best first, with its scores; the relevance of a
query maps each relevant id to its gain (1 for a plain list of ids)::

    >>> ranking = Ranking(("a", "b", "c"), (0.9, 0.8, 0.7))
    >>> recall_at_k(ranking, {"b": 1.0, "z": 1.0}, 2)
    0.5
    >>> reciprocal_rank(ranking, {"b": 1.0}, 3)
    0.5

Ties are scored as the expected value over every order of the tied hits (McSherry and
Najork, "Computing information retrieval performance measures efficiently in the
presence of tied scores", 2008): an index holds duplicate passages, and hybrid search's
reciprocal rank fusion gives equal scores to a document first in one list and one first
in the other, so which of them a store happens to put first says nothing about its
quality. A tie that crosses the cut at ``k`` counts the share of its slots inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Scores this close are a tie (float32 vectors scored in different batches differ in the last bits).
TIE_REL_TOL = 1e-6
TIE_ABS_TOL = 1e-9

Relevance = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Ranking:
    """Ids a search returned, best first, with their scores (non-increasing)."""

    ids: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.scores):
            raise ValueError(f"{len(self.ids)} ids but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.ids)


def tied(a: float, b: float) -> bool:
    """Whether two scores count as equal."""
    return math.isclose(a, b, rel_tol=TIE_REL_TOL, abs_tol=TIE_ABS_TOL)


def tie_groups(scores: Sequence[float]) -> list[tuple[int, int]]:
    """``(start, end)`` position ranges (end excluded) of consecutive tied scores."""
    groups: list[tuple[int, int]] = []
    start = 0
    for position in range(1, len(scores) + 1):
        if position == len(scores) or not tied(scores[position - 1], scores[position]):
            groups.append((start, position))
            start = position
    return groups


def _expected(ranking: Ranking, values: Relevance, k: int) -> list[float]:
    """The expected value of each of the first ``k`` positions: the mean over its tie group."""
    expected: list[float] = []
    for start, end in tie_groups(ranking.scores):
        if start >= k:
            break
        mean = sum(values.get(doc_id, 0.0) for doc_id in ranking.ids[start:end]) / (end - start)
        expected.extend([mean] * (min(end, k) - start))
    return expected


def _check(relevance: Relevance, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if not relevance:
        raise ValueError("a query needs at least one relevant id")


def recall_at_k(ranking: Ranking, relevance: Relevance, k: int) -> float:
    """The share of the relevant ids among the first ``k`` hits (grades do not matter here)."""
    _check(relevance, k)
    found = _expected(ranking, {doc_id: 1.0 for doc_id, gain in relevance.items() if gain > 0}, k)
    return sum(found) / sum(1 for gain in relevance.values() if gain > 0)


def reciprocal_rank(ranking: Ranking, relevance: Relevance, k: int) -> float:
    """1 / the rank of the first relevant hit among the first ``k`` (0 when none is there).

    In a tie group of ``n`` hits at ranks ``s+1 … s+n`` holding ``r`` relevant ones, the
    first relevant one is at rank ``s+j`` with probability ``C(n-j, r-1) / C(n, r)``.
    """
    _check(relevance, k)
    for start, end in tie_groups(ranking.scores):
        if start >= k:
            break
        size = end - start
        found = sum(1 for doc_id in ranking.ids[start:end] if relevance.get(doc_id, 0.0) > 0)
        if not found:
            continue
        orders = math.comb(size, found)
        return sum(
            math.comb(size - j, found - 1) / orders / (start + j)
            for j in range(1, min(size - found + 1, k - start) + 1)
        )
    return 0.0


def _dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(position + 2) for position, gain in enumerate(gains))


def ndcg_at_k(ranking: Ranking, relevance: Relevance, k: int) -> float:
    """Discounted cumulative gain of the first ``k`` hits over the best possible (``gain / log2(rank + 1)``)."""
    _check(relevance, k)
    ideal = _dcg(sorted((gain for gain in relevance.values() if gain > 0), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("a query needs at least one relevant id with a positive gain")
    return _dcg(_expected(ranking, relevance, k)) / ideal


def overlap_at_k(found: Sequence[str], exact: Ranking, k: int) -> float:
    """The share of exact search's top ``k`` that ``found``'s first ``k`` hold (an ANN's recall).

    Documents tied with exact search's ``k``-th score are all in its top ``k`` (any of them
    could have been there); a top ``k`` shorter than ``k`` (a small index) counts as it is.
    1.0 when exact search found nothing.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    wanted = min(k, len(exact))
    if wanted == 0:
        return 1.0
    cut = exact.scores[wanted - 1]
    best = {doc_id for doc_id, score in zip(exact.ids, exact.scores, strict=True) if score >= cut or tied(score, cut)}
    return min(len(best.intersection(found[:k])), wanted) / wanted
