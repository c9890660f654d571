"""Compiled decoding of the hot-path contracts: msgspec structs derived from the pydantic models.

The pydantic models stay the one definition (JSON Schema files, errors, settings,
HTTP bodies). From each model this module derives a msgspec ``Struct`` whose decoder
checks the JSON in compiled code, then builds the pydantic record from it without a
second validation: ~2–3× cheaper than pydantic's ``model_validate_json`` plus the
JSON policy's walk (:mod:`inferstream.schemas.jsonpolicy`).

The derived struct accepts a *subset* of what the model accepts, always with the
same values, and nothing the policy refuses:

- strings with the model's length and pattern limits (``$`` anchored at the very end);
- timestamps as RFC 3339 text (``T``, up to 6 fractional digits, ``Z`` or an offset;
  naive means UTC, as the model says);
- integers within int64 (the rest of the policy's 64-bit range goes to the model),
  finite floats (the JSON parser refuses NaN, ±Infinity and numbers beyond float64),
  valid UTF-8 without lone surrogates;
- free-form JSON values (model inputs, outputs) nested at most two levels: a scalar,
  or an object or array of scalars;
- nested parts as structs of their own, unknown fields refused;
- vectors as base64 text, decoded from base64 by msgspec (in compiled code, about half
  the cost of the record otherwise) and made an array by the model's own function;
  base64 msgspec refuses (an odd padding the model tolerates) goes to the model.

Whatever the struct does not take (a number where a string is expected, an epoch
timestamp, deeper nesting, a bad record) goes the model's way (``decode`` returns
None): the model then accepts it with the same result, or refuses it with its own
error message. ``tests/unit/test_compiled_contracts.py`` checks both paths agree.

A reader that passes a record's bytes on as they are (the gateway's streams) needs the
check, not the record: :class:`FastChecker` decodes the same structs and runs the same
conversions, keeping nothing they make, so it takes exactly what the decoder takes at
about half the cost.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import msgspec
from pydantic import AfterValidator, BaseModel, PlainValidator, Strict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from inferstream.schemas._annotations import is_union, members, unwrap
from inferstream.schemas._types import _to_vector, _utc
from inferstream.schemas.jsonpolicy import INT_MIN

#: msgspec bounds fit int64: integers from 2**63 to the policy's INT_MAX (uint64) go to the model.
_INT64_MAX = 2**63 - 1
_INT = Annotated[int, msgspec.Meta(ge=INT_MIN, le=_INT64_MAX)]
_SCALAR = _INT | float | str | bool | None
#: A free-form JSON value as the fast path takes it: a scalar, or one level of object or array of scalars.
_JSON = _SCALAR | dict[str, _SCALAR] | list[_SCALAR]
#: RFC 3339 date-time text the fast path parses (others go to the model): ASCII digits
#: (``fromisoformat`` refuses the others anyway), no groups kept.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
).fullmatch
_fromisoformat = datetime.fromisoformat


class UnsupportedError(TypeError):
    """A model has a field the fast path cannot mirror exactly: it decodes with pydantic only."""


def _readable(value: str) -> bool:
    """Whether timestamp text is of the form the fast path reads exactly as the model does.

    The form every writer of this platform uses (``2026-12-07T05:44:05.128609Z``) is
    recognised by its length and separators, which stand every third character from the
    fifth to the twentieth (one slice, ~0.1 µs); other text must match :data:`_RFC3339`
    in full (~0.3 µs), so that ``fromisoformat``, which takes more ISO 8601 forms than
    the model does, only ever sees text both read alike.
    """
    return (len(value) == 27 and value[4:20:3] == "--T::." and value[26] == "Z") or _RFC3339(value) is not None


def _timestamp(value: str | datetime) -> datetime:
    """A record's timestamp text as the model reads it; ``ValueError`` for text the model must judge.

    A datetime from a default factory (``utcnow``) stays as it is.
    """
    if type(value) is not str:
        return value  # type: ignore[return-value]
    if not _readable(value):
        raise ValueError("not RFC 3339 text the fast path reads")
    return _utc(_fromisoformat(value))


def _timestamp_check() -> Callable[[Any], Any]:
    """What :func:`_timestamp` checks, without the datetime; texts seen pass at once.

    Timestamps repeat: a worker stamps a whole batch of predictions with one
    ``predicted_at``, a producer often one ``event_time``. As :func:`_matching` does for
    names, the texts already checked are remembered (up to 10,000, then forgotten).
    """
    seen: set[str] = set()

    def check(value: Any) -> Any:
        if type(value) is str and value not in seen:  # a datetime comes from a default factory
            if not _readable(value):
                raise ValueError("not RFC 3339 text of the compiled path")
            _fromisoformat(value)
            if len(seen) > 10_000:
                seen.clear()
            seen.add(value)
        return value

    return check


def _pattern(pattern: str) -> str:
    # pydantic matches with Rust's regex, where ``$`` is the end of the text; in Python's
    # ``re`` it also matches before a final newline.
    return re.sub(r"(?<!\\)\$$", r"\\Z", pattern)


def _matching(pattern: str) -> Callable[[str], str]:
    """A check of the pattern, for the record's builder: names repeat, so those seen are remembered."""
    if pattern == r"\S":  # an id: anything but blank (what the regex says, without running it)

        def not_blank(value: str) -> str:
            if value.isspace():
                raise ValueError("blank")
            return value

        return not_blank
    search = re.compile(_pattern(pattern)).search
    seen: set[str] = set()

    def check(value: str) -> str:
        if value not in seen:
            if search(value) is None:
                raise ValueError(f"does not match {pattern}")
            if len(seen) > 10_000:
                seen.clear()
            seen.add(value)
        return value

    return check


