"""Predictions → columns: each record decoded once, each monitored field pulled into a numpy array.

Bad input never raises: a record that is not a JSON prediction is counted as a bad
record, and per column a value that is absent (``missing``), of the wrong type
(``invalid``) or null/NaN/infinite (``nan``) is counted and left out of the
statistics. Text columns become their length in characters; embedding columns
accept a list of numbers or base64 little-endian float32.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from inferstream.errors import ContractError
from inferstream.monitoring.numeric_block import NumericBlock, fits_float
from inferstream.monitoring.spec import ColumnSpec
from inferstream.monitoring.window import Batch, ColumnBatch, TopicPartition
from inferstream.schemas.codec import Headers, codec_for
from inferstream.schemas.columnar import decode_predictions, is_prediction_batch
from inferstream.schemas.records import Prediction

_MISSING = object()
#: The header of a single prediction (the common case, told apart without parsing).
_PREDICTION_HEADER = codec_for(Prediction).header


def field_value(record: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at a dotted path of a decoded record (a sentinel when absent)."""
    value: Any = record
    for part in path:
        if type(value) is dict:  # decoded JSON: no abstract-class check (~0.3 µs a step)
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def field_values(records: Sequence[Mapping[str, Any]], path: Sequence[str]) -> list[Any]:
    """:func:`field_value` of each record; a field one level down (``inputs.x``) read inline, no call a record."""
    if len(path) == 2:
        outer, inner = path
        return [
            part.get(inner, _MISSING) if type(part := record.get(outer)) is dict else field_value(record, path)
            for record in records
        ]
    return [field_value(record, path) for record in records]


def _lenient(value: bytes | None) -> Any:
    # What orjson refuses but a monitor still reads: NaN (counted as missing values) and lone
    # surrogate escapes; anything else is a bad record.
    try:
        return json.loads(value) if value is not None else None
    except (ValueError, RecursionError):  # malformed, not UTF-8, or nested too deep
        return None


def _batch_rows(value: bytes | None, headers: Headers) -> list[dict[str, Any]] | None:
    """A prediction batch's rows as decoded JSON objects (the inference table expands it alike); None if bad."""
    try:
        return [p.model_dump(mode="json") for p in decode_predictions(value or b"", headers)]
    except ContractError:
        return None


def event_seconds(value: Any) -> float | None:
    """An event time (ISO 8601 text or epoch number) as seconds since the epoch."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    if _is_real(value):
        return float(value) / 1000.0 if value > 1e11 else float(value)  # milliseconds or seconds
    return None


def vector_of(value: Any) -> npt.NDArray[np.float64] | None:
    """An embedding as a float vector (None when it is not one)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) % 4 or not raw:
            return None
        return np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if isinstance(value, list) and value and all(_is_number(v) and fits_float(v) for v in value):
        return np.asarray(value, dtype=np.float64)
    return None


