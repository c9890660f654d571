"""Labelled query files: what they accept, how a bad line is named, and the shipped demo set."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferstream.cli import app
from inferstream.demo import demo_queries, passage_id, sample_events, sample_texts
from inferstream.errors import RecordValidationError
from inferstream.evaluation.queries import (
    SHIPPED_QUERIES,
    LabelledQuery,
    build_query_set,
    parse_queries,
    query_lines,
    shipped_queries,
)


def _file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_ids_gains_and_defaults(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '{"question": "  what does assert do ", "relevant": ["doc-0", "doc-2"], "note": "kept for people"}',
        "",
        '{"id": "graded", "question": "raise", "relevant": {"doc-4": 2, "doc-6": 0.5}}',
    )
    first, second = parse_queries(path)
    assert (first.id, first.question, first.relevant) == ("line-1", "what does assert do", {"doc-0": 1.0, "doc-2": 1.0})
    assert (second.id, second.relevant) == ("graded", {"doc-4": 2.0, "doc-6": 0.5})
    assert json.loads(first.line()) == {
        "id": "line-1",
        "question": "what does assert do",
        "relevant": ["doc-0", "doc-2"],
    }
    assert json.loads(second.line())["relevant"] == {"doc-4": 2.0, "doc-6": 0.5}


@pytest.mark.parametrize(
    ("line", "field", "why"),
    [
        ('{"question": "q", "relevant": ["d1"]', "", "malformed JSON"),
        ('["q", ["d1"]]', "", "expected a JSON object"),
        ('{"relevant": ["d1"]}', "question", "required field is missing"),
        ('{"question": "   ", "relevant": ["d1"]}', "question", "at least 1 character"),
        ('{"question": "q"}', "relevant", "required field is missing"),
        ('{"question": "q", "relevant": "d1"}', "relevant", "not one string"),
        ('{"question": "q", "relevant": []}', "relevant", "at least one relevant id"),
        ('{"question": "q", "relevant": ["d1", 2]}', "relevant", "must be a string"),
        ('{"question": "q", "relevant": ["d1", "d1"]}', "relevant", "listed twice: d1"),
        ('{"question": "q", "relevant": {"d1": -1}}', "relevant", "positive"),
        ('{"question": "q", "relevant": {"d1": "high"}}', "relevant.d1", "number"),
    ],
)
def test_a_bad_line_is_named_with_its_field_and_why(tmp_path: Path, line: str, field: str, why: str) -> None:
    path = _file(tmp_path, '{"question": "fine", "relevant": ["d0"]}', line)
    with pytest.raises(RecordValidationError) as caught:
        parse_queries(path)
    assert caught.value.line == 2
    assert caught.value.fields[0] == field
    assert why in str(caught.value)
    assert str(caught.value).startswith("line 2: labelled query record is invalid")


def test_a_repeated_id_and_an_empty_file_are_refused(tmp_path: Path) -> None:
    twice = _file(
        tmp_path, '{"id": "a", "question": "q", "relevant": ["d"]}', '{"id": "a", "question": "r", "relevant": ["d"]}'
    )
    with pytest.raises(RecordValidationError, match=r"line 2: .*id: 'a' is also the id of line 1"):
        parse_queries(twice)
    with pytest.raises(RecordValidationError, match="holds no queries"):
        parse_queries(_file(tmp_path))


def test_the_cli_refuses_a_bad_query_file_before_touching_an_index(tmp_path: Path) -> None:
    path = _file(tmp_path, '{"question": "q", "relevant": ["d"]}', '{"question": "q", "relevant": "d"}')
    env = {"INFERSTREAM_ELASTICSEARCH__URL": "http://127.0.0.1:1"}  # never contacted: refused before
    result = CliRunner().invoke(app, ["eval", "retrieval", "--queries", str(path)], env=env)
    assert result.exit_code == 1
    assert isinstance(result.exception, RecordValidationError)
    assert str(result.exception).startswith("line 2: labelled query record is invalid: relevant:")
    bad_k = CliRunner().invoke(app, ["eval", "retrieval", "--queries", str(path), "--k", "1,x"], env=env)
    assert bad_k.exit_code == 2
    assert "whole numbers" in bad_k.output
    bad_mode = CliRunner().invoke(app, ["eval", "retrieval", "--mode", "exact"], env=env)
    assert bad_mode.exit_code == 2
    assert "knn, hybrid or both" in bad_mode.output


def test_the_generator_is_reproducible_and_asks_about_unique_passages() -> None:
    texts = [f"passage {i} " + " ".join(f"w{i}x{j} common words here" for j in range(4)) + "." for i in range(30)]
    texts[5] = texts[6]  # a duplicate: never asked about
    first = build_query_set(texts, lambda i: f"p{i}", count=10, seed=3)
    assert first == build_query_set(texts, lambda i: f"p{i}", count=10, seed=3)
    assert first != build_query_set(texts, lambda i: f"p{i}", count=10, seed=4)
    assert len(first) == 10
    asked = [next(iter(q.relevant)) for q in first]
    assert {"p5", "p6"}.isdisjoint(asked)
    assert {q.kind for q in first} == {"sentence", "keywords"}
    for query in first:
        passage = texts[int(next(iter(query.relevant))[1:])]
        assert all(word.lower() in passage.lower() for word in query.question.split())
    with pytest.raises(ValueError, match="only 28 passages"):
        build_query_set(texts, lambda i: f"p{i}", count=29)


def test_the_shipped_set_is_what_the_generator_makes_of_the_demo_corpus() -> None:
    shipped = resources.files("inferstream.evaluation").joinpath(SHIPPED_QUERIES).read_text(encoding="utf-8")
    assert shipped == "".join(line + "\n" for line in query_lines(demo_queries()))
    queries = shipped_queries()
    assert len(queries) == 60
    assert all(isinstance(q, LabelledQuery) and len(q.relevant) == 1 for q in queries)


def test_the_relevant_ids_are_the_ids_the_demo_gives_its_passages() -> None:
    texts = sample_texts()
    documents = [event for event in sample_events(40) if event["type"] == "doc"]
    assert [(event["id"], event["text"]) for event in documents] == [(passage_id(j), texts[j]) for j in range(20)]
    for query in shipped_queries():
        position = int(next(iter(query.relevant)).removeprefix("doc-")) // 2
        assert position < 500  # a 1000-event demo indexes the first 500 passages
        assert texts[:500].count(texts[position]) == 1  # asked about one passage, not one of two copies