def _constrained_str(metadata: list[Any]) -> tuple[Any, Callable[[Any], Any] | None]:
    meta: dict[str, Any] = {}
    check = None
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            meta["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            meta["max_length"] = item.max_length
        elif getattr(item, "pattern", None) is not None:
            check = _matching(item.pattern)
        elif isinstance(item, Strict):
            continue
        else:
            raise UnsupportedError(f"string constraint {item!r}")
    return (Annotated[str, msgspec.Meta(**meta)] if meta else str), check


def _number(kind: type, metadata: list[Any], *, finite: bool = False) -> Any:
    meta: dict[str, Any] = {"ge": -sys.float_info.max, "le": sys.float_info.max} if finite and kind is float else {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            meta["ge"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            meta["gt"] = item.gt
        elif isinstance(item, annotated_types.Le):
            meta["le"] = item.le
        elif isinstance(item, annotated_types.Lt):
            meta["lt"] = item.lt
        else:
            raise UnsupportedError(f"number constraint {item!r}")
    if kind is int:
        meta = {"ge": INT_MIN, "le": _INT64_MAX, **meta}
    return Annotated[kind, msgspec.Meta(**meta)] if meta else kind


#: Python values (mappings built by users) hold what JSON text cannot: floats are checked finite there.
_FINITE = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
_PY_SCALAR = _INT | _FINITE | str | bool | None
_PY_JSON = _PY_SCALAR | dict[str, _PY_SCALAR] | list[_PY_SCALAR]
#: A timestamp from Python: an aware datetime, or RFC 3339 text msgspec parses to one.
_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]


def _is_time(value: Any) -> Any:
    """The mark of a timestamp field in :attr:`_Mapper.python` mode (checked by the batch, not per value)."""
    return value


class _Mapper:
    """Maps a model's field annotations to struct types, recording the conversions back.

    With ``python``, the struct takes Python values (``msgspec.convert``) rather than JSON
    text: timestamps are aware datetimes (marked by :func:`_is_time`), floats finite, and
    only conversions that check a value without changing it are allowed.

    With ``check``, a struct's function runs every conversion for its checks only and
    gives the struct back, never building a model (:class:`FastChecker`); a model with
    an after validator (which needs the model) has no such function.
    """

    def __init__(self, *, python: bool = False, check: bool = False) -> None:
        self.structs: dict[type[BaseModel], tuple[type[msgspec.Struct], Callable[[Any], Any]]] = {}
        #: Each model's fields whose decoded value the model converts or checks further, with the function doing it.
        self.conversions: dict[type[BaseModel], list[tuple[str, Callable[[Any], Any]]]] = {}
        self.python = python
        self.check = check

    def field_type(self, annotation: Any, metadata: list[Any]) -> tuple[Any, Callable[[Any], Any] | None]:
        """The struct type of an annotation, and the conversion of its decoded value (None: as it is)."""
        annotation, inner = unwrap(annotation)
        validators = [m for m in metadata + inner if isinstance(m, AfterValidator)]
        others = [m for m in metadata + inner if not isinstance(m, AfterValidator)]
        if any(isinstance(m, PlainValidator) and m.func is _to_vector for m in others):
            if self.python:
                raise UnsupportedError("vector")
            # A vector: base64 text, decoded to bytes by msgspec and turned into the array by the
            # model's own function (a JSON array of numbers, the other form the model takes,
            # goes to the model).
            return bytes, _to_vector
        if any(v.func is not _utc for v in validators):
            raise UnsupportedError(f"validator on {annotation!r}")
        origin = get_origin(annotation)
        if is_union(annotation):
            kept, optional = members(annotation)
            if len(kept) == 1:
                inner_type, convert = self.field_type(kept[0], others + validators)
                if not optional:
                    return inner_type, convert
                if convert is None or convert is _is_time:
                    return inner_type | None, convert
                return inner_type | None, _optional(convert)
            if others or validators:
                raise UnsupportedError(f"constrained union {annotation!r}")
            return self._scalar_union(kept, optional), None
        if annotation is datetime:
            if others:
                raise UnsupportedError("constrained datetime")
            if self.check:
                return str, _timestamp_check()
            return (_AWARE, _is_time) if self.python else (str, _timestamp)
        if annotation is str:
            return _constrained_str(others)
        if annotation is bool:
            return bool, None
        if annotation in (int, float):
            return _number(annotation, others, finite=self.python), None
        if getattr(annotation, "__name__", None) == "JsonValue":
            return (_PY_JSON if self.python else _JSON), None
        if others or validators:
            raise UnsupportedError(f"constraint on {annotation!r}")
        if origin is Literal:
            return annotation, None
        if origin is dict:
            key, value = get_args(annotation)
            if key is not str:
                raise UnsupportedError(f"mapping with {key!r} keys")
            value_type, convert = self.field_type(value, [])
            if convert is not None:
                raise UnsupportedError(f"mapping of {value!r}")
            return dict[str, value_type], None  # type: ignore[valid-type]
        if origin is list:
            (item,) = get_args(annotation)
            item_type, convert = self.field_type(item, [])
            if convert is None:
                return list[item_type], None  # type: ignore[valid-type]
            return list[item_type], _each(convert)  # type: ignore[valid-type]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if self.python:
                raise UnsupportedError(f"nested {annotation.__name__}")
            struct, build = self.struct(annotation)
            return struct, None if build is _as_is else build  # a part with nothing to check costs no call
        raise UnsupportedError(f"no compiled form of {annotation!r}")

    def _scalar_union(self, members: list[Any], optional: bool) -> Any:
        kinds = []
        for member in members:
            member, extra = unwrap(member)
            if any(not isinstance(m, Strict) for m in extra):
                raise UnsupportedError(f"union member {member!r}")
            if member not in (int, float, str, bool):
                raise UnsupportedError(f"union member {member!r}")
            kinds.append(_INT if member is int else _FINITE if member is float and self.python else member)
        union: Any = kinds[0]
        for kind in kinds[1:]:
            union = union | kind
        return union | None if optional else union

    def fields(
        self, model: type[BaseModel]
    ) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Callable[[Any], Any]]]]:
        """A model's struct fields (name, type, default), and the conversion of each field that has one."""
        fields: list[tuple[str, Any, Any]] = []
        converted: list[tuple[str, Callable[[Any], Any]]] = []
        for name, info in model.model_fields.items():
            kind, convert = self.field_type(info.annotation, list(info.metadata))
            fields.append((name, kind, _default(info, convert)))
            if convert is not None:
                converted.append((name, convert))
        return fields, converted

    def struct(self, model: type[BaseModel]) -> tuple[type[msgspec.Struct], Callable[[Any], Any]]:
        """The struct of a model (made once) and the function building the model from a decoded struct.

        With :attr:`check`, the function checks the struct and gives it back instead.
        """
        if model in self.structs:
            return self.structs[model]
        after = _after_validators(model)
        fields, converted = self.fields(model)
        if self.check:
            if after:
                raise UnsupportedError(f"{model.__name__} has an after validator: checking it needs the model")
            # Never in a reference cycle (decoded JSON, thrown away once checked): the collector need not track it.
            struct = msgspec.defstruct(
                f"{model.__name__}Checked", fields, kw_only=True, forbid_unknown_fields=True, frozen=True, gc=False
            )
            build = _checker(converted)
        else:
            struct = msgspec.defstruct(
                f"{model.__name__}Struct", fields, kw_only=True, forbid_unknown_fields=True, frozen=True
            )
            build = _builder(model, converted, after)
        self.structs[model] = (struct, build)
        self.conversions[model] = converted
        return struct, build


