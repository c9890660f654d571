"""The vector index contract: a sink that keeps documents in sync, and the searches run on it.

Every sink has one lifecycle (``setup() → add(op) → flush()`` on commit)::

    store.setup()                      # index/mapping created, or checked against the model
    store.add(Upsert(document))        # buffered, nothing written yet
    store.add(Delete("doc-7"))         # a tombstone
    store.extend(ops)                  # many at once, as columns (the index sink's batches)
    rejected = store.flush()           # written; per-record refusals come back by position
    consumer.commit(...)               # only now

Only the last operation on an id since the last flush is written (a later delete
wins over an earlier upsert, and the other way round).

``flush()`` raises :class:`~inferstream.errors.SinkBackpressureError` (with
``retry_after``) when the target is down or overloaded: what was added stays
buffered, the caller pauses consumption and calls ``flush()`` again; nothing is
committed meanwhile, so nothing is lost. ``add()`` refuses more than
``max_buffered`` operations (the caller flushes first): the buffer is bounded.

Two stores implement it: :mod:`inferstream.connectors.elasticsearch` (a real
Elasticsearch) and :mod:`inferstream.connectors.embedded` (LanceDB, in-process).
:class:`MemoryStore` here is the test double (exact search over a dict), and
:func:`~inferstream.connectors.stores.open_store` opens the configured one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from inferstream.errors import SearchError, SinkBackpressureError, SinkError

FloatArray = npt.NDArray[np.float32]

#: Filter fields a search accepts besides ``attributes.<key>``.
FILTER_FIELDS = ("id", "model", "version")


@dataclass(frozen=True, slots=True)
class IndexMeta:
    """What an index holds: which embedder's vectors, how many dims, compared how."""

    model: str
    version: str
    dims: int
    similarity: str

    @property
    def ref(self) -> str:
        """``model:version``."""
        return f"{self.model}:{self.version}"


@dataclass(frozen=True, slots=True)
class Document:
    """One indexed document: the embedding's id, vector, text and metadata."""

    id: str
    vector: FloatArray
    model: str
    version: str
    event_time: datetime
    text: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert or replace a document (keyed by its id: writing twice is writing once)."""

    document: Document

    @property
    def id(self) -> str:
        """The document id."""
        return self.document.id


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a document (a tombstone on the embeddings topic); deleting a missing one is fine."""

    id: str


