"""Encoding, decoding and validation of contract records, one at a time or in batches.

Every record on a topic carries the header ``inferstream-schema: <name>/<version>``.
Producing a batch of mappings takes the compiled path first (:meth:`Codec.encode_batch`,
schemas/compiled_batch.py: checked and written without building records); a batch it
leaves goes through one pydantic-core call for the whole batch, and only when a batch
holds bad records are they found and reported one by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

import orjson
from pydantic import TypeAdapter, ValidationError

from inferstream.errors import ContractError, FieldProblem, RecordEncodingError, RecordValidationError
from inferstream.schemas._annotations import is_union, members, unwrap
from inferstream.schemas.compiled import fast_checker, fast_decoder
from inferstream.schemas.compiled_batch import Encoded, fast_batch
from inferstream.schemas.compiled_view import fast_view
from inferstream.schemas.jsonpolicy import MAX_DEPTH, NON_FINITE, problem_in_fields
from inferstream.schemas.policy_plan import PolicyPlan
from inferstream.schemas.records import Contract

C = TypeVar("C", bound=Contract)

#: Header naming the contract and version of a record's value.
SCHEMA_HEADER = "inferstream-schema"

Headers = Sequence[tuple[str, bytes | str | None]]


def schema_header_value(contract: type[Contract]) -> bytes:
    """The ``inferstream-schema`` header value of a contract (``event/1``)."""
    return f"{contract.schema_name}/{contract.schema_version}".encode()


def parse_schema_header(headers: Headers | None) -> tuple[str, int] | None:
    """The (name, version) from a record's headers, or None when it has none.

    Header bytes come from any producer in any language: a value that is not UTF-8
    text or not ``<name>/<version>`` raises ``ContractError`` (the record is
    dead-lettered with the reason), never a decoding error that would stop a stage.
    """
    for key, value in headers or ():
        if key != SCHEMA_HEADER or value is None:
            continue
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError as exc:
            raise ContractError(
                f"header {SCHEMA_HEADER} is not UTF-8 text (byte {exc.start + 1} of {value!r:.80}): "
                "it must be <contract>/<version>, such as event/1"
            ) from None
        name, _, version = text.rpartition("/")
        if not (name and version.isascii() and version.isdigit() and len(version) < 10):
            raise ContractError(
                f"header {SCHEMA_HEADER} is {text!r:.80}: it must be <contract>/<version>, such as event/1"
            )
        return name, int(version)
    return None


# pydantic puts the member type of a union in the error location (`features.a.float`).
_UNION_TAG = re.compile(r"^(float|int|str|bool|none|bytes|[A-Za-z_]+\[.*\]|[A-Z][A-Za-z]+)$")


def problems_of(exc: ValidationError) -> list[FieldProblem]:
    """Turn pydantic errors into field problems (dotted path + a readable reason).

    The errors of each member of a union are merged into one problem per field.
    """
    problems: list[FieldProblem] = []
    union_reasons: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        if error["type"].endswith("_type") and len(loc) > 1 and _UNION_TAG.match(loc[-1]):
            union_reasons.setdefault(".".join(loc[:-1]), []).append(loc[-1])
            continue
        kind = error["type"]
        if kind == "finite_number" and len(loc) > 1 and _UNION_TAG.match(loc[-1]):
            loc = loc[:-1]  # the float member of a JSON value: the field itself is at fault
        path = ".".join(loc)
        message = error["msg"]
        if kind == "json_invalid":
            detail = str(error.get("ctx", {}).get("error", message))
            message = _json_reason(detail)
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "finite_number":
            message = f"{error.get('input')} {NON_FINITE}"
        elif kind == "extra_forbidden":
            message = "unknown field (not in the contract)"
        elif kind == "value_error" and message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(FieldProblem(field=path, reason=message))
    said = {p.field for p in problems}
    for path, tags in union_reasons.items():
        if path not in said:  # a NaN said already why no member of the union took it
            problems.append(FieldProblem(field=path, reason=f"wrong type: expected one of {', '.join(tags)}"))
    return sorted(dict.fromkeys(problems), key=lambda p: p.field)


def _json_reason(detail: str) -> str:
    # The parser's words, in the JSON policy's terms (schemas/jsonpolicy.py), position kept.
    if "recursion limit" in detail:
        return f"nested deeper than {MAX_DEPTH} levels"
    if "surrogate" in detail or "hex escape" in detail:
        return f"invalid Unicode: a lone surrogate escape ({detail})"
    if "unicode code point" in detail or "utf-8" in detail.lower():
        return f"invalid UTF-8 ({detail})"
    return f"malformed JSON ({detail})"


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[C]):
    """A validated batch: the good records with their positions, and the errors of the rest."""

    records: list[C]
    positions: list[int]
    errors: dict[int, RecordValidationError]


class Codec(Generic[C]):
    """Validates, encodes and decodes the records of one contract."""

    def __init__(self, contract: type[C]) -> None:
        self.contract = contract
        self.name = contract.schema_name
        self.header = (SCHEMA_HEADER, schema_header_value(contract))
        self._many: TypeAdapter[list[C]] = TypeAdapter(list[contract])  # type: ignore[valid-type]
        self._serializer = contract.__pydantic_serializer__
        #: The compiled decoder (schemas/compiled.py), None for a contract it cannot mirror exactly.
        self._fast = fast_decoder(contract)
        #: The compiled check without building records (:meth:`fields_of`), None where the model must check.
        self._checker = fast_checker(contract) if self._fast is not None else None
        #: Where the JSON policy must look in a validated batch (schemas/policy_plan.py).
        self._plan = PolicyPlan(contract)
        #: Every field of JSON's own types (strings, numbers, times, free-form values): encode_many uses orjson.
        self._flat = all(_json_native(f.annotation) for f in contract.model_fields.values())
        #: The compiled produce path (schemas/compiled_batch.py): written by orjson, keyed by the key field.
        self._batch = fast_batch(contract, contract.key_field) if self._flat and contract.key is Contract.key else None

    def __repr__(self) -> str:
        return f"Codec({self.name}/{self.contract.schema_version})"

    # -- one record -------------------------------------------------------------------

    def validate(self, value: Mapping[str, Any] | C, *, line: int | None = None) -> C:
        """A record from a mapping (or the record itself); raises RecordValidationError.

        Besides the contract, the JSON policy (:mod:`inferstream.schemas.jsonpolicy`):
        no NaN or Infinity, integers within 64 bits, valid Unicode, bounded nesting.
        """
        if isinstance(value, self.contract):
            record = value
        else:
            try:
                record = self.contract.model_validate(value)
            except ValidationError as exc:
                raise RecordValidationError(self.name, problems_of(exc), line=line) from None
            except RecursionError:
                raise RecordValidationError(
                    self.name, [FieldProblem("", f"nested deeper than {MAX_DEPTH} levels")], line=line
                ) from None
        problem = problem_in_fields(record.__dict__)
        if problem is not None:
            raise RecordValidationError(self.name, [problem], line=line)
        return record

    def encode(self, record: C) -> bytes:
        """The JSON bytes of a record; raises ``RecordEncodingError`` for a value JSON cannot carry."""
        try:
            return self._serializer.to_json(record)
        except Exception as exc:  # pydantic-core's serialisation errors (a lone surrogate, ...)
            raise RecordEncodingError(f"{self.name} record cannot be encoded as JSON: {exc}") from None

    def encode_fields(self, fields: Mapping[str, Any]) -> bytes:
        """The JSON bytes of a record given as its fields, every one already valid.

        For hot paths that build records from validated parts (a worker's prediction
        from a validated request and its own outputs): ~1 µs a record instead of ~10 µs
        to construct and serialise the model. Datetimes must be UTC; the bytes are the
        ones :meth:`encode` writes for the same record (tested).
        """
        try:
            return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
        except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, a lone surrogate
            raise RecordEncodingError(f"{self.name} record cannot be encoded as JSON: {exc}") from None

    def decode(self, data: bytes | str, *, headers: Headers | None = None, line: int | None = None) -> C:
        """A record from JSON bytes; checks the schema header when there is one.

        Whatever the bytes or headers hold, this raises ``ContractError`` (mostly
        ``RecordValidationError`` with the field and reason, carrying the raw bytes) and
        nothing else: a stage dead-letters the record and goes on.
        """
        try:
            if headers is not None:
                self.check_header(headers)
            if self._fast is not None and type(data) is bytes:
                fast = self._fast.decode(data)
                if fast is not None:  # checked in compiled code, the JSON policy included
                    return fast  # type: ignore[no-any-return]
            record = self.contract.model_validate_json(data)
        except ContractError:
            raise
        except ValidationError as exc:
            raise RecordValidationError(self.name, problems_of(exc), line=line, raw=_raw(data)) from None
        except Exception as exc:  # still about this record's bytes, whatever pydantic raised
            undecodable = FieldProblem("", f"undecodable ({type(exc).__name__}: {exc})")
            raise RecordValidationError(self.name, [undecodable], line=line, raw=_raw(data)) from None
        # A strict JSON parser gave the strings: only numbers and depth are left to check.
        problem = problem_in_fields(record.__dict__, strings=isinstance(data, str))
        if problem is not None:
            raise RecordValidationError(self.name, [problem], line=line, raw=_raw(data))
        return record

    def fields_of(self, names: Sequence[str]) -> Callable[[bytes, Headers | None], tuple[Any, ...]]:
        """A function that checks a record's bytes (and headers) as :meth:`decode` does and gives the named fields.

        For readers that pass the bytes on as they are and look at a few fields (the
        gateway's streams): the compiled path checks the record without building it, about
        half the cost of :meth:`decode`. The function raises ``ContractError`` for exactly
        the records :meth:`decode` refuses. Names must be fields of JSON's own scalar types
        (strings, numbers, booleans), whose values do not depend on the way they were read.
        """
        names = tuple(names)
        if not names:
            raise ValueError("fields_of needs the name of at least one field")
        for name in names:
            field = self.contract.model_fields.get(name)
            annotation = None if field is None else unwrap(field.annotation)[0]
            if annotation is None or (
                annotation not in (str, int, float, bool) and get_origin(annotation) is not Literal
            ):
                raise ValueError(f"{self.name} has no field {name!r} of a JSON scalar type")
        checker = self._checker
        check = checker.check if checker is not None else None
        check_header, header = self.check_header, self.header
        decode = self.decode
        # attrgetter of several names gives a tuple; of one, the value alone.
        pick: Callable[[Any], Any] = attrgetter(*names) if len(names) > 1 else _one(names[0])

        def fields(data: bytes, headers: Headers | None) -> tuple[Any, ...]:
            if check is not None and type(data) is bytes:
                if headers and headers[0] != header:  # the common case (this contract's header first) costs no call
                    check_header(headers)
                struct = check(data)
                if struct is not None:
                    return pick(struct)  # type: ignore[no-any-return]
            return pick(decode(data, headers=headers))  # type: ignore[no-any-return]

        return fields

    def viewer(self, echo: str) -> Callable[[bytes, Headers | None], tuple[Any, bytes | None]]:
        """A function that decodes a record's bytes as :meth:`decode` does into a view of it, with ``echo``'s JSON text.

        For a hot path that reads a record's attributes and copies one field into its own
        record (the tabular worker: a prediction echoes its request's inputs). The compiled
        path gives a view (schemas/compiled_view.py: attributes as the record's, no pydantic
        methods, ~1 µs a record less) and the field's text as it came; a record it leaves
        comes from :meth:`decode` with no text (None). Raises ``ContractError`` for exactly
        the records :meth:`decode` refuses.
        """
        fast = fast_view(self.contract, echo) if self._fast is not None else None
        view = fast.decode if fast is not None else None
        check_header, header = self.check_header, self.header
        decode = self.decode

        def read(data: bytes, headers: Headers | None) -> tuple[Any, bytes | None]:
            if view is not None and type(data) is bytes:
                if headers and headers[0] != header:  # the common case (this contract's header first) costs no call
                    check_header(headers)
                viewed = view(data)
                if viewed is not None:
                    return viewed
            return decode(data, headers=headers), None

        return read

    def check_header(self, headers: Headers) -> None:
        """Refuse records written by another contract or a newer version of this one."""
        if headers and headers[0] == self.header:
            # The common case, written by this version of this contract (a traceparent may follow).
            return
        found = parse_schema_header(headers)
        if found is None:
            return
        name, version = found
        if name != self.name:
            raise ContractError(f"record is a {name!r} record, expected {self.name!r}")
        if version > self.contract.schema_version:
            raise ContractError(
                f"record was written with {name} schema version {version}; this reader knows "
                f"version {self.contract.schema_version}: upgrade inferstream"
            )

    # -- batches ----------------------------------------------------------------------

    def validate_batch(self, values: Sequence[Mapping[str, Any] | C]) -> BatchResult[C]:
        """Validate many records in one call; bad ones are reported by position."""
        try:
            records = self._many.validate_python(values)
        except ValidationError as exc:
            result = self._split_bad(values, exc)
        except RecursionError:
            result = self._one_by_one(values)
        else:
            result = BatchResult(records=records, positions=list(range(len(records))), errors={})
        return self._police(result)

    def _one_by_one(self, values: Sequence[Mapping[str, Any] | C]) -> BatchResult[C]:
        result: BatchResult[C] = BatchResult(records=[], positions=[], errors={})
        for index, value in enumerate(values):
            try:
                result.records.append(self.validate(value))
                result.positions.append(index)
            except RecordValidationError as exc:
                result.errors[index] = exc
        return result

    def _police(self, result: BatchResult[C]) -> BatchResult[C]:
        # The JSON policy on every valid record: a NaN, a huge integer or a lone surrogate
        # moves it to the errors (user-built values can hold what JSON text cannot).
        records, positions = result.records, result.positions
        bad = {
            positions[index]: problem
            for index in self._plan.suspects(records)
            if (problem := problem_in_fields(records[index].__dict__)) is not None
        }
        if not bad:
            return result
        errors = dict(result.errors)
        errors.update((position, RecordValidationError(self.name, [problem])) for position, problem in bad.items())
        kept = [(r, p) for r, p in zip(result.records, result.positions, strict=True) if p not in bad]
        return BatchResult(records=[r for r, _ in kept], positions=[p for _, p in kept], errors=errors)

    def _split_bad(self, values: Sequence[Mapping[str, Any] | C], exc: ValidationError) -> BatchResult[C]:
        by_index: dict[int, list[dict[str, Any]]] = {}
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            index = loc[0] if loc and isinstance(loc[0], int) else -1
            by_index.setdefault(index, []).append(dict(error))
        if -1 in by_index:  # not a list of records at all
            raise RecordValidationError(self.name, problems_of(exc))
        errors = {}
        for index in by_index:
            try:
                self.contract.model_validate(values[index])
            except ValidationError as single:
                errors[index] = RecordValidationError(self.name, problems_of(single))
        positions = [i for i in range(len(values)) if i not in errors]
        records = self._many.validate_python([values[i] for i in positions])
        return BatchResult(records=records, positions=positions, errors=errors)

    def encode_batch(self, values: Sequence[Any]) -> Encoded | None:
        """Validate mappings in compiled code: their keys, and their bytes written as they are produced.

        None when the contract or one of the values is not for the compiled path: then
        :meth:`validate_batch` and :meth:`encode_many` decide (and word any error), as
        for the values after the first one whose bytes could not be written.
        """
        return None if self._batch is None else self._batch.encode(values)

    def encode_many(self, records: Iterable[C]) -> list[bytes]:
        """The JSON bytes of each record (``RecordEncodingError`` for one JSON cannot carry)."""
        records = records if isinstance(records, list) else list(records)
        if self._flat:
            # Fields of JSON's own types only: orjson writes the bytes pydantic would (tested), ~2× faster.
            dumps, option = orjson.dumps, orjson.OPT_UTC_Z
            try:
                return [dumps(record.__dict__, option=option) for record in records]
            except (TypeError, orjson.JSONEncodeError):
                pass  # a value orjson will not write: pydantic decides, record by record
        to_json = self._serializer.to_json
        try:
            return [to_json(record) for record in records]
        except Exception:  # pydantic-core's serialisation errors: find the record at fault
            return [self.encode(record) for record in records]


def _one(name: str) -> Callable[[Any], tuple[Any]]:
    get = attrgetter(name)
    return lambda record: (get(record),)


def _json_native(annotation: Any) -> bool:
    """Whether values of a field's type are JSON's own (orjson and pydantic write them alike)."""
    annotation = unwrap(annotation)[0]
    if getattr(annotation, "__name__", None) == "JsonValue":
        return True
    if is_union(annotation):
        return all(_json_native(a) for a in members(annotation)[0])
    origin = get_origin(annotation)
    if origin is list or origin is dict:
        return all(_json_native(a) for a in get_args(annotation))
    return origin is Literal or annotation in (str, int, float, bool, datetime)


def _raw(data: bytes | str) -> bytes:
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


_CODECS: dict[type[Contract], Codec[Any]] = {}


def codec_for(contract: type[C]) -> Codec[C]:
    """The shared codec of a contract (built once)."""
    codec = _CODECS.get(contract)
    if codec is None:
        codec = _CODECS[contract] = Codec(contract)
    return codec
