"""Retrieval evaluation on real indexes: the embedded store and the harness's Elasticsearch.

The first passages of the demo corpus, embedded by the real minilm model and written
straight into each store (no stream needed: what is measured is the index), queried
with a labelled set the generator builds over those passages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from inferstream import Client, Settings
from inferstream._client.retrieval_eval import RetrievalReport
from inferstream.connectors.stores import open_store
from inferstream.connectors.vectors import Document, IndexMeta, Upsert
from inferstream.demo import passage_id, sample_texts
from inferstream.evaluation.exact import similarity_scores
from inferstream.evaluation.queries import LabelledQuery, build_query_set, query_lines
from inferstream.search import QueryEmbedder, Searcher
from inferstream.serving.demo_models import EMBEDDER_NAME
from inferstream.stack.testing import SearchServer

PASSAGES = 80
META = IndexMeta(EMBEDDER_NAME, "1", 384, "cosine")


@pytest.fixture(scope="module")
def documents(models_dir: Path) -> list[Document]:
    """The first demo passages as the index sink would write them (ids as the demo gives them)."""
    texts = sample_texts()[:PASSAGES]
    vectors = QueryEmbedder(Settings(models_dir=models_dir), META).embed(texts)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Document(id=passage_id(j), vector=vector, model=EMBEDDER_NAME, version="1", event_time=when, text=text)
        for j, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    ]


@pytest.fixture(scope="module")
def queries() -> list[LabelledQuery]:
    """Labelled questions about those passages."""
    return build_query_set(sample_texts()[:PASSAGES], passage_id, count=16)


def _write(settings: Settings, documents: list[Document]) -> None:
    store = open_store(settings)
    try:
        store.setup(META)
        for document in documents:
            store.add(Upsert(document))
        assert store.flush() == []
        store.refresh()
    finally:
        store.close()


def _check(report: RetrievalReport, queries: list[LabelledQuery]) -> None:
    """What holds of any honest report: bounded metrics, exact search at least as good as the index."""
    assert (report.documents, report.queries, report.k) == (PASSAGES, len(queries), [1, 5, 10])
    assert (report.model, report.similarity) == ("minilm:1", "cosine")
    assert report.missing_relevant == []
    assert [mode.mode for mode in report.modes] == ["knn", "hybrid"]
    for mode in report.modes:
        for rows in (mode.index, mode.exact):
            assert [row.k for row in rows] == [1, 5, 10]
            recalls = [row.recall for row in rows]
            assert recalls == sorted(recalls)  # more hits never find less
            assert all(0 <= value <= 1 for row in rows for value in (row.recall, row.mrr, row.ndcg, row.exact_recall))
        assert all(row.exact_recall == 1.0 for row in mode.exact)
        # Questions quoting a passage, or its rarest words: exact search finds most of them.
        assert mode.exact[-1].recall >= 0.5
    knn = report.modes[0]
    for index, exact in zip(knn.index, knn.exact, strict=True):
        assert index.score is not None
        assert exact.score is not None
        assert exact.score >= index.score - 1e-12  # the exact top k is the best k there is
    assert len(report.per_query) == len(queries)
    assert all(len(row.found["knn"]["index"]) == 10 for row in report.per_query)


def test_embedded_store_is_measured_against_labels_and_exact_search(
    tmp_path: Path, models_dir: Path, documents: list[Document], queries: list[LabelledQuery]
) -> None:
    settings = Settings.load(state_dir=tmp_path, models_dir=models_dir)  # no broker: only the index is asked
    assert settings.elasticsearch.url is None  # the embedded store
    _write(settings, documents)
    with Client(settings) as client:
        report = client.evaluate_retrieval(queries, k=[10, 1, 5, 5], modes=["hybrid", "knn"])
    _check(report, queries)
    # Under its ANN threshold the embedded store searches exactly: nothing is lost.
    assert [row.exact_recall for row in report.modes[0].index] == [1.0, 1.0, 1.0]
    assert report.modes[0].index == report.modes[0].exact

    query_file = settings.state_dir / "queries.jsonl"
    query_file.write_text("".join(line + "\n" for line in query_lines(queries[:4])), encoding="utf-8")
    result = settings.state_dir / "result.json"
    env = {
        **os.environ,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_MODELS_DIR": str(models_dir),
        "COLUMNS": "200",
    }
    command = ["eval", "retrieval", "-q", str(query_file), "--k", "1,5", "--mode", "both", "--output", str(result)]
    shown = subprocess.run(
        [sys.executable, "-m", "inferstream", *command],
        capture_output=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr.decode()
    table = shown.stdout.decode()
    for shown_text in ("4 queries on 80 documents", "of exact top-k", "knn", "hybrid"):
        assert shown_text in table
    written = json.loads(result.read_text(encoding="utf-8"))
    assert (written["queries"], written["documents"], written["k"]) == (4, PASSAGES, [1, 5])
    assert [mode["mode"] for mode in written["modes"]] == ["knn", "hybrid"]
    assert set(written["modes"][0]["index"][0]) == {"k", "recall", "mrr", "ndcg", "exact_recall", "score"}

    other = subprocess.run(  # the shipped set asks about passages this small index lacks: said so
        [sys.executable, "-m", "inferstream", "eval", "retrieval", "--json", "--k", "3"],
        capture_output=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert other.returncode == 0, other.stderr.decode()
    assert json.loads(other.stdout)["queries"] == 60
    assert "relevant ids are not in the index" in " ".join(other.stderr.decode().split())


def test_elasticsearch_is_measured_against_exact_search_over_its_own_vectors(
    tmp_path: Path,
    models_dir: Path,
    elasticsearch: SearchServer,
    documents: list[Document],
    queries: list[LabelledQuery],
) -> None:
    index = f"eval-{uuid.uuid4().hex[:8]}"
    settings = Settings.load(
        state_dir=tmp_path,
        models_dir=models_dir,
        elasticsearch={"url": elasticsearch.url, "index": index},
    )
    _write(settings, documents)
    with Searcher(settings) as searcher:
        read_back = dict(
            pair for ids, vectors in searcher.store.scan(batch_size=32) for pair in zip(ids, vectors, strict=True)
        )
        assert sorted(read_back) == sorted(d.id for d in documents)
        assert np.allclose(read_back["doc-0"], documents[0].vector)
        # The exact scores are on the index's own scale: its hits score as exact search scores them.
        result = searcher.search(queries[0].question, 5)
        vector = searcher.embedder().embed([queries[0].question])
        exact = similarity_scores("cosine", vector, np.stack([read_back[hit.id] for hit in result.hits]))[0]
        assert np.allclose([hit.score for hit in result.hits], exact, atol=1e-4)
    with Client(settings) as client:
        report = client.evaluate_retrieval(queries, k=[1, 5, 10], modes=["knn", "hybrid"])
    _check(report, queries)
    assert report.store == f"{elasticsearch.url} index {index}"
