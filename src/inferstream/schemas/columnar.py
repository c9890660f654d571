"""The two wire forms of columnar records (``inference-batch-request``, ``prediction-batch``).

JSON: the contract as it reads, ``columns`` (``inputs``, ``outputs``) objects of
equal-length arrays. Arrow: the ``content-type`` header says
``application/vnd.apache.arrow.stream`` and the value is an Arrow IPC stream of one
record batch; a request's columns are the features, a prediction batch's are
``inputs.<name>`` and ``outputs.<name>`` (probabilities by label as a struct
column); every other field is JSON text in the schema's ``inferstream`` metadata.
Both carry the usual ``inferstream-schema`` header. The Arrow form is the fast one:
a worker feeds the model from its buffers without a Python object per value.

Whatever the bytes hold, decoding raises ``ContractError`` (mostly
``RecordValidationError`` with the field path and the raw bytes) and nothing else;
an Arrow stream is validated in full before use (offsets, UTF-8), so hostile bytes
cannot reach the model or the readers.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from inferstream.errors import ContractError, FieldProblem, RecordValidationError
from inferstream.schemas.codec import Headers, codec_for, parse_schema_header, problems_of
from inferstream.schemas.records import (
    BatchRequestHead,
    InferenceBatchRequest,
    Prediction,
    PredictionBatch,
    columns_problem,
)

#: The header naming a record value's form (absent: JSON).
CONTENT_TYPE = "content-type"
#: The Arrow IPC stream form's content type.
ARROW = "application/vnd.apache.arrow.stream"
#: The Arrow schema metadata key holding every field but the columns, as JSON text.
META_KEY = b"inferstream"

Form = Literal["json", "arrow"]

#: Arrow's defaults, made once (left out, each writer reads them from the environment again).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()

_REQUEST = InferenceBatchRequest.schema_name
_HEAD: TypeAdapter[BatchRequestHead] = TypeAdapter(BatchRequestHead)


def form_of(headers: Headers | None) -> Form:
    """``arrow`` when the headers say the value is an Arrow IPC stream, else ``json``."""
    for key, value in headers or ():
        if key == CONTENT_TYPE and value in (ARROW, ARROW.encode()):
            return "arrow"
    return "json"


def is_batch_request(headers: Headers | None) -> bool:
    """Whether the ``inferstream-schema`` header names a columnar request (a bad header: no, the codec says why)."""
    try:
        found = parse_schema_header(headers)
    except ContractError:
        return False
    return found is not None and found[0] == _REQUEST


def headers_for(contract: type[InferenceBatchRequest] | type[PredictionBatch], form: Form) -> list[tuple[str, bytes]]:
    """The headers of a columnar record in ``form``."""
    schema = codec_for(contract).header
    return [schema, (CONTENT_TYPE, ARROW.encode())] if form == "arrow" else [schema]


@dataclass(slots=True)
class ColumnarRequest:
    """A decoded columnar request: its fields, and its columns as JSON arrays or an Arrow record batch."""

    head: BatchRequestHead
    form: Form
    rows: int
    #: JSON form: the columns as decoded (lists of scalars), carried into the answer as they are.
    lists: dict[str, list[Any]] | None = None
    #: Arrow form: the record batch, its columns the features.
    batch: pa.RecordBatch | None = None

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self.head.request_id

    @property
    def model(self) -> str:
        """The model the request names."""
        return self.head.model

    @property
    def version(self) -> str:
        """The version the request names."""
        return self.head.version

    @property
    def reply_to(self) -> str | None:
        """Where to send the answer as well."""
        return self.head.reply_to

    @property
    def deadline(self) -> datetime | None:
        """Past this time the request is dead-lettered."""
        return self.head.deadline

    @property
    def names(self) -> list[str]:
        """The column names."""
        if self.batch is not None:
            return list(self.batch.schema.names)
        return list(self.lists or ())

    def column(self, name: str) -> pa.Array | list[Any]:
        """One column: an Arrow array (Arrow form) or a list of scalars (JSON form)."""
        if self.batch is not None:
            return self.batch.column(name)
        assert self.lists is not None
        return self.lists[name]


def decode_request(value: bytes, headers: Headers | None) -> ColumnarRequest:
    """A columnar request in either form; ``ContractError`` (with the field path) for anything wrong."""
    if form_of(headers) == "json":
        record = codec_for(InferenceBatchRequest).decode(value, headers=headers)
        rows = len(next(iter(record.columns.values())))
        return ColumnarRequest(record, "json", rows, lists=record.columns)
    codec = codec_for(InferenceBatchRequest)
    if headers is not None:
        codec.check_header(headers)
    batch, meta = _read_arrow(value, _REQUEST)
    try:
        head = _HEAD.validate_python(meta)
    except ValidationError as exc:
        raise RecordValidationError(_REQUEST, problems_of(exc), raw=value) from None
    problem = _columns_problem(batch)
    if problem is not None:
        raise RecordValidationError(_REQUEST, [problem], raw=value)
    return ColumnarRequest(head, "arrow", batch.num_rows, batch=batch)


#: Schemas (names and types) that passed lately: the records of one producer repeat theirs,
#: and comparing a schema (in Arrow) costs a microsecond where checking its 30 columns costs 20.
_PASSED: deque[pa.Schema] = deque(maxlen=8)


def _columns_problem(batch: pa.RecordBatch) -> FieldProblem | None:
    schema = batch.schema
    if any(schema.equals(passed) for passed in _PASSED):  # metadata aside
        return _rows_problem(batch.num_rows)
    problem = _schema_problem(batch)
    if problem is None:
        _PASSED.append(schema.remove_metadata())
    return problem


def _rows_problem(rows: int) -> FieldProblem | None:
    # An Arrow batch is never ragged: only its number of rows may be wrong.
    problem = columns_problem({"": rows})
    return None if problem is None else FieldProblem("columns", problem)


def _schema_problem(batch: pa.RecordBatch) -> FieldProblem | None:
    names = batch.schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        return FieldProblem("columns", f"column(s) named twice: {', '.join(twice[:5])}")
    if not set(batch.schema.types) <= _SCALAR_TYPES:
        return _type_problem(batch.schema)
    problem = columns_problem(dict.fromkeys(names, batch.num_rows))
    return None if problem is None else FieldProblem("columns", problem)


#: Arrow types of scalar columns (the common ones: checked as a set, without a loop over the columns).
_SCALAR_TYPES = frozenset(
    (
        *(pa.float64(), pa.float32(), pa.float16(), pa.bool_(), pa.string(), pa.large_string(), pa.null()),
        *(pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()),
    )
)


def _type_problem(schema: pa.Schema) -> FieldProblem | None:
    for field in schema:
        kind = field.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_null(kind)
        ):
            return FieldProblem(f"columns.{field.name}", f"is {kind}: a column holds scalars (numbers, text, bool)")
    return None


def _read_arrow(value: bytes, contract: str) -> tuple[pa.RecordBatch, dict[str, Any]]:
    """The one record batch of an Arrow IPC stream, validated in full, and its metadata's fields."""
    try:
        reader = pa.ipc.open_stream(value)
        batches = list(reader)
        if len(batches) != 1:
            raise ValueError(f"the stream holds {len(batches)} record batches, not one")
        batch = batches[0]
        batch.validate(full=True)  # offsets and UTF-8: hostile bytes stop here
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise RecordValidationError(
            contract, [FieldProblem("", f"not an Arrow IPC stream of one record batch ({exc})")], raw=value
        ) from None
    raw_meta = (batch.schema.metadata or {}).get(META_KEY)
    try:
        meta = orjson.loads(raw_meta) if raw_meta is not None else None
    except orjson.JSONDecodeError as exc:
        raise RecordValidationError(
            contract, [FieldProblem("", f"schema metadata 'inferstream' is not JSON ({exc})")], raw=value
        ) from None
    if not isinstance(meta, dict):
        raise RecordValidationError(
            contract,
            [FieldProblem("", "the Arrow schema has no 'inferstream' metadata: a JSON object of the record's fields")],
            raw=value,
        )
    return batch, meta


