"""Numerical columns read as one block agree with the same columns read one by one."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inferstream.monitoring.extract import Extractor
from inferstream.monitoring.spec import ColumnSpec

COLUMNS = [
    ColumnSpec(name="a"),
    ColumnSpec(name="b"),
    ColumnSpec(name="c"),
    ColumnSpec(name="label", kind="prediction"),
]
KINDS = {"a": "numerical", "b": "numerical", "c": "numerical", "label": "categorical"}
_ABSENT = object()

_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=False),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.just(10**400),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.just(_ABSENT),
)


def _record(values: dict[str, Any]) -> bytes:
    inputs = {name: value for name, value in values.items() if value is not _ABSENT}
    text = json.dumps({"model": "m", "event_time": 1, "inputs": inputs, "outputs": {"label": "x"}})
    return text.encode()


def _columns(extractor: Extractor, values: list[bytes]) -> dict[str, tuple[list[Any], ...]]:
    batch = extractor.decode([(v, ("p", 0), i) for i, v in enumerate(values)])
    return {
        name: tuple(
            np.asarray(getattr(column, part)).tolist() for part in ("rows", "values", "missing", "invalid", "nan")
        )
        for name, column in batch.columns.items()
    }


def _both(values: list[bytes]) -> tuple[Any, Any]:
    block = Extractor(COLUMNS, KINDS, model="m", version=None)
    assert len(block._blocks) == 1
    alone = Extractor(COLUMNS, KINDS, model="m", version=None)
    alone._blocks = []
    return _columns(block, values), _columns(alone, values)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"a": _VALUE, "b": _VALUE, "c": _VALUE})
        | st.fixed_dictionaries({"a": st.floats(-1e6, 1e6), "b": st.floats(-1e6, 1e6), "c": st.integers(-100, 100)}),
        max_size=12,
    )
)
def test_a_block_reads_what_the_columns_read_alone(rows: list[dict[str, Any]]) -> None:
    together, alone = _both([_record(row) for row in rows])
    assert together == alone


def test_the_common_case_takes_the_block_and_nan_is_counted() -> None:
    values = [_record({"a": 1.5, "b": 2, "c": -0.25})] * 3
    values.append(b'{"model":"m","event_time":1,"inputs":{"a":NaN,"b":1.0,"c":2.0},"outputs":{"label":"x"}}')
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    block = extractor._blocks[0]
    records = [json.loads(v) for v in values]
    columns = block.read(records)
    assert columns is not None
    assert columns["a"].values.tolist() == [1.5, 1.5, 1.5]
    assert columns["a"].nan.tolist() == [3]
    assert columns["b"].values.tolist() == [2.0, 2.0, 2.0, 1.0]
    assert all(math.isfinite(v) for v in columns["c"].values)
    # Anything else and the block leaves its columns to be read one by one.
    assert block.read([*records, {"inputs": {"a": 1.0, "b": "2", "c": 3.0}}]) is None
    assert block.read([*records, {"inputs": {"a": 1.0, "c": 3.0}}]) is None
    assert block.read([*records, {"inputs": [1.0, 2.0, 3.0]}]) is None
    assert block.read([*records, {"inputs": {"a": 10**400, "b": 1.0, "c": 3.0}}]) is None
    assert block.read([*records, {"inputs": {"a": True, "b": 1.0, "c": 3.0}}]) is None
