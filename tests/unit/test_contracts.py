import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferstream.errors import ContractError, RecordValidationError
from inferstream.schemas import (
    CONTRACTS,
    SCHEMA_HEADER,
    DeadLetter,
    DriftAlert,
    Embedding,
    EmbeddingRequest,
    Event,
    InferenceRequest,
    Prediction,
    Route,
    codec_for,
    contract_named,
    parse_schema_header,
)

PREDICTION = {
    "request_id": "r1",
    "event_time": "2026-01-02T03:04:05Z",
    "model": "iris",
    "version": "1",
    "inputs": {"sepal_length": 5.1, "note": "x"},
    "outputs": {"label": "setosa", "probabilities": [0.9, 0.05, 0.05]},
    "latency": {"queue_ms": 1.5, "compute_ms": 2.0, "total_ms": 4.0},
}


def test_every_topic_has_a_contract() -> None:
    assert set(CONTRACTS) == {
        "event",
        "inference-request",
        "inference-batch-request",
        "embedding-request",
        "prediction",
        "prediction-batch",
        "request-error",
        "embedding",
        "drift-alert",
        "route",
        "label",
        "dead-letter",
    }
    for contract in CONTRACTS.values():
        assert contract.schema_version >= 1
        assert contract.key_field in contract.model_fields
        assert contract.time_field in contract.model_fields  # labels have their label_time


def test_event_round_trip_and_defaults() -> None:
    codec = codec_for(Event)
    event = codec.validate({"id": "e1", "type": "review", "text": "great", "event_time": 1_700_000_000})
    assert event.event_time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert event.attributes == {}
    assert event.key() == b"e1"
    assert codec.decode(codec.encode(event)) == event
    assert codec.header == (SCHEMA_HEADER, b"event/1")


def test_naive_times_are_utc_and_numbers_become_ids() -> None:
    event = codec_for(Event).validate(
        {"id": 42, "type": "t", "features": {"x": 1}, "event_time": "2026-01-01T10:00:00"}
    )
    assert event.id == "42"
    assert event.event_time.tzinfo is not None
    assert event.event_time.hour == 10


def test_event_needs_text_or_features() -> None:
    with pytest.raises(RecordValidationError, match="needs `text` or `features`"):
        codec_for(Event).validate({"id": "e1", "type": "t"})


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (b'{"id": "e1", "type": "t", "text": "x"', "", "malformed JSON"),
        (b'{"type": "t", "text": "x"}', "id", "required field is missing"),
        (b'{"id": "e1", "type": "t", "text": ["x"]}', "text", "valid string"),
        (b'{"id": "e1", "type": "t", "features": {"a": [1]}}', "features.a", "wrong type"),
        (b'{"id": "e1", "type": "t", "text": "x", "colour": "red"}', "colour", "unknown field"),
        (b'{"id": "e1", "type": "bad type!", "text": "x"}', "type", "pattern"),
    ],
)
def test_validation_errors_name_the_field(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(RecordValidationError) as caught:
        codec_for(Event).decode(payload, line=7)
    error = caught.value
    assert error.line == 7
    assert field in error.fields
    assert reason in str(error)
    assert str(error).startswith("line 7: event record is invalid")
    assert error.raw == payload


def test_batch_validation_reports_bad_positions() -> None:
    values = [
        {"id": "a", "type": "t", "text": "x"},
        {"id": "b", "type": "t"},
        {"id": "c", "type": "t", "features": {"f": 1.5}},
        {"type": "t", "text": "x"},
    ]
    result = codec_for(Event).validate_batch(values)
    assert result.positions == [0, 2]
    assert [r.id for r in result.records] == ["a", "c"]
    assert set(result.errors) == {1, 3}
    assert result.errors[3].fields == ("id",)


def test_batch_validation_of_good_records_is_one_pass() -> None:
    values = [{"id": str(i), "type": "t", "text": "x"} for i in range(100)]
    result = codec_for(Event).validate_batch(values)
    assert result.errors == {}
    assert len(result.records) == 100


def test_vectors_travel_as_base64_float32() -> None:
    codec = codec_for(Embedding)
    vector = np.array([0.25, -1.0, 3.5], dtype=np.float32)
    record = codec.validate(
        {"id": "d1", "event_time": "2026-01-01T00:00:00Z", "model": "mini", "version": "1", "vector": vector}
    )
    wire = json.loads(codec.encode(record))
    assert wire["vector"] == base64.b64encode(vector.astype("<f4").tobytes()).decode()
    decoded = codec.decode(codec.encode(record))
    np.testing.assert_array_equal(decoded.vector, vector)
    assert decoded.dims == 3
    # A list of numbers is accepted too.
    assert codec.validate({**wire, "vector": [1, 2]}).dims == 2


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ([1.0, float("nan")], "NaN"),
        ("not base64!", "base64"),
        (base64.b64encode(b"abc").decode(), "multiple of 4"),
        ([], "non-empty"),
        ([[1.0, 2.0]], "one-dimensional"),
    ],
)
def test_bad_vectors_are_rejected(vector: object, reason: str) -> None:
    with pytest.raises(RecordValidationError, match=reason):
        codec_for(Embedding).validate(
            {"id": "d1", "event_time": "2026-01-01T00:00:00Z", "model": "m", "version": "1", "vector": vector}
        )


def test_prediction_carries_inputs_outputs_and_latency() -> None:
    prediction = codec_for(Prediction).validate(PREDICTION)
    assert prediction.inputs["sepal_length"] == 5.1
    assert prediction.outputs["label"] == "setosa"
    assert prediction.latency.total_ms == 4.0
    assert prediction.key() == b"r1"
    with pytest.raises(RecordValidationError, match=r"latency\.queue_ms"):
        codec_for(Prediction).validate({**PREDICTION, "latency": {"queue_ms": -1, "compute_ms": 0, "total_ms": 0}})