def arrow_fields(value: bytes | None) -> dict[str, Any] | None:
    """The fields in an Arrow stream's metadata, best effort (None when unreadable): a refusal's reply-to."""
    try:
        return _read_arrow(value or b"", _REQUEST)[1]
    except ContractError:
        return None


def encode_request(record: InferenceBatchRequest | BatchRequestHead, form: Form, batch: pa.RecordBatch | None) -> bytes:
    """The value of a columnar request: JSON of ``record``, or an Arrow stream of ``batch`` with its fields."""
    if form == "json":
        assert isinstance(record, InferenceBatchRequest)
        return codec_for(InferenceBatchRequest).encode(record)
    assert batch is not None
    head = record.model_dump(mode="json", exclude={"columns"})
    return write_arrow(batch, head)


def write_arrow(batch: pa.RecordBatch, fields: Mapping[str, Any]) -> bytes:
    """An Arrow IPC stream of ``batch`` whose schema metadata carries ``fields`` as JSON."""
    meta = orjson.dumps(fields, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY)
    batch = batch.replace_schema_metadata({META_KEY: meta})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def prediction_batch_arrow(fields: Mapping[str, Any], inputs: pa.RecordBatch, outputs: Mapping[str, pa.Array]) -> bytes:
    """The Arrow form of a prediction batch: the request's columns and the outputs, ``fields`` as metadata."""
    # Renamed and appended in Arrow: taking the columns out as Python objects cost more than the rest.
    batch = inputs.rename_columns(_input_names(tuple(inputs.schema.names)))
    for name, array in outputs.items():
        batch = batch.append_column(f"outputs.{name}", array)
    return write_arrow(batch, fields)


