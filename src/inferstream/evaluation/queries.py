"""Labelled queries for retrieval evaluation: the JSONL file format, and a set built from a corpus.

One JSON object a line::

    {"question": "what does the assert statement do", "relevant": ["doc-0"]}
    {"id": "q2", "question": "raise an exception", "relevant": {"doc-12": 2, "doc-40": 1}}

``relevant`` is a list of document ids (each equally relevant), or a map of id to a
positive gain (graded relevance, which nDCG uses). ``id`` is optional (``line-N`` by
default); other fields are kept for people and ignored here. A line that breaks these
rules stops the reading with its line number, the field and why.

:func:`build_query_set` makes such a set from passages, reproducibly: it picks passages
that occur once in the corpus with a seeded generator and asks for each either with one
of its sentences (the first words of it) or with its most distinctive words (the ones
fewest passages share), the passage being the one relevant document. The set shipped
beside this module (:data:`SHIPPED_QUERIES`) is that set over the demo corpus; ``inferstream
eval build-queries`` writes it again.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from inferstream.connectors.files import read_records
from inferstream.errors import FieldProblem, RecordValidationError
from inferstream.schemas.codec import problems_of

#: What errors call a line of a query file.
CONTRACT = "labelled query"
#: The query set over the demo corpus, shipped in the package.
SHIPPED_QUERIES = "demo-queries.jsonl"
#: Words a question made of distinctive words holds, and the most words one made of a sentence holds.
KEYWORDS = 5
SENTENCE_WORDS = 14

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
DocId = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class LabelledQuery(BaseModel):
    """A question and the ids of the documents that answer it (with their gains)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    question: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
    relevant: dict[DocId, float] = Field(min_length=1)
    id: str | None = None
    kind: str | None = None

    @field_validator("relevant", mode="before")
    @classmethod
    def _ids_or_gains(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("expected a list of document ids (or a map of id to gain), not one string")
        if isinstance(value, list):
            if not value:
                raise ValueError("a query needs at least one relevant id")
            duplicates = sorted({v for v in value if isinstance(v, str) and value.count(v) > 1})
            if duplicates:
                raise ValueError(f"ids listed twice: {', '.join(duplicates)}")
            if not all(isinstance(v, str) for v in value):
                raise ValueError("every relevant id must be a string")
            return dict.fromkeys(value, 1.0)
        return value

    @field_validator("relevant")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [doc_id for doc_id, gain in value.items() if not gain > 0 or gain == float("inf")]
        if bad:
            raise ValueError(f"gains must be positive finite numbers (not for {', '.join(bad)})")
        return value

    def line(self) -> str:
        """The query as one line of a query file (a plain id list when every gain is 1)."""
        relevant: Any = self.relevant
        if all(gain == 1.0 for gain in self.relevant.values()):
            relevant = list(self.relevant)
        record = {"id": self.id, "question": self.question, "relevant": relevant, "kind": self.kind}
        return json.dumps({k: v for k, v in record.items() if v is not None}, ensure_ascii=False)


def parse_queries(path: str | Path) -> list[LabelledQuery]:
    """Every query of a JSONL file (``-``: standard input); the first bad line raises.

    Raises :class:`~inferstream.errors.RecordValidationError` naming the line, the field and why.
    """
    queries: list[LabelledQuery] = []
    seen: dict[str, int] = {}
    for record in read_records(path, "jsonl"):
        if record.error is not None or record.value is None:
            raise RecordValidationError(CONTRACT, [FieldProblem("", record.error or "unreadable")], line=record.line)
        try:
            query = LabelledQuery.model_validate(record.value)
        except ValidationError as exc:
            raise RecordValidationError(CONTRACT, problems_of(exc), line=record.line) from None
        if query.id is None:
            query = query.model_copy(update={"id": f"line-{record.line}"})
        assert query.id is not None
        if query.id in seen:
            problem = FieldProblem("id", f"{query.id!r} is also the id of line {seen[query.id]}")
            raise RecordValidationError(CONTRACT, [problem], line=record.line)
        seen[query.id] = record.line
        queries.append(query)
    if not queries:
        raise RecordValidationError(CONTRACT, [FieldProblem("", f"{path} holds no queries")])
    return queries


def shipped_queries() -> list[LabelledQuery]:
    """The labelled query set over the demo corpus that ships with the package."""
    with resources.as_file(resources.files(__package__) / SHIPPED_QUERIES) as path:
        return parse_queries(path)


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def _sentence_question(text: str, rng: random.Random) -> str | None:
    sentences = [s for s in _SENTENCE_END.split(text) if len(s.split()) >= 6]
    if not sentences:
        return None
    words = rng.choice(sentences).split()[:SENTENCE_WORDS]
    return " ".join(words).rstrip(".,;:!?")


def _keyword_question(text: str, frequency: Counter[str]) -> str | None:
    words = list(dict.fromkeys(_words(text)))  # first occurrences, in passage order
    if len(words) < KEYWORDS:
        return None
    rarest = set(sorted(words, key=lambda word: (frequency[word], words.index(word)))[:KEYWORDS])
    return " ".join(word for word in words if word in rarest)


def build_query_set(
    texts: Sequence[str],
    doc_id: Callable[[int], str],
    *,
    count: int = 60,
    seed: int = 17,
    min_words: int = 12,
) -> list[LabelledQuery]:
    """``count`` queries over ``texts``, each answered by one passage (``doc_id(position)``).

    Deterministic for the same texts, count and seed. Passages that occur more than once
    are left out (which copy answers would be a coin toss); so are passages under
    ``min_words`` words. Even queries quote a sentence, odd ones list distinctive words.
    """
    occurrences = Counter(texts)
    frequency: Counter[str] = Counter(word for text in occurrences for word in set(_words(text)))
    candidates = [i for i, text in enumerate(texts) if occurrences[text] == 1 and len(text.split()) >= min_words]
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} passages can be asked about, not {count}")
    rng = random.Random(seed)
    queries: list[LabelledQuery] = []
    for position in sorted(rng.sample(candidates, count)):
        text = texts[position]
        kind = "sentence" if len(queries) % 2 == 0 else "keywords"
        question = _sentence_question(text, rng) if kind == "sentence" else _keyword_question(text, frequency)
        if question is None:
            kind = "keywords" if kind == "sentence" else "sentence"
            question = _keyword_question(text, frequency) if kind == "keywords" else _sentence_question(text, rng)
        if question is None:
            continue
        queries.append(
            LabelledQuery(id=f"q{len(queries) + 1:03d}", question=question, relevant={doc_id(position): 1.0}, kind=kind)
        )
    return queries


def query_lines(queries: Sequence[LabelledQuery]) -> Iterator[str]:
    """The lines of a query file holding ``queries``."""
    for query in queries:
        yield query.line()