def _after_validators(model: type[BaseModel]) -> list[Callable[[Any], Any]]:
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        raise UnsupportedError(f"{model.__name__} has field validators")
    after = []
    for decorator in decorators.model_validators.values():
        if decorator.info.mode != "after":
            raise UnsupportedError(f"{model.__name__} has a {decorator.info.mode} model validator")
        after.append(decorator.func)
    return after


def _default(info: FieldInfo, convert: Callable[[Any], Any] | None) -> Any:
    if info.default_factory is not None:
        return msgspec.field(default_factory=info.default_factory)  # type: ignore[arg-type]
    if info.default is PydanticUndefined:
        return msgspec.NODEFAULT
    if info.default is not None and convert is not None:
        raise UnsupportedError(f"default {info.default!r} of a converted field")
    return info.default


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    optional = lambda value: None if value is None else convert(value)  # noqa: E731
    optional._wraps = ("optional", convert)  # type: ignore[attr-defined]  # for _checker
    return optional


def _each(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    each = lambda values: [convert(v) for v in values] if values else []  # noqa: E731
    each._wraps = ("each", convert)  # type: ignore[attr-defined]  # for _checker
    return each


def _builder(
    model: type[BaseModel], converted: list[tuple[str, Callable[[Any], Any]]], after: list[Callable[[Any], Any]]
) -> Callable[[Any], BaseModel]:
    """A function building the model from its struct, written out for the model's fields.

    One dict display of the struct's attributes, each converted in place, instead of
    ``asdict`` and a loop over the conversions (~0.8 µs a request less on the worker's
    hot path). Fields keep the struct's order, which is the model's (its serializer
    writes ``__dict__``'s order).
    """
    conversions = dict(converted)
    namespace: dict[str, Any] = {
        "new": model.__new__,
        "model": model,
        "set_attribute": object.__setattr__,
        "names": frozenset(model.model_fields),
        **{f"convert_{name}": convert for name, convert in conversions.items()},
        **{f"after_{n}": check for n, check in enumerate(after)},
    }
    values = ", ".join(
        f"{name!r}: convert_{name}(struct.{name})" if name in conversions else f"{name!r}: struct.{name}"
        for name in model.model_fields
    )
    checks = "".join(f"    after_{n}(record)\n" for n in range(len(after)))
    source = (
        "def build(struct):\n"
        "    record = new(model)\n"
        f"    set_attribute(record, '__dict__', {{{values}}})\n"
        "    set_attribute(record, '__pydantic_fields_set__', names)\n"
        "    set_attribute(record, '__pydantic_extra__', None)\n"
        "    set_attribute(record, '__pydantic_private__', None)\n"
        f"{checks}"
        "    return record\n"
    )
    exec(compile(source, f"<build {model.__name__}>", "exec"), namespace)
    build: Callable[[Any], BaseModel] = namespace["build"]
    return build


def _as_is(struct: Any) -> Any:
    return struct


def _statements(converted: list[tuple[str, Callable[[Any], Any]]], *, assign: bool) -> tuple[str, dict[str, Any]]:
    """Straight-line code running each conversion on its field of ``struct`` (``assign``: its result kept in place).

    One statement a field: a loop over (getter, conversion) pairs costs as much again as the
    checks themselves. An optional part or a list of parts is converted in place (no call
    for None or an empty list). The names are the model's field names (identifiers); the
    conversions come in the namespace returned with the code, nothing else.
    """
    namespace: dict[str, Any] = {}
    body = ""
    for at, (name, convert) in enumerate(converted):
        kind, inner = getattr(convert, "_wraps", ("one", convert))
        namespace[f"_c{at}"] = inner
        keep = f"struct.{name} = " if assign else ""
        if kind == "optional":
            body += f"    if struct.{name} is not None:\n        {keep}_c{at}(struct.{name})\n"
        elif kind == "each" and assign:
            body += f"    if struct.{name}:\n        struct.{name} = [_c{at}(v) for v in struct.{name}]\n"
        elif kind == "each":
            body += f"    for value in struct.{name}:\n        _c{at}(value)\n"
        else:
            body += f"    {keep}_c{at}(struct.{name})\n"
    return body, namespace


def _checker(converted: list[tuple[str, Callable[[Any], Any]]]) -> Callable[[Any], Any]:
    """A function running each conversion on its field of a struct (raising for a value the model refuses)."""
    if not converted:
        return _as_is
    body, namespace = _statements(converted, assign=False)
    exec(f"def check(struct):\n{body}    return struct\n", namespace)
    check: Callable[[Any], Any] = namespace["check"]
    return check


class FastDecoder:
    """Decodes one contract's JSON bytes in compiled code; None where the model must decide."""

    def __init__(self, model: type[BaseModel]) -> None:
        struct, self._build = _Mapper().struct(model)
        self._decode = msgspec.json.Decoder(struct).decode

    def decode(self, data: bytes) -> Any:
        """The record, or None: not taken here (the model decodes it, or says what is wrong)."""
        try:
            return self._build(self._decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            return None


class FastChecker:
    """Checks one contract's JSON bytes as :class:`FastDecoder` does, without building the record.

    It takes exactly the bytes the decoder takes (the same struct and conversions); what
    it gives back is the decoded struct, whose fields of JSON's own types (strings,
    numbers, booleans) hold the values the record would. For readers that pass the
    bytes on as they are and look at a few fields (the gateway's streams): about half
    the cost of decoding.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        struct, self._check = _Mapper(check=True).struct(model)
        self._decode = msgspec.json.Decoder(struct).decode

    def check(self, data: bytes) -> Any:
        """The checked struct, or None: not taken here (the model decodes it, or says what is wrong)."""
        try:
            return self._check(self._decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            return None


def fast_checker(model: type[BaseModel]) -> FastChecker | None:
    """The compiled checker of a model, or None where the model must check every record itself."""
    try:
        return FastChecker(model)
    except UnsupportedError:
        return None


class FastFields:
    """Decodes one contract's JSON bytes in compiled code into its struct, building no record.

    For batch readers that gather fields into columns (the index sink). The struct holds
    each field as decoded (a timestamp as its RFC 3339 text, a vector as its bytes, a
    nested part as a struct); what the record would hold is the model's conversion of
    it (:attr:`conversions`, for the fields that have one). Every field is checked as
    :class:`FastDecoder` checks it, except those named in ``raw``: converting them (which
    raises for a value the model refuses) is the caller's. ``decode`` returns None where
    the model must decide, as :meth:`FastDecoder.decode` does.
    """

    def __init__(self, model: type[BaseModel], *, raw: frozenset[str] = frozenset()) -> None:
        if _after_validators(model):
            raise UnsupportedError(f"{model.__name__} has validators that need the record")
        mapper = _Mapper()
        struct, _ = mapper.struct(model)
        self._decode = msgspec.json.Decoder(struct).decode
        converted = mapper.conversions[model]
        #: The model's conversion of each field that has one (raw ones included), by name.
        self.conversions: dict[str, Callable[[Any], Any]] = dict(converted)
        # The checker's straight-line code (as FastChecker's), over the fields not left to the caller.
        self._check = _checker([(name, convert) for name, convert in converted if name not in raw])

    def decode(self, data: bytes) -> Any:
        """The decoded struct (fields as attributes), or None: not taken here (the model decides)."""
        try:
            return self._check(self._decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            return None


def fast_decoder(model: type[BaseModel]) -> FastDecoder | None:
    """The compiled decoder of a model, or None when one of its fields has no exact compiled form."""
    try:
        return FastDecoder(model)
    except UnsupportedError:
        return None


__all__ = ["FastChecker", "FastDecoder", "FastFields", "UnsupportedError", "fast_checker", "fast_decoder"]