Op = Upsert | Delete

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_VECTOR: FloatArray = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Ops:
    """Upserts and deletes as columns, in the order they apply: what a store writes in one flush.

    Row ``i`` deletes document ``ids[i]`` where ``deletes[i]``, else upserts the document
    its columns hold (a delete's other cells are placeholders, never read). ``vectors``
    is one ``(rows, dims)`` float32 block (the index sink decodes a batch into one), or
    one array a row (operations added one by one: their dims are the store's to check).
    """

    ids: list[str]
    deletes: list[bool]
    vectors: FloatArray | list[FloatArray]
    models: list[str]
    versions: list[str]
    event_times: list[datetime]
    texts: list[str | None]
    attributes: list[Mapping[str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, ops: Sequence[Op]) -> Ops:
        """The columns of operations given one by one."""
        docs = [op.document if isinstance(op, Upsert) else None for op in ops]
        return cls(
            ids=[op.id for op in ops],
            deletes=[doc is None for doc in docs],
            vectors=[_NO_VECTOR if doc is None else doc.vector for doc in docs],
            models=["" if doc is None else doc.model for doc in docs],
            versions=["" if doc is None else doc.version for doc in docs],
            event_times=[_EPOCH if doc is None else doc.event_time for doc in docs],
            texts=[None if doc is None else doc.text for doc in docs],
            attributes=[{} if doc is None else doc.attributes for doc in docs],
        )

    @classmethod
    def concat(cls, chunks: Sequence[Ops]) -> Ops:
        """One set of columns holding every chunk's rows, in order."""
        if len(chunks) == 1:
            return chunks[0]
        blocks = [c.vectors for c in chunks]
        vectors: FloatArray | list[FloatArray]
        if all(isinstance(b, np.ndarray) and b.ndim == 2 for b in blocks) and len({b[0].shape for b in blocks}) == 1:
            vectors = np.concatenate(blocks)
        else:
            vectors = [row for block in blocks for row in block]
        return cls(
            ids=[v for c in chunks for v in c.ids],
            deletes=[v for c in chunks for v in c.deletes],
            vectors=vectors,
            models=[v for c in chunks for v in c.models],
            versions=[v for c in chunks for v in c.versions],
            event_times=[v for c in chunks for v in c.event_times],
            texts=[v for c in chunks for v in c.texts],
            attributes=[v for c in chunks for v in c.attributes],
        )

    def take(self, rows: Sequence[int]) -> Ops:
        """Only these rows, in this order."""
        vectors = self.vectors
        return Ops(
            ids=[self.ids[r] for r in rows],
            deletes=[self.deletes[r] for r in rows],
            vectors=vectors[list(rows)] if isinstance(vectors, np.ndarray) else [vectors[r] for r in rows],
            models=[self.models[r] for r in rows],
            versions=[self.versions[r] for r in rows],
            event_times=[self.event_times[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            attributes=[self.attributes[r] for r in rows],
        )

    def document(self, row: int) -> Document:
        """The document an upsert row writes."""
        return Document(
            id=self.ids[row],
            vector=np.asarray(self.vectors[row], dtype=np.float32),
            model=self.models[row],
            version=self.versions[row],
            event_time=self.event_times[row],
            text=self.texts[row],
            attributes=self.attributes[row],
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """An operation the store refused for good (retrying the same bytes cannot help)."""

    position: int  # index of the operation among those added since the last flush
    reason: str
    error_class: str = "IndexRejected"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    id: str
    score: float
    text: str | None
    model: str
    version: str
    event_time: datetime | None
    attributes: dict[str, str]


@runtime_checkable
class VectorSink(Protocol):
    """The sink lifecycle: ``setup() → add(op) → flush()`` on commit; backpressure as an exception."""

    #: Where the sink writes, for log lines and errors (a URL, a directory).
    location: str
    #: Most operations ``add()`` takes before a ``flush()``.
    max_buffered: int

    def setup(self, meta: IndexMeta) -> None:
        """Create the index for ``meta`` or check that the existing one matches it."""

    def add(self, op: Op) -> None:
        """Buffer one operation (raises SinkError when the buffer is full: flush first)."""

    def extend(self, ops: Ops) -> None:
        """Buffer many operations, as columns (raises SinkError when they do not fit: flush first)."""

    @property
    def pending(self) -> int:
        """Operations buffered and not yet written."""

    def flush(self) -> list[Rejection]:
        """Write what was added; refusals by position. Raises SinkBackpressureError to retry."""

    def close(self) -> None:
        """Release connections, locks and files."""


@runtime_checkable
class VectorStore(VectorSink, Protocol):
    """A vector index that the index sink writes to and searches read from."""

    def meta(self) -> IndexMeta | None:
        """What the index holds, or None when there is no index yet."""

    def knn(
        self, vector: FloatArray, k: int, *, num_candidates: int, filters: Mapping[str, Sequence[str]]
    ) -> list[Hit]:
        """The ``k`` nearest documents (approximate where the store has an ANN index)."""

    def text_search(self, query: str, k: int, *, filters: Mapping[str, Sequence[str]]) -> list[Hit]:
        """The ``k`` best BM25 matches of ``query`` on the text field."""

    def count(self) -> int:
        """Documents in the index (after the writes so far are visible)."""

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], FloatArray]]:
        """Every document's id and float vector, ``batch_size`` at a time (exact search, evaluation)."""

    def refresh(self) -> None:
        """Make everything written so far searchable now (tests, benchmarks)."""


def normalize_filters(filters: Mapping[str, str | Sequence[str]] | None) -> dict[str, list[str]]:
    """Filters as ``field → accepted values``; a clear error for fields no store can filter on.

    A field is ``id``, ``model``, ``version`` or ``attributes.<key>``; a value is one
    string or a list of them (any of which matches).
    """
    normalized: dict[str, list[str]] = {}
    for name, value in (filters or {}).items():
        if name not in FILTER_FIELDS and not (name.startswith("attributes.") and len(name) > len("attributes.")):
            raise SearchError(f"cannot filter on {name!r}: use one of {', '.join(FILTER_FIELDS)} or attributes.<key>")
        values = [value] if isinstance(value, str) else [str(v) for v in value]
        if not values:
            raise SearchError(f"filter {name!r} has no values")
        normalized[name] = values
    return normalized


def attribute_pairs(attributes: Mapping[str, str]) -> list[str]:
    """``key=value`` strings: how stores without a map type filter on attributes."""
    return [f"{key}={value}" for key, value in sorted(attributes.items())]


def attributes_json(attributes: Mapping[str, str]) -> str:
    """Attributes as compact JSON (for stores that keep them as one string)."""
    return json.dumps(dict(attributes), separators=(",", ":"), sort_keys=True)


class OpBuffer:
    """Operations added since the last flush, bounded, each with its position in that flush.

    Positions are what rejections refer to (the sink maps them back to records).
    Operations added one by one become columns once, when the store reads them.
    """

    def __init__(self, max_buffered: int, location: str) -> None:
        self.max_buffered = max_buffered
        self.location = location
        self._chunks: list[Ops] = []
        self._loose: list[Op] = []  # added one by one since the last chunk
        self._positions: list[int] = []
        self._next_position = 0

    def __len__(self) -> int:
        return len(self._positions)

    def add(self, op: Op) -> None:
        """Buffer one operation; a full buffer raises (the caller flushes first)."""
        self._room(1)
        self._loose.append(op)
        self._positions.append(self._next_position)
        self._next_position += 1

    def extend(self, ops: Ops) -> None:
        """Buffer many operations as columns; more than fit raises (the caller flushes first)."""
        self._room(len(ops))
        self._seal()
        self._chunks.append(ops)
        self._positions.extend(range(self._next_position, self._next_position + len(ops)))
        self._next_position += len(ops)

    def _room(self, count: int) -> None:
        if len(self._positions) + count > self.max_buffered:
            raise SinkError(f"{len(self._positions)} operations buffered for {self.location}: flush() first")

    def _seal(self) -> None:
        if self._loose:
            self._chunks.append(Ops.of(self._loose))
            self._loose = []

    def items(self) -> tuple[list[int], Ops]:
        """Every operation as columns, in the order added, and each row's position."""
        self._seal()
        if len(self._chunks) != 1:
            self._chunks = [Ops.concat(self._chunks)] if self._chunks else [Ops.of([])]
        return list(self._positions), self._chunks[0]

    def latest(self) -> tuple[list[int], Ops]:
        """The last operation on each id as columns, and each row's position.

        Only it matters, and writing only it keeps a retried earlier upsert from
        landing after a later delete.
        """
        positions, ops = self.items()
        last = {doc_id: row for row, doc_id in enumerate(ops.ids)}
        if len(last) == len(ops):
            return positions, ops
        rows = list(last.values())  # in the order ids first came
        return [positions[row] for row in rows], ops.take(rows)

    def keep(self, positions: list[int], ops: Ops) -> None:
        """Only these stay buffered (to be written again); positions go on from where they were."""
        self._chunks = [ops]
        self._loose = []
        self._positions = list(positions)

    def clear(self) -> None:
        """Everything is written: the next flush numbers from 0 again."""
        self._chunks = []
        self._loose = []
        self._positions = []
        self._next_position = 0


class MemoryStore:
    """The test double of :class:`VectorStore`: a dict and exact (brute-force) search.

    It follows the same rules as the real stores (buffered until ``flush()``,
    dims checked, deletes of missing ids accepted) and can play a store that is
    down (``down = True``: ``flush()`` raises backpressure, nothing is written).
    """

    def __init__(self, *, max_buffered: int = 10_000) -> None:
        self.location = "memory"
        self.max_buffered = max_buffered
        self.documents: dict[str, Document] = {}
        self.down = False
        self.writes = 0
        self._meta: IndexMeta | None = None
        self._ops = OpBuffer(max_buffered, self.location)

    def setup(self, meta: IndexMeta) -> None:
        """Remember the index's shape (an existing one must match)."""
        if self._meta is not None and self._meta != meta:
            raise SinkError(f"memory index holds {self._meta}, not {meta}")
        self._meta = meta

    def add(self, op: Op) -> None:
        """Buffer one operation."""
        self._ops.add(op)

    def extend(self, ops: Ops) -> None:
        """Buffer many operations, as columns."""
        self._ops.extend(ops)

    @property
    def pending(self) -> int:
        """Operations buffered."""
        return len(self._ops)

    def flush(self) -> list[Rejection]:
        """Apply the buffered operations in order."""
        if self.down:
            raise SinkBackpressureError("memory store is down", retry_after=0.01)
        assert self._meta is not None, "setup() first"
        rejected = []
        positions, ops = self._ops.items()
        for row, position in enumerate(positions):
            doc_id = ops.ids[row]
            if ops.deletes[row]:
                self.documents.pop(doc_id, None)
            elif np.shape(ops.vectors[row]) != (self._meta.dims,):
                dims = np.shape(ops.vectors[row])[0]
                rejected.append(Rejection(position, f"vector has {dims} dims, not {self._meta.dims}"))
            else:
                self.documents[doc_id] = ops.document(row)
                self.writes += 1
        self._ops.clear()
        return rejected

    def meta(self) -> IndexMeta | None:
        """The index's shape once set up."""
        return self._meta

    def _matching(self, filters: Mapping[str, Sequence[str]]) -> list[Document]:
        def keep(doc: Document) -> bool:
            for name, values in filters.items():
                if name.startswith("attributes."):
                    value = doc.attributes.get(name[len("attributes.") :])
                else:
                    value = getattr(doc, name)
                if value not in values:
                    return False
            return True

        return [doc for doc in self.documents.values() if keep(doc)]

    def knn(
        self, vector: FloatArray, k: int, *, num_candidates: int, filters: Mapping[str, Sequence[str]]
    ) -> list[Hit]:
        """Exact cosine similarity over every matching document."""
        docs = self._matching(filters)
        if not docs:
            return []
        matrix = np.stack([doc.vector for doc in docs])
        norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
        scores = (matrix @ vector) / np.maximum(norms, 1e-12)
        order = np.argsort(-scores, kind="stable")[:k]
        return [_hit(docs[i], float(scores[i])) for i in order]

    def text_search(self, query: str, k: int, *, filters: Mapping[str, Sequence[str]]) -> list[Hit]:
        """Documents holding query words, by how many they hold (a stand-in for BM25)."""
        words = set(query.lower().split())
        scored = []
        for doc in self._matching(filters):
            found = len(words & set((doc.text or "").lower().split()))
            if found:
                scored.append((found, doc))
        scored.sort(key=lambda pair: -pair[0])
        return [_hit(doc, float(score)) for score, doc in scored[:k]]

    def count(self) -> int:
        """Documents held."""
        return len(self.documents)

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], FloatArray]]:
        """Every document's id and vector, in batches."""
        docs = list(self.documents.values())
        for start in range(0, len(docs), batch_size):
            batch = docs[start : start + batch_size]
            yield [doc.id for doc in batch], np.stack([doc.vector for doc in batch])

    def refresh(self) -> None:
        """Nothing to do: writes are visible at once."""

    def close(self) -> None:
        """Nothing to release."""


def _hit(doc: Document, score: float) -> Hit:
    return Hit(
        id=doc.id,
        score=score,
        text=doc.text,
        model=doc.model,
        version=doc.version,
        event_time=doc.event_time,
        attributes=dict(doc.attributes),
    )
