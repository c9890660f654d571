"""Field types shared by the topic contracts."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    WithJsonSchema,
)

FloatArray = npt.NDArray[np.float32]

#: A record id: what sinks use for idempotent writes (the Kafka key, the document id).
Id = Annotated[str, Field(min_length=1, max_length=512, pattern=r"\S")]

#: A model name or version: the pieces of ``requests.<model>.<version>`` topic names.
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


def _utc(value: datetime) -> datetime:
    # Naive times are taken as UTC: every timestamp on a topic is absolute. Aware ones
    # keep their offset (converting costs ~0.5 µs a record on the produce hot path).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: An absolute time; ISO 8601 strings or Unix epoch numbers are accepted, naive means UTC.
Timestamp = Annotated[datetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    """The current time in UTC (the default event time)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def _to_vector(value: Any) -> FloatArray:
    if isinstance(value, np.ndarray):
        array = value.astype("<f4", copy=False)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("vector must be base64 of little-endian float32 bytes") from exc
        if len(raw) % 4:
            raise ValueError(f"vector byte length {len(raw)} is not a multiple of 4 (float32)")
        array = np.frombuffer(raw, dtype="<f4")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw_bytes = bytes(value)
        if len(raw_bytes) % 4:
            raise ValueError(f"vector byte length {len(raw_bytes)} is not a multiple of 4 (float32)")
        array = np.frombuffer(raw_bytes, dtype="<f4")
    elif isinstance(value, Sequence):
        try:
            array = np.asarray(value, dtype="<f4")
        except (TypeError, ValueError) as exc:
            raise ValueError("vector must be a list of numbers") from exc
    else:
        raise ValueError("vector must be base64 little-endian float32 bytes or a list of numbers")
    if array.ndim != 1 or array.size == 0:
        raise ValueError("vector must be one-dimensional and non-empty")
    if not np.isfinite(array).all():
        raise ValueError("vector holds NaN or infinite values")
    return array


def _vector_to_base64(array: FloatArray) -> str:
    return base64.b64encode(array.astype("<f4", copy=False).tobytes()).decode("ascii")


#: A dense vector. On the wire: base64 of little-endian float32 bytes (half the size of a
#: JSON number array and far cheaper to encode). A list of numbers is accepted on input.
Vector = Annotated[
    FloatArray,
    PlainValidator(_to_vector),
    PlainSerializer(_vector_to_base64, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "little-endian float32 values, base64-encoded",
        }
    ),
]

#: A JSON scalar feature value.
Scalar = float | int | Annotated[str, Strict()] | bool | None


class Record(BaseModel):
    """Base of every topic contract: immutable, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        coerce_numbers_to_str=True,
        ser_json_timedelta="float",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        # NaN and Infinity are not JSON (the platform's JSON policy, schemas/jsonpolicy.py)
        allow_inf_nan=False,
    )


class Part(BaseModel):
    """Base of nested parts of a contract (latency, drift columns, chain steps)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
