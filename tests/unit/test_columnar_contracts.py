"""Columnar records: validation with field paths, and the JSON and Arrow forms round trip."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from inferstream.errors import ContractError, RecordValidationError
from inferstream.monitoring.extract import Extractor
from inferstream.monitoring.spec import ColumnSpec
from inferstream.schemas import codec_for
from inferstream.schemas.columnar import (
    PredictionBatchWriter,
    columns_of,
    decode_prediction_batch,
    decode_predictions,
    decode_request,
    encode_request,
    headers_for,
    prediction_batch_arrow,
    prediction_rows,
    write_arrow,
)
from inferstream.schemas.records import MAX_BATCH_ROWS, InferenceBatchRequest, PredictionBatch

HEAD = {"request_id": "b1", "model": "iris", "version": "1"}
COLUMNS = {"x": [1.0, 2.5, None], "y": [3, 4, 5], "flag": [True, False, True]}
ARROW = headers_for(InferenceBatchRequest, "arrow")
JSON = headers_for(InferenceBatchRequest, "json")


def _problems(exc: pytest.ExceptionInfo[RecordValidationError]) -> dict[str, str]:
    return {p.field: p.reason for p in exc.value.problems}


def test_json_form_round_trips() -> None:
    record = codec_for(InferenceBatchRequest).validate({**HEAD, "columns": COLUMNS})
    request = decode_request(encode_request(record, "json", None), JSON)
    assert (request.form, request.rows, request.request_id) == ("json", 3, "b1")
    assert request.lists == COLUMNS


def test_arrow_form_round_trips_with_the_fields_in_the_schema_metadata() -> None:
    batch = pa.record_batch(COLUMNS)
    head = InferenceBatchRequest.model_construct(**HEAD, reply_to="inferstream.replies.c1")
    request = decode_request(encode_request(head, "arrow", batch), ARROW)
    assert (request.form, request.rows, request.reply_to, request.model) == (
        "arrow",
        3,
        "inferstream.replies.c1",
        "iris",
    )
    assert request.batch is not None
    assert request.batch.equals(batch)
    assert request.names == list(COLUMNS)


@pytest.mark.parametrize(
    ("columns", "field", "reason"),
    [
        ({"x": [1, 2], "y": [1]}, "columns", "column 'y' has 1 values where column 'x' has 2"),
        ({}, "columns", "no columns"),
        ({"x": []}, "columns", "hold no rows"),
        ({"x": [0] * (MAX_BATCH_ROWS + 1)}, "columns", f"more than {MAX_BATCH_ROWS}"),
        ({"x": [1, [2]]}, "columns.x.1", "wrong type"),
    ],
)
def test_bad_columns_are_refused_with_the_field_path(columns: dict, field: str, reason: str) -> None:
    data = orjson.dumps({**HEAD, "columns": columns})
    with pytest.raises(RecordValidationError) as exc:
        codec_for(InferenceBatchRequest).decode(data, headers=JSON)
    assert reason in _problems(exc)[field]


def test_bad_arrow_records_are_refused_with_the_field_path() -> None:
    nested = pa.record_batch({"x": pa.array([[1.0], [2.0]])})
    with pytest.raises(RecordValidationError) as exc:
        decode_request(write_arrow(nested, HEAD), ARROW)
    assert "scalars" in _problems(exc)["columns.x"]
    with pytest.raises(RecordValidationError) as exc:
        decode_request(write_arrow(pa.record_batch(COLUMNS), {**HEAD, "model": "no spaces"}), ARROW)
    assert "model" in _problems(exc)
    with pytest.raises(RecordValidationError, match="Arrow IPC") as garbage:
        decode_request(b"\x00\x01 not arrow", ARROW)
    assert garbage.value.raw == b"\x00\x01 not arrow"
    bare = pa.BufferOutputStream()
    with pa.ipc.new_stream(bare, pa.record_batch(COLUMNS).schema) as writer:
        writer.write_batch(pa.record_batch(COLUMNS))
    with pytest.raises(RecordValidationError, match="no 'inferstream' metadata"):
        decode_request(bare.getvalue().to_pybytes(), ARROW)
    newer = [("inferstream-schema", b"inference-batch-request/2"), ARROW[1]]
    with pytest.raises(ContractError, match="upgrade"):
        decode_request(write_arrow(pa.record_batch(COLUMNS), HEAD), newer)


def test_rows_become_columns_and_rows_with_other_keys_are_refused() -> None:
    lists, batch = columns_of([{"x": 1, "y": 2}, {"y": 4, "x": 3}])
    assert lists == {"x": [1, 3], "y": [2, 4]}
    assert batch is None
    with pytest.raises(RecordValidationError) as exc:
        columns_of([{"x": 1}, {"z": 2}])
    assert "row 1" in _problems(exc)["columns[1]"]


def _fields(rows: int) -> dict:
    now = datetime(2025, 1, 31, tzinfo=UTC)
    return {
        **HEAD,
        "event_time": now,
        "rows": rows,
        "latency": {"queue_ms": 1.0, "compute_ms": 2.0, "total_ms": 3.0},
        "predicted_at": now,
        "shadow": False,
        "source_event_id": None,
        "attributes": {"tenant": "a"},
        "lineage": None,
    }


def test_prediction_batch_forms_agree_and_expand_into_rows() -> None:
    inputs = pa.record_batch({"x": [1.0, 2.0], "y": [3, 4]})
    outputs = {
        "label": pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int32()), pa.array(["a", "b"])),
        "probabilities": pa.StructArray.from_arrays([pa.array([0.1, 0.8]), pa.array([0.9, 0.2])], names=["a", "b"]),
    }
    arrow_headers = headers_for(PredictionBatch, "arrow")
    from_arrow = decode_prediction_batch(prediction_batch_arrow(_fields(2), inputs, outputs), arrow_headers)
    as_json = {
        **_fields(2),
        "inputs": {"x": [1.0, 2.0], "y": [3, 4]},
        "outputs": {"label": ["b", "a"], "probabilities": {"a": [0.1, 0.8], "b": [0.9, 0.2]}},
    }
    json_headers = headers_for(PredictionBatch, "json")
    from_json = decode_prediction_batch(orjson.dumps(as_json, option=orjson.OPT_UTC_Z), json_headers)
    assert from_arrow == from_json
    rows = prediction_rows(from_arrow)
    assert [r.request_id for r in rows] == ["b1/0", "b1/1"]
    assert rows[1].inputs == {"x": 2.0, "y": 4}
    assert rows[1].outputs == {"label": "a", "probabilities": {"a": 0.8, "b": 0.2}}
    assert decode_predictions(orjson.dumps(as_json, option=orjson.OPT_UTC_Z), json_headers)[0] == rows[0]


def test_the_prediction_batch_writer_writes_what_the_stream_writer_does() -> None:
    # The writer keeps each request shape's schema and dictionaries: every later answer must
    # still be the stream writer's bytes, whatever its rows, values and fields.
    labels = pa.array(["a", "b"])
    writer = PredictionBatchWriter()
    shapes = [
        pa.record_batch({"x": [1.0, 2.0, None], "y": [3, 4, 5]}),
        pa.record_batch({"name": ["p", None], "flag": [True, False]}),
    ]
    for index in range(6):
        inputs = shapes[index % 2]
        rows = inputs.num_rows
        outputs = {
            "label": pa.DictionaryArray.from_arrays(pa.array([index % 2] * rows, pa.int32()), labels),
            "probabilities": pa.StructArray.from_arrays(
                [pa.array([0.1 * index] * rows), pa.array([1 - 0.1 * index] * rows)], names=["a", "b"]
            ),
            "score": pa.array([float(index)] * rows),
        }
        fields = {**_fields(rows), "request_id": f"b{index}", "attributes": {"i": str(index)}}
        value = writer.write(fields, inputs, outputs)
        assert value == prediction_batch_arrow(fields, inputs, outputs)
        read = pa.ipc.open_stream(value).read_all()
        assert read.column("outputs.label").to_pylist() == ["ab"[index % 2]] * rows
        batch = decode_prediction_batch(value, headers_for(PredictionBatch, "arrow"))
        assert (batch.request_id, batch.attributes, batch.outputs["score"]) == (
            f"b{index}",
            {"i": str(index)},
            [float(index)] * rows,
        )
    assert all(layout.fast for layout in writer._layouts)  # the messages written apart are the writer's


def test_the_drift_extractor_takes_a_prediction_batch_as_rows_of_one_record() -> None:
    batch = {
        **_fields(3),
        "inputs": {"x": [1.0, 2.0, 3.0]},
        "outputs": {"label": ["a", "b", "a"]},
    }
    value = orjson.dumps(batch, option=orjson.OPT_UTC_Z)
    extractor = Extractor([ColumnSpec(name="x")], {"x": "numerical"}, model="iris", version=None)
    decoded = extractor.decode([(value, ("p", 0), 7)], [headers_for(PredictionBatch, "json")])
    assert len(decoded) == 3
    assert extractor.expanded == 2
    assert decoded.bad_records == 0
    assert decoded.offsets.tolist() == [7, 7, 7]