@pytest.mark.parametrize("micros", [0, 123456])
def test_encoding_fields_writes_what_the_model_writes(micros: int) -> None:
    # The serving hot path encodes predictions from their fields; readers must not see a difference.
    codec = codec_for(Prediction)
    when = datetime(2026, 1, 2, 3, 4, 5, micros, tzinfo=UTC)
    fields = {
        **PREDICTION,
        "event_time": when,
        "predicted_at": when,
        "shadow": False,
        "chain": [],
        "source_event_id": None,
        "attributes": {"team": "a"},
        "outputs": {"label": "setosa", "probabilities": {"setosa": 0.9, "other": float("nan")}},
        "lineage": None
        if micros
        else {
            "uri": "models:/iris@champion",
            "registered_model": "iris",
            "registered_version": "3",
            "run_id": "r",
            "sha256": "0" * 64,
        },
    }
    fast = codec.encode_fields(fields)
    # A model's NaN output is written as null: what the record with null would be, NaN being no JSON.
    written = {**fields, "outputs": {"label": "setosa", "probabilities": {"setosa": 0.9, "other": None}}}
    assert fast == codec.encode(Prediction.model_validate(written))
    decoded = codec.decode(fast)
    assert decoded.predicted_at == when
    assert decoded.outputs["probabilities"] == {"setosa": 0.9, "other": None}  # NaN is written as null


def test_requests_and_alerts_and_routes() -> None:
    request = codec_for(InferenceRequest).validate(
        {"request_id": "r", "model": "iris", "version": "2", "inputs": {"x": 1}, "reply_to": "inferstream.replies.c1"}
    )
    assert request.key() == b"r"
    embedding_request = codec_for(EmbeddingRequest).validate(
        {"request_id": "r", "model": "mini", "version": "1", "document_id": "d", "text": "hello"}
    )
    assert embedding_request.document_id == "d"
    alert = codec_for(DriftAlert).validate(
        {
            "monitor": "iris-drift",
            "model": "iris",
            "version": "1",
            "window_start": "2026-01-01T00:00:00Z",
            "window_end": "2026-01-01T00:05:00Z",
            "window_count": 500,
            "status": "drift",
            "dataset_drift": True,
            "drift_share": 0.5,
            "severity": "warning",
            "columns": [
                {"column": "x", "kind": "numerical", "method": "psi", "score": 0.4, "threshold": 0.1, "drifted": True}
            ],
        }
    )
    assert alert.key() == b"iris-drift"
    with pytest.raises(RecordValidationError, match="status"):
        codec_for(DriftAlert).validate({**alert.model_dump(), "status": "maybe"})
    with pytest.raises(RecordValidationError, match="weights"):
        codec_for(Route).validate({"model": "iris", "versions": [{"version": "1", "weight": 0}]})


def test_dead_letter_record_round_trips_bytes() -> None:
    letter = DeadLetter(
        source_topic="t",
        stage="ingest",
        error_class="ValueError",
        error_message="bad",
        payload=b"\x00\xffraw",
        original_size=5,
        sha256="0" * 64,
        original_headers=[("h", b"v")],
    )
    codec = codec_for(DeadLetter)
    assert codec.decode(codec.encode(letter)).payload == b"\x00\xffraw"


def test_schema_header_checks() -> None:
    codec = codec_for(Event)
    assert parse_schema_header([(SCHEMA_HEADER, b"event/3")]) == ("event", 3)
    assert parse_schema_header([("other", b"x")]) is None
    good = codec.encode(codec.validate({"id": "e", "type": "t", "text": "x"}))
    assert codec.decode(good, headers=[(SCHEMA_HEADER, b"event/1")]).id == "e"
    with pytest.raises(ContractError, match="upgrade inferstream"):
        codec.decode(good, headers=[(SCHEMA_HEADER, b"event/2")])
    with pytest.raises(ContractError, match="'prediction' record"):
        codec.decode(good, headers=[(SCHEMA_HEADER, b"prediction/1")])


def test_unknown_contract_name() -> None:
    with pytest.raises(ContractError, match="known schemas"):
        contract_named("nope")


def test_records_are_immutable() -> None:
    event = codec_for(Event).validate({"id": "e", "type": "t", "text": "x"})
    with pytest.raises(ValueError, match="frozen"):
        event.text = "y"  # type: ignore[misc]


def test_an_embedding_request_kept_out_of_the_index_needs_someone_to_answer() -> None:
    codec = codec_for(EmbeddingRequest)
    base = {"request_id": "r", "model": "mini", "version": "1", "document_id": "d", "text": "hi"}
    assert codec.validate(base).index is True
    assert codec.validate({**base, "index": False, "reply_to": "p.replies.c1"}).index is False
    with pytest.raises(RecordValidationError, match="index = false needs reply_to"):
        codec.validate({**base, "index": False})


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_FEATURE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.none(), _TEXT),
    features=st.one_of(st.none(), st.dictionaries(_TEXT, _FEATURE, max_size=4)),
    attributes=st.dictionaries(_TEXT, _TEXT, max_size=3),
    when=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
)
def test_batches_of_flat_contracts_encode_to_the_bytes_pydantic_writes(
    text: str | None, features: dict | None, attributes: dict, when: datetime
) -> None:
    # encode_many writes plain contracts with orjson; readers must not see a difference.
    codec = codec_for(Event)
    assert codec._flat
    value = {"id": "e1", "type": "t", "event_time": when, "text": text or "x", "features": features}
    event = codec.validate({**value, "attributes": attributes})
    assert codec.encode_many([event]) == [codec.encode(event)]
