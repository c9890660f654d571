"""Compiled produce path: a batch of mappings checked in compiled code and written as JSON, no records built.

The SDK and ``inferstream produce`` validate what users give them (mappings) before
producing. pydantic's batch validation builds a model per record only for the bytes
to be written from it; here ``msgspec.convert`` checks the whole batch against a struct
derived from the contract (as :mod:`inferstream.schemas.compiled` does for JSON text),
the few checks it cannot express run over the batch (string patterns, the model's
``after`` validators, timestamps), and orjson writes each record from the struct's
fields as it is produced: ~1 µs a record instead of ~2.5 µs.

As with the compiled decoder, this path takes a *subset* of what the model takes, and
writes for it the bytes the model's path writes (``tests/unit/test_compiled_batch.py``):

- timestamps as aware datetimes in UTC, or RFC 3339 text in UTC (``Z``) with at most
  microseconds (msgspec rounds further digits where the model truncates them; offsets
  are the model's to convert);
- finite floats, integers within int64, free-form values nested at most two levels;
- no vectors and no nested parts.

Anything else makes :meth:`FastBatch.encode` return None for the batch, and the
model's path validates it, with its own error messages for the bad records. A string
orjson cannot write (a lone surrogate) ends :meth:`Encoded.payloads` early: the
records before it are produced, the rest go the model's way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC
from operator import attrgetter
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel

from inferstream.schemas.compiled import UnsupportedError, _after_validators, _default, _is_time, _Mapper

#: The longest UTC timestamp text taken here (``2026-01-01T00:00:00.000123Z``): msgspec rounds a
#: fraction beyond microseconds where the model truncates it.
_UTC_TEXT = 27
#: Consumes an iterator in C.
_drain: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend
#: What the checks of one batch raise for a value the model refuses (or words differently).
_REFUSED = (msgspec.ValidationError, ValueError, TypeError, AssertionError)


class FastBatch:
    """Checks a batch of mappings against one contract and writes each one's JSON bytes."""

    def __init__(self, model: type[BaseModel], key_field: str) -> None:
        mapper = _Mapper(python=True)
        fields: list[tuple[str, Any, Any]] = []
        self._checks: list[tuple[Callable[[Any], Any], Callable[[Any], Any]]] = []
        self._times: list[str] = []
        for name, info in model.model_fields.items():
            kind, convert = mapper.field_type(info.annotation, list(info.metadata))
            fields.append((name, kind, _default(info, None)))
            if convert is _is_time:
                self._times.append(name)
            elif convert is not None:  # a check of a string's pattern: the value stays as it is
                self._checks.append((attrgetter(name), convert))
        struct = msgspec.defstruct(f"{model.__name__}Batch", fields, kw_only=True, forbid_unknown_fields=True)
        self._type: Any = list[struct]  # type: ignore[valid-type]
        self._after = _after_validators(model)
        self._key = attrgetter(key_field)

    def encode(self, values: Sequence[Any]) -> Encoded | None:
        """The checked batch, or None: the batch is the model's to validate."""
        if set(map(type, values)) != {dict}:  # records, or mappings of other kinds: the model's
            return None
        for name in self._times:
            for value in values:
                text = value.get(name)
                if type(text) is str and (len(text) > _UTC_TEXT or not text.endswith("Z")):
                    return None
        try:
            structs = msgspec.convert(values, self._type)
            for field, check in self._checks:
                _drain(map(check, map(field, structs)))
            for after in self._after:
                _drain(map(after, structs))
        except _REFUSED:
            return None
        for name in self._times:  # aware, and in UTC (other offsets: the model converts them)
            zones = set(map(attrgetter("tzinfo"), filter(None, map(attrgetter(name), structs))))
            if zones - {UTC}:
                return None
        return Encoded(structs, list(map(self._key, structs)))


class Encoded:
    """A checked batch: its keys, and its records' JSON bytes written one at a time."""

    def __init__(self, structs: list[Any], keys: list[Any]) -> None:
        self.keys = keys
        #: How many records :meth:`payloads` gave so far.
        self.written = 0
        self._structs = structs

    def payloads(self) -> Iterator[bytes]:
        """Each record's bytes, until one orjson cannot write (a lone surrogate: the model's path says where).

        One at a time, to be produced (copied by librdkafka) and freed before the next:
        a batch of orjson's buffers kept alive together makes the C allocator give memory
        back and take it again, ~0.5–3 µs a record.
        """
        dumps, option, fields = orjson.dumps, orjson.OPT_UTC_Z, msgspec.structs.asdict
        for struct in self._structs:
            try:
                payload = dumps(fields(struct), option=option)
            except orjson.JSONEncodeError:
                return
            self.written += 1
            yield payload


def fast_batch(model: type[BaseModel], key_field: str) -> FastBatch | None:
    """The compiled batch path of a contract, or None when one of its fields has no exact compiled form."""
    try:
        return FastBatch(model, key_field)
    except UnsupportedError:
        return None


__all__ = ["Encoded", "FastBatch", "fast_batch"]
