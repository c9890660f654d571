"""The JSON policy over a batch of validated records, looking only where a bad value can be.

:func:`~inferstream.schemas.jsonpolicy.problem_in_fields` walks every field of every
record. Once the model has validated a record, most fields cannot break the policy:
a datetime, a bool, a float (the models refuse NaN and ±Infinity), a string held to
an ASCII pattern (names). What is left are free strings (a lone surrogate), integers
(beyond 64 bits) and free-form values. :class:`PolicyPlan` works out which fields
those are once per contract, and checks a batch's free strings together in one or two
C calls (``isascii``, then a UTF-8 encoding, of their concatenation): a batch costs a
few list appends a record. The records it cannot clear this way are returned for the full
walk, which says what is wrong and where.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from inferstream.schemas._annotations import is_union, members, unwrap
from inferstream.schemas.jsonpolicy import INT_MAX, INT_MIN

#: Patterns whose every match is ASCII (a name: the pieces of topic names).
_ASCII_PATTERNS = frozenset({r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"})


def _kind(annotation: Any, metadata: list[Any]) -> str:
    """``skip``, ``str``, ``str_map``, ``int`` or ``walk`` (anything else: the full check)."""
    annotation, more = unwrap(annotation)
    metadata = metadata + more
    if is_union(annotation):
        kept, _ = members(annotation)
        return _kind(kept[0], metadata) if len(kept) == 1 else "walk"
    origin = get_origin(annotation)
    if annotation in (bool, float, datetime) or origin is Literal:
        return "skip"
    if annotation is int:
        return "int"
    if annotation is str:
        patterns = {getattr(m, "pattern", None) for m in metadata} - {None}
        return "skip" if patterns and patterns <= _ASCII_PATTERNS else "str"
    if origin is dict and all(unwrap(a)[0] is str for a in get_args(annotation)):
        return "str_map"
    return "walk"


def _worth_a_walk(value: Any) -> bool:
    # None and empty containers hold nothing; anything else (a vector, a part) is walked.
    if value is None:
        return False
    kind = type(value)
    return bool(value) if kind is dict or kind is list else True


class PolicyPlan:
    """Which fields of a contract's validated records the JSON policy must look at."""

    def __init__(self, model: type[BaseModel]) -> None:
        kinds = {name: _kind(info.annotation, list(info.metadata)) for name, info in model.model_fields.items()}
        self.strings = tuple(n for n, k in kinds.items() if k == "str")
        self.string_maps = tuple(n for n, k in kinds.items() if k == "str_map")
        self.ints = tuple(n for n, k in kinds.items() if k == "int")
        self.walked = tuple(n for n, k in kinds.items() if k == "walk")

    def suspects(self, records: Sequence[BaseModel]) -> list[int]:
        """Positions of the records the full walk must check (the others keep the policy)."""
        # Field by field over the batch (map and itemgetter loop in C), not record by record.
        values = [record.__dict__ for record in records]
        suspect: set[int] = set()
        for name in self.walked:
            suspect.update(i for i, value in enumerate(map(itemgetter(name), values)) if _worth_a_walk(value))
        for name in self.ints:
            suspect.update(
                i
                for i, value in enumerate(map(itemgetter(name), values))
                if value is not None and not INT_MIN <= value <= INT_MAX
            )
        strings: list[str] = []
        for name in self.strings:
            strings.extend(filter(None, map(itemgetter(name), values)))
        for name in self.string_maps:
            for mapping in filter(None, map(itemgetter(name), values)):
                strings.extend(mapping)
                strings.extend(mapping.values())
        if strings:
            joined = "".join(strings)
            if not joined.isascii():
                try:
                    joined.encode("utf-8")  # refuses any surrogate code point, paired or not
                except UnicodeEncodeError:
                    return list(range(len(records)))  # a lone surrogate somewhere: the walk finds where
        return sorted(suspect)


__all__ = ["PolicyPlan"]