#: The end-of-stream marker of the Arrow IPC stream format (continuation token, zero length).
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class _Layout:
    """What the prediction batches of one request shape share: their schema and dictionary messages."""

    inputs: pa.Schema  # the request's columns, metadata aside
    schema: pa.Schema  # the answer's columns, without metadata
    dictionaries: bytes  # the dictionary messages of the stream, as the stream writer writes them
    fast: bool  # whether the messages written apart match the stream writer's bytes (else it writes each)


class PredictionBatchWriter:
    """The Arrow form of one model's prediction batches, what they share written once per request shape.

    Byte for byte what :func:`prediction_batch_arrow` writes, at about half the cost: a
    stream writer per record builds the answer's schema (the inputs renamed), starts and
    closes a writer and writes the dictionaries again; here each record costs its schema
    message (its fields are the metadata), its record batch message and one copy. The
    first answer of each shape is written by :func:`prediction_batch_arrow` and kept as the
    layout only when the messages written apart match it. An output's dictionary (a
    model's labels) must be the same in every batch: it is written from the first.
    """

    def __init__(self) -> None:
        self._layouts: deque[_Layout] = deque(maxlen=8)

    def write(self, fields: Mapping[str, Any], inputs: pa.RecordBatch, outputs: Mapping[str, pa.Array]) -> bytes:
        """The prediction batch's value: the request's columns and the outputs, ``fields`` as metadata."""
        shape = inputs.schema
        for layout in self._layouts:
            if layout.inputs.equals(shape):  # metadata aside
                if layout.fast:
                    return self._write(layout, fields, inputs, outputs)
                return prediction_batch_arrow(fields, inputs, outputs)
        value = prediction_batch_arrow(fields, inputs, outputs)
        self._layouts.append(self._layout(value, shape, fields, inputs, outputs))
        return value

    @staticmethod
    def _write(
        layout: _Layout, fields: Mapping[str, Any], inputs: pa.RecordBatch, outputs: Mapping[str, pa.Array]
    ) -> bytes:
        # A record batch message holds no names (they are the schema's): the outputs are
        # appended to the request's batch as they are, under any name.
        batch = inputs
        for array in outputs.values():
            batch = batch.append_column("", array)
        meta = orjson.dumps(fields, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY)
        schema = layout.schema.with_metadata({META_KEY: meta})
        return b"".join((schema.serialize(), layout.dictionaries, batch.serialize(), _END_OF_STREAM))

    def _layout(
        self,
        value: bytes,
        shape: pa.Schema,
        fields: Mapping[str, Any],
        inputs: pa.RecordBatch,
        outputs: Mapping[str, pa.Array],
    ) -> _Layout:
        messages = list(pa.ipc.MessageReader.open_stream(pa.py_buffer(value)))
        schema = pa.ipc.read_schema(messages[0]).remove_metadata()
        dictionaries = b"".join(m.serialize().to_pybytes() for m in messages if m.type == "dictionary")
        layout = _Layout(shape.remove_metadata(), schema, dictionaries, fast=True)
        if self._write(layout, fields, inputs, outputs) != value:  # another pyarrow's writer: each is written whole
            return _Layout(layout.inputs, schema, dictionaries, fast=False)
        return layout


@functools.lru_cache(maxsize=64)
def _input_names(inputs: tuple[str, ...]) -> list[str]:
    """A prediction batch's input column names (requests of one model repeat them: made once)."""
    return [f"inputs.{n}" for n in inputs]


