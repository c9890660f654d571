"""The one JSON policy of the platform: what every entry point and every stage accepts.

Records are RFC 8259 JSON in UTF-8, and only that. The same rules hold for the CLI,
the SDK, the gateway and every stage that reads a topic, so a record one of them
accepts is never refused (or crashed on) by the next:

- ``NaN``, ``Infinity`` and numbers beyond the float64 range are invalid: RFC 8259 has
  no such numbers (a contract that wants "no value" says ``null``).
- Integers must fit in 64 bits (``-2**63`` … ``2**64 - 1``): other languages' readers
  (and this platform's encoders) cannot carry larger ones.
- Text must be valid Unicode: invalid UTF-8, a byte order mark, UTF-16/32, and lone
  surrogates (``"\\ud800"``, or in a Python string) are rejected with their position.
- Objects and arrays nest at most :data:`MAX_DEPTH` levels, counted from the record.
- A key given twice keeps its last value (what every JSON reader here does).

:func:`loads` parses bytes under this policy (entry points: CLI lines, HTTP bodies);
:func:`problem_in` checks a decoded or user-built value (the codec runs it on every
record it validates or decodes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from inferstream.errors import ContractError, FieldProblem

#: The deepest nesting of objects and arrays a record may have (the record itself is level 1).
MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
#: What is said of a NaN or an infinity (after its value).
NON_FINITE = "is not a JSON number (NaN and Infinity are invalid; use null for no value)"

_isfinite = math.isfinite


class JsonPolicyError(ContractError):
    """Bytes or a value that break the JSON policy; ``problem`` says where and why."""

    def __init__(self, problem: FieldProblem, *, value: Any = None) -> None:
        self.problem = problem
        #: The parsed document, when it parsed and a value in it broke the policy (None otherwise).
        self.value = value
        super().__init__(str(problem))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON under the policy; raises :class:`JsonPolicyError` with the position or field.

    Python's own parser reads the text (it keeps integers exact, where a faster parser
    rounds big ones to floats and the check below could not see them); the check then
    names the field of a NaN, an out-of-range integer or a lone surrogate.
    """
    text = data if isinstance(data, str) else _utf8(bytes(data))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise JsonPolicyError(FieldProblem("", reason)) from None
    except RecursionError:
        raise JsonPolicyError(FieldProblem("", f"nested deeper than {MAX_DEPTH} levels")) from None
    except ValueError as exc:  # an integer of thousands of digits (Python's conversion limit)
        raise JsonPolicyError(FieldProblem("", f"a number out of range: {exc}")) from None
    problem = problem_in(value)
    if problem is not None:
        raise JsonPolicyError(problem, value=value)
    return value


def _utf8(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raise JsonPolicyError(FieldProblem("", "starts with a byte order mark (BOM): records are UTF-8 without one"))
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(raw) > 1 and (raw[0] == 0 or raw[1] == 0)):
        raise JsonPolicyError(FieldProblem("", "the text is UTF-16 or UTF-32: records are UTF-8"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonPolicyError(
            FieldProblem("", f"invalid UTF-8 at byte {exc.start + 1} (0x{raw[exc.start]:02x})")
        ) from None


def _surrogate_at(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def problem_in(value: Any, path: str = "", depth: int = 1, *, strings: bool = True) -> FieldProblem | None:
    """The first thing in ``value`` the policy refuses (with its dotted path), or None.

    ``depth`` is the nesting level of ``value`` itself; ``strings=False`` skips the
    Unicode checks (for values a strict JSON parser produced: they cannot hold
    surrogates). Values of other types (datetimes, arrays, models) are not looked into.
    """
    kind = type(value)
    if kind is float:
        return None if _isfinite(value) else FieldProblem(path, _non_finite(value))
    if kind is int:
        return None if INT_MIN <= value <= INT_MAX else FieldProblem(path, _too_big(value))
    if kind is str:
        return _string_problem(value, path) if strings else None
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            parts = path.split(".")
            where = ".".join(parts[:3]) + (".…" if len(parts) > 3 else "")
            return FieldProblem(where, f"nested deeper than {MAX_DEPTH} levels")
        items: Iterable[tuple[Any, Any]] = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if strings and kind is dict and type(key) is str and not key.isascii():
                problem = _string_problem(key, path)
                if problem is not None:
                    return FieldProblem(problem.field, f"key {problem.reason}")
            item_kind = type(item)
            if item_kind is float:  # the common case inline: a flat object of numbers
                if not _isfinite(item):
                    return FieldProblem(_join(path, key), _non_finite(item))
            elif item_kind is bool or item is None or (item_kind is str and not strings):
                continue
            else:
                problem = problem_in(item, _join(path, key), depth + 1, strings=strings)
                if problem is not None:
                    return problem
    return None


def problem_in_fields(fields: Mapping[str, Any], *, strings: bool = True) -> FieldProblem | None:
    """:func:`problem_in` over the fields of a record (each field at level 2)."""
    # On every decoded record (the serving hot path): only what can hold a bad value is looked
    # into, and a flat object of plain values (a request's features) in one quick pass.
    for name, value in fields.items():
        kind = type(value)
        if kind is dict:
            if not value or (not strings and _plain(value.values())):
                continue
        elif kind is list:
            if not value:
                continue
        elif not (kind is float or kind is int or (strings and kind is str)):
            continue
        problem = problem_in(value, name, 2, strings=strings)
        if problem is not None:
            return problem
    return None


def _plain(values: Iterable[Any]) -> bool:
    """True when every value is a finite float, a 64-bit int, a string, a bool or None."""
    for item in values:
        kind = type(item)
        if kind is float:
            if not _isfinite(item):
                return False
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return False
        elif not (kind is str or kind is bool or item is None):
            return False  # a container (or a lone surrogate check is wanted): the careful walk
    return True


def _string_problem(text: str, path: str) -> FieldProblem | None:
    bad = _surrogate_at(text)
    if bad is None:
        return None
    return FieldProblem(path, f"invalid Unicode: lone surrogate U+{ord(text[bad]):04X} at character {bad + 1}")


def _non_finite(value: float) -> str:
    return f"{value} {NON_FINITE}"


def _too_big(value: int) -> str:
    # str() of an integer of thousands of digits raises: describe those by their size
    shown = str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    return f"{shown} is out of the 64-bit integer range"


__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "NON_FINITE",
    "JsonPolicyError",
    "loads",
    "problem_in",
    "problem_in_fields",
]
