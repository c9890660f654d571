"""Golden contract records and hypothesis mutations of them, for the tests of the compiled paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from inferstream.schemas import Contract

GOLDEN = Path(__file__).parent / "contracts"

#: Timestamp text and names the compiled paths must take or leave exactly as the models do.
ODD_TEXT = [
    "2026-01-02T03:04:05Z",
    "2026-01-02T03:04:05.5Z",
    "2026-01-02T03:04:05.1234567Z",
    "2026-01-02T03:04:05+00:00",
    "2026-01-02T03:04:05+0000",
    "2026-01-02T03:04:05+02:00",
    "2026-01-02T03:04:05",
    "2026-01-02 03:04:05Z",
    "2026-02-30T03:04:05Z",
    "2026-01-02",
    "iris",
    "iris\n",
    "a b",
    "",
]


def golden(contract: type[Contract]) -> list[dict[str, Any]]:
    """The contract's golden records (tests/unit/contracts/<name>.v<version>.jsonl)."""
    path = GOLDEN / f"{contract.schema_name}.v{contract.schema_version}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Scalars, and lists and objects of them nested a few levels."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
        max_leaves=8,
    )


def json_values() -> st.SearchStrategy[Any]:
    """What JSON text can hold in place of a field: scalars (odd text, integers past 64 bits), lists and objects."""
    return values(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
            st.sampled_from(ODD_TEXT),
        )
    )


def mutated(contract: type[Contract], data: st.DataObject, replacements: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A golden record with up to three fields replaced, dropped, or changed inside."""
    record = dict(data.draw(st.sampled_from(golden(contract))))
    for name in data.draw(st.lists(st.sampled_from(sorted(contract.model_fields)), max_size=3, unique=True)):
        action = data.draw(st.sampled_from(["replace", "drop", "nest"]))
        if action == "drop":
            record.pop(name, None)
        elif action == "nest" and isinstance(record.get(name), dict) and record[name]:
            key = data.draw(st.sampled_from(sorted(record[name])))
            record[name] = {**record[name], key: data.draw(replacements)}
        else:
            record[name] = data.draw(replacements)
    return record
