"""The index sink's columnar decoding: what it takes and refuses is what the model's path takes and refuses."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferstream.config import ElasticsearchSettings
from inferstream.connectors.embedded import EmbeddedStore
from inferstream.connectors.vectors import Delete, IndexMeta, MemoryStore, Ops, Upsert
from inferstream.schemas import Embedding, codec_for
from inferstream.streams.index_decode import ZERO_VECTOR, Decoded, IndexDecoder, RejectedError

META = IndexMeta(model="embedder", version="1", dims=4, similarity="cosine")
HEADER = codec_for(Embedding).header


class Message:
    """What the decoder reads of a consumed record (confluent_kafka.Message's accessors)."""

    def __init__(self, value: bytes | None, key: bytes | None = None, headers: Any = "own") -> None:
        self._value = value
        self._key = key
        self._headers = [HEADER] if headers == "own" else headers

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> Any:
        return self._headers

    def topic(self) -> str:
        return "embeddings"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def _b64(values: list[float], dtype: str = "<f4") -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


def _record(doc_id: Any = "doc-1", vector: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": doc_id,
        "event_time": "2026-01-01T00:00:00.123456Z",
        "model": "embedder",
        "version": "1",
        "vector": _b64([0.1, 0.2, 0.3, 0.4]) if vector is None else vector,
        "text": f"text of {doc_id}",
        **fields,
    }


def _message(record: dict[str, Any], **kwargs: Any) -> Message:
    return Message(json.dumps(record).encode(), str(record.get("id")).encode(), **kwargs)


CASES: dict[str, Message] = {
    "valid": _message(_record()),
    "attributes": _message(_record(attributes={"lang": "en", "source": "web"})),
    "latency-and-lineage": _message(
        _record(
            request_id="r-1",
            latency={"queue_ms": 1.5, "compute_ms": 2.0, "total_ms": 3.5},
            lineage={"uri": "models:/e/1", "registered_model": "e", "registered_version": "1", "sha256": "a" * 64},
        )
    ),
    "negative-latency": _message(_record(latency={"queue_ms": -1, "compute_ms": 2.0, "total_ms": 3.5})),
    "no-text": _message({k: v for k, v in _record().items() if k != "text"}),
    "offset-time": _message(_record(event_time="2026-01-01T02:00:00+02:00")),
    "naive-time": _message(_record(event_time="2026-01-01T00:00:00")),
    "epoch-time": _message(_record(event_time=1767225600)),
    "vector-as-json-array": _message(_record(vector=[0.5, 0.25, 0.0, 1.0])),
    "no-headers": _message(_record(), headers=[]),
    "other-contract-header": _message(_record(), headers=[("inferstream-schema", b"prediction/1")]),
    "newer-schema-header": _message(_record(), headers=[("inferstream-schema", b"embedding/99")]),
    "wrong-dims": _message(_record(vector=_b64([0.1, 0.2, 0.3]))),
    "empty-vector": _message(_record(vector="")),
    "odd-vector-bytes": _message(_record(vector=base64.b64encode(b"\x00" * 15).decode())),
    "nan": _message(_record(vector=_b64([0.1, float("nan"), 0.3, 0.4]))),
    "infinity": _message(_record(vector=_b64([float("inf"), 0.2, 0.3, 0.4]))),
    "not-base64": _message(_record(vector="!!!not base64!!!")),
    "missing-id": _message({k: v for k, v in _record().items() if k != "id"}),
    "blank-id": _message(_record(doc_id="   ")),
    "numeric-id": _message(_record(doc_id=12)),
    "other-model": _message(_record(model="other")),
    "other-version": _message(_record(version="2")),
    "invalid-model-name": _message(_record(model="-bad name")),
    "unknown-field": _message(_record(colour="blue")),
    "non-utf8": Message(json.dumps(_record()).encode().replace(b'"text of', b'"\xff\xfe of'), b"doc-1"),
    "lone-surrogate": Message(json.dumps(_record(text="\ud800")).encode(), b"doc-1"),
    "truncated": Message(json.dumps(_record()).encode()[:40], b"doc-1"),
    "not-json": Message(b"\x00\x01garbage", b"doc-1"),
    "json-null": Message(b"null", b"doc-1"),
    "tombstone": Message(None, b"doc-1"),
    "tombstone-non-utf8-key": Message(None, b"\xff\xfe"),
    "tombstone-without-key": Message(None, None),
    "tombstone-blank-key": Message(None, b"  "),
}


def _model_path(decoder: IndexDecoder, message: Message) -> tuple[str, Any]:
    try:
        op = decoder.op_of(message)  # type: ignore[arg-type]
    except RejectedError as exc:
        return "refused", (str(exc), exc.error_class)
    if isinstance(op, Delete):
        return "delete", op.id
    doc = op.document
    return "upsert", (doc.id, doc.vector.astype("<f4").tobytes(), doc.event_time, doc.text, dict(doc.attributes))


def _columnar(decoded: Decoded) -> tuple[str, Any]:
    if decoded.refused:
        (refusal,) = decoded.refused
        return "refused", (refusal.reason, refusal.error_class)
    ops = decoded.ops
    assert len(ops) == 1
    if ops.deletes[0]:
        return "delete", ops.ids[0]
    vector = np.asarray(ops.vectors[0], dtype="<f4").tobytes()
    return "upsert", (ops.ids[0], vector, ops.event_times[0], ops.texts[0], dict(ops.attributes[0]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_record_is_taken_or_refused_as_the_model_path_does(name: str) -> None:
    decoder = IndexDecoder(META, "docs")
    message = CASES[name]
    expected = _model_path(decoder, message)
    assert _columnar(decoder.decode([message])) == expected  # type: ignore[list-item]


def test_the_cases_cover_both_paths_and_the_refusals_the_sink_words_itself() -> None:
    decoder = IndexDecoder(META, "docs")
    outcomes = {name: _model_path(decoder, message) for name, message in CASES.items()}
    kinds = {name: outcome[0] for name, outcome in outcomes.items()}
    assert kinds["valid"] == kinds["epoch-time"] == kinds["vector-as-json-array"] == "upsert"
    assert kinds["tombstone"] == "delete"
    classes = {outcome[1][1] for outcome in outcomes.values() if outcome[0] == "refused"}
    assert {"DimensionMismatch", "ModelMismatch", "RecordValidationError", "InvalidId", "MissingId"} <= classes
    assert "NaN" in outcomes["nan"][1][0]
    assert "4-dim vectors" in outcomes["wrong-dims"][1][0]
    assert outcomes["non-utf8"][0] == outcomes["missing-id"][0] == "refused"


def test_a_batch_keeps_offset_order_and_refuses_only_its_bad_records() -> None:
    decoder = IndexDecoder(META, "docs")
    names = list(CASES)
    decoded = decoder.decode([CASES[n] for n in names], yield_every=3)  # type: ignore[misc]
    expected = [(n, _model_path(decoder, CASES[n])) for n in names]
    taken = [n for n, (kind, _) in expected if kind != "refused"]
    assert list(decoded.messages) == [CASES[n] for n in taken]
    assert len(decoded.ops) == len(taken)
    assert isinstance(decoded.ops.vectors, np.ndarray)
    assert decoded.ops.vectors.shape == (len(taken), 4)
    refused = {id(r.message): (r.reason, r.error_class) for r in decoded.refused}
    for name, (kind, detail) in expected:
        if kind == "refused":
            assert refused[id(CASES[name])] == detail, name
    assert len(decoded.refused) + len(decoded.ops) == len(names)


def test_zero_vectors_are_refused_under_cosine_and_taken_otherwise() -> None:
    zero = _message(_record(doc_id="zero", vector=_b64([0, 0, 0, 0])))
    cosine = IndexDecoder(META, "docs").decode([zero, CASES["tombstone"]])  # type: ignore[list-item]
    assert [(r.reason, r.error_class) for r in cosine.refused] == [(ZERO_VECTOR, "ZeroVector")]
    assert cosine.ops.ids == ["doc-1"]
    assert cosine.ops.deletes == [True]
    dot = IndexDecoder(IndexMeta("embedder", "1", 4, "dot_product"), "docs").decode([zero])  # type: ignore[list-item]
    assert dot.refused == []
    assert dot.ops.ids == ["zero"]


def test_an_index_of_an_invalid_model_name_decodes_every_record_the_model_way() -> None:
    decoder = IndexDecoder(IndexMeta("-bad name", "1", 4, "cosine"), "docs")
    decoded = decoder.decode([_message(_record(model="-bad name"))])  # type: ignore[list-item]
    assert decoded.ops.ids == []
    assert decoded.refused[0].error_class == "RecordValidationError"


def _updates() -> list[Message]:
    """doc-a written, deleted and written again; doc-b written then deleted; doc-c written twice."""
    return [
        _message(_record("doc-a", _b64([1, 0, 0, 0]), text="a first")),
        _message(_record("doc-b", _b64([0, 1, 0, 0]))),
        Message(None, b"doc-a"),
        _message(_record("doc-c", _b64([0, 0, 1, 0]), text="c first")),
        _message(_record("doc-a", _b64([0, 0, 0, 1]), text="a last")),
        Message(None, b"doc-b"),
        _message(_record("doc-c", _b64([0, 1, 1, 0]), text="c last")),
    ]


def test_the_last_update_of_an_id_in_a_batch_wins_deletes_included_in_memory() -> None:
    ops = IndexDecoder(META, "docs").decode(_updates()).ops  # type: ignore[arg-type]
    store = MemoryStore()
    store.setup(META)
    store.add(Upsert(ops.document(1)))  # doc-b before the batch: its delete in the batch removes it
    store.extend(ops)
    assert store.flush() == []
    assert {doc_id: doc.text for doc_id, doc in store.documents.items()} == {"doc-a": "a last", "doc-c": "c last"}


def test_the_last_update_of_an_id_in_a_batch_wins_deletes_included_in_the_embedded_store(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, ElasticsearchSettings(index="docs"))
    store.setup(META)
    store.add(Upsert(IndexDecoder(META, "docs").decode([_updates()[1]]).ops.document(0)))  # type: ignore[list-item]
    assert store.flush() == []
    store.extend(IndexDecoder(META, "docs").decode(_updates()).ops)  # type: ignore[arg-type]
    assert store.flush() == []
    hits = store.knn(np.array([0, 0, 0, 1], np.float32), 5, num_candidates=10, filters={})
    assert sorted((h.id, h.text) for h in hits) == [("doc-a", "a last"), ("doc-c", "c last")]
    assert store.count() == 2
    store.close()


def test_columns_and_single_operations_share_positions_and_the_bound() -> None:
    store = MemoryStore(max_buffered=4)
    store.setup(META)
    store.add(Upsert(IndexDecoder(META, "docs").decode([CASES["valid"]]).ops.document(0)))  # type: ignore[list-item]
    store.extend(Ops.of([Delete("x"), Delete("y")]))
    with pytest.raises(Exception, match="flush"):
        store.extend(Ops.of([Delete("z"), Delete("w")]))
    wrong = Upsert(IndexDecoder(META, "docs").decode([CASES["valid"]]).ops.document(0))  # type: ignore[list-item]
    store.add(Upsert(type(wrong.document)(**{**_fields(wrong), "vector": np.ones(3, np.float32)})))
    assert [r.position for r in store.flush()] == [3]


def _fields(op: Upsert) -> dict[str, Any]:
    doc = op.document
    return {name: getattr(doc, name) for name in doc.__slots__}  # type: ignore[attr-defined]


def test_event_times_are_aware_and_keep_the_instant() -> None:
    decoded = IndexDecoder(META, "docs").decode([CASES["offset-time"], CASES["naive-time"]])  # type: ignore[list-item]
    assert decoded.ops.event_times == [datetime(2026, 1, 1, tzinfo=UTC)] * 2


def test_valid_records_take_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = IndexDecoder(META, "docs")

    def model_path(message: Any) -> Any:
        raise AssertionError("decoded the model's way")

    monkeypatch.setattr(decoder, "op_of", model_path)
    fast = ["valid", "attributes", "latency-and-lineage", "no-text", "offset-time", "naive-time"]
    decoded = decoder.decode([CASES[name] for name in fast])  # type: ignore[misc]
    assert decoded.refused == []
    assert len(decoded.ops) == len(fast)