class Extractor:
    """Turns raw prediction values of one model (version) into a :class:`Batch`."""

    def __init__(self, columns: Sequence[ColumnSpec], kinds: Mapping[str, str], *, model: str, version: str | None):
        self.columns = list(columns)
        #: the kind each column is measured as: numerical, categorical or embedding
        self.kinds = dict(kinds)
        self.model = model
        self.version = version
        self.dims: dict[str, int] = {}
        self.skipped = 0  # other models' predictions
        self.expanded = 0  # rows of prediction batches beyond one per record
        #: Numerical columns of one part of the record (``inputs.*``), read together where they can be.
        self._blocks = _blocks(self.columns, self.kinds)

    def decode(
        self,
        values: Sequence[tuple[bytes | None, TopicPartition, int]],
        headers: Sequence[Headers | None] | None = None,
    ) -> Batch:
        """A batch from (value, partition, offset) triples; other models' predictions are skipped.

        With the records' ``headers``, a prediction batch (a columnar request's answer) gives
        one row per row it scored, all at its offset; ``expanded`` counts the rows beyond one
        per record, so records in = rows out − expanded + skipped + bad.
        """
        records: list[dict[str, Any]] = []
        times: list[float] = []
        parts: dict[TopicPartition, int] = {}
        part_index: list[int] = []
        offsets: list[int] = []
        bad = 0
        loads, plain = orjson.loads, _PREDICTION_HEADER
        for index, (value, tp, offset) in enumerate(values):
            found = headers[index] if headers is not None else None
            if found and found[0] != plain and is_prediction_batch(found):
                taken = _batch_rows(value, found)
            else:
                try:
                    record = loads(value) if value is not None else None
                except orjson.JSONDecodeError:
                    record = _lenient(value)
                taken = [record] if isinstance(record, dict) else None
            if taken is None:
                bad += 1
                continue
            model = taken[0].get("model")
            if model != self.model or (self.version is not None and str(taken[0].get("version")) != self.version):
                if isinstance(model, str):
                    self.skipped += 1
                    continue
                bad += 1
                continue
            seconds = event_seconds(taken[0].get("event_time"))  # a batch's rows share the request's time
            if seconds is None:
                bad += 1
                continue
            self.expanded += len(taken) - 1
            for record in taken:
                records.append(record)
                times.append(seconds)
                part_index.append(parts.setdefault(tp, len(parts)))
                offsets.append(offset)
        columns: dict[str, ColumnBatch] = {}
        for block in self._blocks:
            columns.update(block.read(records) or {})
        for spec in self.columns:
            if spec.name not in columns:
                columns[spec.name] = self._column(spec, records)
        return Batch(
            times=np.asarray(times, dtype=np.float64),
            partitions=list(parts),
            offsets=np.asarray(offsets, dtype=np.int64),
            part_index=np.asarray(part_index, dtype=np.int64),
            columns=columns,
            raw=records,
            bad_records=bad,
        )

    def row_values(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One sampled row (a decoded record) as report columns (clean values, None where bad)."""
        out: dict[str, Any] = {}
        for spec in self.columns:
            kind = self.kinds[spec.name]
            if kind == "embedding":
                continue
            value = field_value(record, spec.path)
            out[spec.name] = self._clean(spec, kind, value)
        return out

    def _clean(self, spec: ColumnSpec, kind: str, value: Any) -> Any:
        if value is _MISSING or value is None:
            return None
        if spec.kind == "text":
            return float(len(value)) if isinstance(value, str) else None
        if kind == "numerical":
            return float(value) if _is_real(value) else None
        if isinstance(value, (str, int, bool)) or (isinstance(value, float) and math.isfinite(value)):
            return value
        return None

    def _column(self, spec: ColumnSpec, records: Sequence[Mapping[str, Any]]) -> ColumnBatch:
        kind = self.kinds[spec.name]
        path = spec.path
        raw = field_values(records, path)
        missing = [i for i, v in enumerate(raw) if v is _MISSING]
        nan = [i for i, v in enumerate(raw) if v is None]
        if kind == "embedding":
            return self._vectors(spec, raw, missing, nan)
        if spec.kind == "text":
            raw = [len(v) if isinstance(v, str) else v for v in raw]
        if kind == "numerical":
            # An integer beyond float64 (JSON allows one) is invalid, like a string.
            good = [i for i, v in enumerate(raw) if type(v) is float or (_is_number(v) and fits_float(v))]
            values = np.asarray([raw[i] for i in good], dtype=np.float64)
            finite = np.isfinite(values)
            rows = np.asarray(good, dtype=np.int64)
            nan += rows[~finite].tolist()
            invalid = sorted(set(range(len(raw))) - set(good) - set(missing) - set(nan))
            return ColumnBatch(rows[finite], values[finite], _ints(missing), _ints(invalid), _ints(nan))
        good = [
            i
            for i, v in enumerate(raw)
            if isinstance(v, (str, int, bool)) or (isinstance(v, float) and math.isfinite(v))
        ]
        nan += [i for i, v in enumerate(raw) if isinstance(v, float) and not math.isfinite(v)]
        invalid = sorted(set(range(len(raw))) - set(good) - set(missing) - set(nan))
        values = np.empty(len(good), dtype=object)
        values[:] = [raw[i] for i in good]
        return ColumnBatch(_ints(good), values, _ints(missing), _ints(invalid), _ints(nan))

    def _vectors(self, spec: ColumnSpec, raw: list[Any], missing: list[int], nan: list[int]) -> ColumnBatch:
        dims = self.dims.get(spec.name)
        good: list[int] = []
        vectors: list[npt.NDArray[np.float64]] = []
        invalid: list[int] = []
        for i, value in enumerate(raw):
            if value is _MISSING or value is None:
                continue
            vector = vector_of(value)
            if vector is None or (dims is not None and len(vector) != dims):
                invalid.append(i)
            elif not np.isfinite(vector).all():
                nan.append(i)
            else:
                good.append(i)
                vectors.append(vector)
        matrix = np.vstack(vectors) if vectors else np.zeros((0, dims or 0))
        return ColumnBatch(_ints(good), matrix, _ints(missing), _ints(invalid), _ints(nan))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite number as a float (an integer beyond float64 is not: it would raise)."""
    return _is_number(value) and fits_float(value) and math.isfinite(value)


def _is_category(value: Any) -> bool:
    return isinstance(value, (str, int, bool)) or (isinstance(value, float) and math.isfinite(value))


def _blocks(columns: Sequence[ColumnSpec], kinds: Mapping[str, str]) -> list[NumericBlock]:
    """The numerical columns one level inside a part, grouped by part where two or more share one."""
    by_part: dict[str, list[ColumnSpec]] = {}
    for spec in columns:
        if kinds[spec.name] == "numerical" and spec.kind != "text" and len(spec.path) == 2:
            by_part.setdefault(spec.path[0], []).append(spec)
    return [
        NumericBlock(part, [s.path[1] for s in specs], [s.name for s in specs])
        for part, specs in by_part.items()
        if len(specs) >= 2
    ]


def _ints(values: Sequence[int]) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)
