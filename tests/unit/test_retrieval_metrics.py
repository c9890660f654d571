"""Ranking metrics and exact search, against values worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from inferstream.connectors.vectors import Document, IndexMeta, MemoryStore, Upsert
from inferstream.evaluation.exact import ExactSearch, similarity_scores
from inferstream.evaluation.retrieval import (
    Ranking,
    ndcg_at_k,
    overlap_at_k,
    recall_at_k,
    reciprocal_rank,
    tie_groups,
)

ABCD = Ranking(("a", "b", "c", "d"), (0.9, 0.8, 0.7, 0.6))
LOG3 = math.log2(3)


def test_one_relevant_id_counts_from_its_rank() -> None:
    relevant = {"c": 1.0}
    assert recall_at_k(ABCD, relevant, 2) == 0.0
    assert recall_at_k(ABCD, relevant, 3) == 1.0
    assert reciprocal_rank(ABCD, relevant, 2) == 0.0
    assert reciprocal_rank(ABCD, relevant, 4) == pytest.approx(1 / 3)
    assert ndcg_at_k(ABCD, relevant, 4) == pytest.approx(1 / math.log2(4))  # gain 1 at rank 3: 1/log2(4) over 1


def test_several_relevant_ids_one_never_retrieved() -> None:
    relevant = {"a": 1.0, "c": 1.0, "z": 1.0}
    assert recall_at_k(ABCD, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ABCD, relevant, 4) == pytest.approx(2 / 3)
    assert reciprocal_rank(ABCD, relevant, 4) == 1.0
    # DCG: 1 + 1/log2(4) = 1.5; ideal for three relevant ids: 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(ABCD, relevant, 4) == pytest.approx(1.5 / (1.5 + 1 / LOG3))
    assert ndcg_at_k(ABCD, relevant, 4) == pytest.approx(0.703918, abs=1e-6)


def test_nothing_relevant_retrieved_scores_zero() -> None:
    relevant = {"z": 1.0}
    assert recall_at_k(ABCD, relevant, 4) == 0.0
    assert reciprocal_rank(ABCD, relevant, 4) == 0.0
    assert ndcg_at_k(ABCD, relevant, 4) == 0.0
    empty = Ranking((), ())
    assert (recall_at_k(empty, relevant, 3), reciprocal_rank(empty, relevant, 3), ndcg_at_k(empty, relevant, 3)) == (
        0.0,
        0.0,
        0.0,
    )


def test_graded_gains_weigh_in_ndcg_only() -> None:
    relevant = {"a": 1.0, "c": 3.0}
    assert recall_at_k(ABCD, relevant, 3) == 1.0
    # DCG: 1/1 + 3/log2(4) = 2.5; ideal: 3/1 + 1/log2(3)
    assert ndcg_at_k(ABCD, relevant, 3) == pytest.approx(2.5 / (3 + 1 / LOG3))


def test_ties_score_the_expected_value_over_their_orders() -> None:
    tied = Ranking(("a", "b", "c", "d"), (0.9, 0.8, 0.8, 0.5))
    assert tie_groups(tied.scores) == [(0, 1), (1, 3), (3, 4)]
    relevant = {"c": 1.0}
    # c shares ranks 2-3 with b: at rank 2 half the time.
    assert recall_at_k(tied, relevant, 2) == 0.5
    assert recall_at_k(tied, relevant, 3) == 1.0
    assert reciprocal_rank(tied, relevant, 2) == pytest.approx(0.5 * 1 / 2)
    assert reciprocal_rank(tied, relevant, 3) == pytest.approx(0.5 / 2 + 0.5 / 3)  # 5/12
    assert ndcg_at_k(tied, relevant, 3) == pytest.approx(0.5 / LOG3 + 0.5 / 2)
    # The order among tied hits does not matter.
    swapped = Ranking(("a", "c", "b", "d"), tied.scores)
    for k in (1, 2, 3, 4):
        assert recall_at_k(swapped, relevant, k) == recall_at_k(tied, relevant, k)
        assert reciprocal_rank(swapped, relevant, k) == reciprocal_rank(tied, relevant, k)
        assert ndcg_at_k(swapped, relevant, k) == ndcg_at_k(tied, relevant, k)


def test_two_relevant_ids_in_a_three_way_tie() -> None:
    tied = Ranking(("a", "b", "c"), (0.5, 0.5, 0.5))
    relevant = {"a": 1.0, "b": 1.0}
    # The first relevant hit is at rank 1 in 2 of 3 orders, else at rank 2.
    assert reciprocal_rank(tied, relevant, 3) == pytest.approx(2 / 3 + 1 / 3 / 2)
    assert recall_at_k(tied, relevant, 1) == pytest.approx(1 / 3)  # one slot of three, two relevant of two
    assert recall_at_k(tied, relevant, 3) == 1.0


def test_scores_within_float_noise_are_ties() -> None:
    assert tie_groups([0.8, 0.8 + 1e-9, 0.7]) == [(0, 2), (2, 3)]
    assert tie_groups([0.8, 0.8 - 1e-4]) == [(0, 1), (1, 2)]


def test_overlap_is_the_share_of_exact_top_k_found_ties_included() -> None:
    exact = Ranking(("x", "y", "z", "w"), (0.9, 0.8, 0.8, 0.1))
    assert overlap_at_k(["x", "y"], exact, 2) == 1.0
    assert overlap_at_k(["x", "z"], exact, 2) == 1.0  # z ties with y at the cut
    assert overlap_at_k(["x", "w"], exact, 2) == 0.5
    assert overlap_at_k([], exact, 2) == 0.0
    assert overlap_at_k(["x"], Ranking(("x",), (0.9,)), 5) == 1.0  # an index of one document
    assert overlap_at_k(["x"], Ranking((), ()), 5) == 1.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        recall_at_k(ABCD, {"a": 1.0}, 0)
    with pytest.raises(ValueError, match="relevant"):
        ndcg_at_k(ABCD, {}, 3)
    with pytest.raises(ValueError, match="scores"):
        Ranking(("a",), ())


def test_similarity_scores_are_on_the_index_scale() -> None:
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    d = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    assert similarity_scores("cosine", q, d).tolist() == [[1.0, 0.5, 0.0]]
    assert similarity_scores("dot_product", q, d).tolist() == [[1.5, 0.5, 0.0]]
    assert similarity_scores("max_inner_product", q, d).tolist() == [[3.0, 1.0, 0.5]]
    assert similarity_scores("l2_norm", q, d)[0].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 5])
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity_scores("hamming", q, d)


def test_exact_search_over_batches_finds_the_brute_force_top() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors[7] = vectors[3]  # a duplicate: a tie, ordered by id
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    ids = [f"d{i:02d}" for i in range(50)]
    search = ExactSearch("cosine", queries, 5, watch=[["d00", "d49"], [], [], ["d03"]])
    for start in range(0, 50, 16):
        search.add(ids[start : start + 16], vectors[start : start + 16])
    search.add([], np.empty((0, 8), dtype=np.float32))
    assert search.documents == 50
    scores = similarity_scores("cosine", queries, vectors)
    for row, ranking in enumerate(search.rankings()):
        best = sorted(range(50), key=lambda i: (-scores[row, i], ids[i]))[:5]
        assert ranking.ids == tuple(ids[i] for i in best)
        assert ranking.scores == pytest.approx([scores[row, i] for i in best])
    assert search.watched[0] == pytest.approx({"d00": scores[0, 0], "d49": scores[0, 49]})
    assert search.watched[1] == {}
    assert search.watched[3] == pytest.approx({"d03": scores[3, 3]})
    duplicate = ExactSearch("cosine", vectors[3], 2)
    duplicate.add(ids, vectors)
    assert duplicate.rankings()[0].ids == ("d03", "d07")


def test_the_memory_store_reads_its_vectors_back_in_batches() -> None:
    store = MemoryStore()
    store.setup(IndexMeta("m", "1", 2, "cosine"))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        vector = np.array([i, 1], dtype=np.float32)
        store.add(Upsert(Document(id=f"d{i}", vector=vector, model="m", version="1", event_time=when)))
    store.flush()
    batches = list(store.scan(batch_size=2))
    assert [ids for ids, _ in batches] == [["d0", "d1"], ["d2", "d3"], ["d4"]]
    assert batches[2][1].tolist() == [[4.0, 1.0]]
    search = ExactSearch("cosine", [[1.0, 0.0]], 2)
    for ids, vectors in batches:
        search.add(ids, vectors)
    assert search.rankings()[0].ids == ("d4", "d3")  # the most x-ward vectors
