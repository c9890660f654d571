"""Arrow schemas of the contracts (for Parquet), derived from the pydantic models.

The mapping is mechanical, so the Arrow and JSON forms of a contract cannot drift
apart: strings → ``string``, times → ``timestamp[ms, UTC]``, vectors →
``list<float32>``, nested parts → ``struct``, string maps → ``map<string,string>``;
free-form JSON values (model inputs and outputs, features) → a JSON ``string``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from inferstream.schemas._annotations import members, unwrap
from inferstream.schemas.records import Contract

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_JSON_TYPES = {"JsonValue"}


def _strip(annotation: Any) -> Any:
    return unwrap(annotation)[0]


def _is_vector(annotation: Any) -> bool:
    return annotation is np.ndarray or get_origin(annotation) is np.ndarray


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a contract field's annotation."""
    annotation = _strip(annotation)
    if _is_vector(annotation):
        return pa.list_(pa.float32())
    if getattr(annotation, "__name__", None) in _JSON_TYPES or annotation is Any:
        return pa.string()
    kept = members(annotation)[0]
    if len(kept) > 1:
        # A union of scalars (features) or of anything else: keep the JSON text.
        return pa.string()
    annotation = _strip(kept[0])
    origin = get_origin(annotation)
    if origin is Literal or annotation is str:
        return pa.string()
    if annotation is bool:
        return pa.bool_()
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    if annotation is bytes:
        return pa.binary()
    if annotation is datetime:
        return _TIMESTAMP
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(
            [
                pa.field(n, arrow_type(f.annotation), nullable=_nullable(f.annotation))
                for n, f in annotation.model_fields.items()
            ]
        )
    if origin is list:
        (item,) = get_args(annotation)
        return pa.list_(arrow_type(item))
    if origin is tuple:
        items = get_args(annotation)
        return pa.struct([pa.field(f"f{i}", arrow_type(t)) for i, t in enumerate(items)])
    if origin is dict:
        key, value = get_args(annotation)
        value_type = arrow_type(value)
        if _strip(key) is str and value_type == pa.string() and _strip(value) is str:
            return pa.map_(pa.string(), pa.string())
        return pa.string()  # free-form mapping: JSON text
    raise TypeError(f"no Arrow type for {annotation!r}")


@cache
def arrow_schema(contract: type[Contract]) -> pa.Schema:
    """The Arrow schema of a contract; its metadata names the contract and version."""
    fields = [
        pa.field(name, arrow_type(field.annotation), nullable=_nullable(field.annotation))
        for name, field in contract.model_fields.items()
    ]
    meta = {"inferstream.schema": contract.schema_name, "inferstream.schema.version": str(contract.schema_version)}
    return pa.schema(fields, metadata=meta)


def _nullable(annotation: Any) -> bool:
    bare = _strip(annotation)
    return type(None) in get_args(bare)


def _column_value(value: Any, arrow: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(arrow) and not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, np.ndarray):
        return value
    if pa.types.is_map(arrow):
        return list(value.items())
    if pa.types.is_struct(arrow) and isinstance(value, tuple):
        return {f"f{i}": v for i, v in enumerate(value)}
    if pa.types.is_list(arrow) and isinstance(value, list):
        return [_column_value(v, arrow.value_type) for v in value]
    return value


def to_table(records: Iterable[Contract], contract: type[Contract]) -> pa.Table:
    """A Parquet-ready Arrow table of records (free-form mappings become JSON text)."""
    schema = arrow_schema(contract)
    rows = [record.model_dump() for record in records]
    columns = [pa.array([_column_value(row[f.name], f.type) for row in rows], type=f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