def decode_prediction_batch(value: bytes, headers: Headers | None) -> PredictionBatch:
    """A prediction batch in either form; ``ContractError`` for anything wrong."""
    codec = codec_for(PredictionBatch)
    if form_of(headers) == "json":
        return codec.decode(value, headers=headers)
    if headers is not None:
        codec.check_header(headers)
    batch, meta = _read_arrow(value, codec.name)
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        side, _, field = name.partition(".")
        if side == "inputs":
            inputs[field] = column.to_pylist()
        elif side == "outputs" and pa.types.is_struct(column.type):
            outputs[field] = {f.name: column.field(f.name).to_pylist() for f in column.type}
        elif side == "outputs":
            outputs[field] = column.to_pylist()
        else:
            raise RecordValidationError(
                codec.name, [FieldProblem(name, "column is neither inputs.<name> nor outputs.<name>")], raw=value
            )
    return codec.validate({**meta, "inputs": inputs, "outputs": outputs})


def _row(value: Any, index: int) -> Any:
    """Row ``index`` of an output column: a list's item, or an object of columns' items."""
    if isinstance(value, dict):
        return {key: _row(column, index) for key, column in value.items()}
    if isinstance(value, list):
        return value[index]
    return value


def prediction_rows(batch: PredictionBatch) -> list[Prediction]:
    """A prediction batch as one prediction per row (for readers of rows: inference table, drift monitors).

    Row ``i`` is keyed ``<request id>/<i>``; every other field is the batch's.
    """
    names = list(batch.inputs)
    columns = [batch.inputs[n] for n in names]
    latency, lineage = batch.latency, batch.lineage
    return [
        Prediction.model_construct(
            request_id=f"{batch.request_id}/{index}",
            event_time=batch.event_time,
            model=batch.model,
            version=batch.version,
            inputs={name: column[index] for name, column in zip(names, columns, strict=True)},
            outputs={key: _row(value, index) for key, value in batch.outputs.items()},
            latency=latency,
            predicted_at=batch.predicted_at,
            shadow=batch.shadow,
            chain=[],
            source_event_id=batch.source_event_id,
            attributes=batch.attributes,
            lineage=lineage,
        )
        for index in range(batch.rows)
    ]


def decode_predictions(value: bytes, headers: Headers | None) -> list[Prediction]:
    """The predictions of a record on a predictions topic: one, or a prediction batch's rows.

    The shared reader of the predictions topic's two contracts (the inference table and
    drift monitors take rows); ``ContractError`` for a record of neither.
    """
    if is_prediction_batch(headers):
        return prediction_rows(decode_prediction_batch(value, headers))
    return [codec_for(Prediction).decode(value, headers=headers)]


def is_prediction_batch(headers: Headers | None) -> bool:
    """Whether the ``inferstream-schema`` header names a prediction batch."""
    try:
        found = parse_schema_header(headers)
    except ContractError:
        return False
    return found is not None and found[0] == PredictionBatch.schema_name


def columns_of(data: Any) -> tuple[dict[str, Sequence[Any]] | None, pa.RecordBatch | None]:
    """Columns from a mapping of columns, a sequence of row mappings, or an Arrow table/record batch."""
    if isinstance(data, pa.Table):
        data = data.combine_chunks()
        batches = data.to_batches()
        return None, (batches[0] if batches else pa.RecordBatch.from_pylist([], schema=data.schema))
    if isinstance(data, pa.RecordBatch):
        return None, data
    if isinstance(data, Mapping):
        return {str(k): v if isinstance(v, list) else list(v) for k, v in data.items()}, None
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        names = list(data[0]) if data and isinstance(data[0], Mapping) else []
        for index, row in enumerate(data):
            if not isinstance(row, Mapping) or (list(row) != names and set(row) != set(names)):
                reason = "is not a mapping" if not isinstance(row, Mapping) else f"has other keys than row 0 ({names})"
                raise RecordValidationError(_REQUEST, [FieldProblem(f"columns[{index}]", f"row {index} {reason}")])
        return {name: [row[name] for row in data] for name in names}, None
    raise RecordValidationError(
        _REQUEST,
        [FieldProblem("columns", f"{type(data).__name__}: give columns (a mapping), rows, or an Arrow table")],
    )


__all__ = [
    "ARROW",
    "CONTENT_TYPE",
    "META_KEY",
    "ColumnarRequest",
    "Form",
    "PredictionBatchWriter",
    "arrow_fields",
    "columns_of",
    "decode_prediction_batch",
    "decode_predictions",
    "decode_request",
    "encode_request",
    "form_of",
    "headers_for",
    "is_batch_request",
    "is_prediction_batch",
    "prediction_batch_arrow",
    "prediction_rows",
    "write_arrow",
]
