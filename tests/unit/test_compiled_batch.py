"""The compiled produce path (schemas/compiled_batch.py) agrees with the models' path.

For a batch of mappings it either leaves the batch to the model (None), or writes for
every record the bytes and key that validating with the model and encoding would
give; it never takes a batch the model (or the JSON policy) refuses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from contract_mutations import ODD_TEXT, golden, mutated, values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstream.schemas import CONTRACTS, Contract, Event, codec_for
from inferstream.schemas._types import new_id, utcnow

BATCHED = sorted((c for c in CONTRACTS.values() if codec_for(c)._batch is not None), key=lambda c: c.schema_name)


def _fresh(contract: type[Contract], values: list[dict[str, Any]]) -> set[str]:
    """Fields some value leaves to a default factory that differs call by call (an id, the time)."""
    fresh = {n for n, f in contract.model_fields.items() if f.default_factory in (new_id, utcnow)}
    return {n for n in fresh if any(n not in v for v in values)}


def _agree(contract: type[Contract], values: list[dict[str, Any]]) -> bool:
    """Checks both paths agree; whether the compiled path took the batch."""
    codec = codec_for(contract)
    fast = codec.encode_batch(values)
    slow = codec.validate_batch(values)
    if fast is None:
        return False
    payloads, keys = list(fast.payloads()), fast.keys
    if len(payloads) < len(values):  # a string orjson cannot write: the rest is the model's
        assert slow.errors or codec.validate_batch(values[len(payloads) :]).errors
        values, keys = values[: len(payloads)], keys[: len(payloads)]
        slow = codec.validate_batch(values)
    fresh = _fresh(contract, values)
    assert not slow.errors, f"compiled path took what the model refuses: {values!r} ({slow.errors})"
    expected = codec.encode_many(slow.records)
    assert len(payloads) == len(expected) == len(values)
    for got, want in zip(payloads, expected, strict=True):
        if fresh:
            got_fields, want_fields = json.loads(got), json.loads(want)
            for name in fresh:
                got_fields.pop(name), want_fields.pop(name)
            assert got_fields == want_fields
            assert list(json.loads(got)) == list(json.loads(want))  # same fields, same order
        else:
            assert got == want
    assert [k.encode() if isinstance(k, str) else k for k in keys] == [r.key() for r in slow.records]
    return True


def test_the_producible_contracts_have_a_compiled_path() -> None:
    assert {"event", "label"} <= {c.schema_name for c in BATCHED}


@pytest.mark.parametrize("contract", BATCHED, ids=lambda c: c.schema_name)
def test_golden_records_take_the_compiled_path(contract: type[Contract]) -> None:
    taken = sum(_agree(contract, [record]) for record in golden(contract))
    assert taken >= 1  # the common path, not a formality


def test_a_batch_of_events_is_written_as_the_model_writes_it() -> None:
    events = [
        {"id": f"e{i}", "type": "review", "event_time": "2026-01-02T03:04:05.000123Z", "text": "fine", "source": "s"}
        for i in range(50)
    ]
    events.append({"id": "f", "type": "clinical", "features": {"a": 1.5, "b": 2, "c": "x", "d": True, "e": None}})
    events.append({"id": "g", "type": "t", "text": "x", "event_time": datetime(2026, 1, 2, tzinfo=UTC)})
    assert _agree(Event, events)


@pytest.mark.parametrize(
    "odd",
    [
        {"event_time": "2026-01-02T03:04:05.1234567Z"},  # msgspec would round, the model truncates
        {"event_time": "2026-01-02T03:04:05+02:00"},  # converted to UTC by the model
        {"event_time": "2026-01-02T03:04:05"},  # naive: UTC by the model
        {"event_time": datetime(2026, 1, 2)},
        {"event_time": datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=2)))},
        {"features": {"x": float("nan")}},
        {"features": {"x": float("inf")}},
        {"features": {"x": 2**64}},
        {"id": " "},
        {"type": "bad type"},
        {"text": None},  # no payload left: the model's validator refuses it
        {"unknown": 1},
    ],
    ids=repr,
)
def test_what_the_compiled_path_leaves_to_the_model(odd: dict[str, Any]) -> None:
    good = {"id": "e1", "type": "review", "text": "fine"}
    codec = codec_for(Event)
    assert codec.encode_batch([good]) is not None
    assert codec.encode_batch([good, {**good, **odd}]) is None


def test_a_lone_surrogate_ends_the_compiled_path_at_its_record() -> None:
    good = {"id": "e1", "type": "review", "text": "fine"}
    codec = codec_for(Event)
    encoded = codec.encode_batch([good, good, {**good, "text": "lone \ud800"}, good])
    assert encoded is not None
    assert len(list(encoded.payloads())) == encoded.written == 2
    assert codec.validate_batch([{**good, "text": "lone \ud800"}, good]).errors.keys() == {0}


def test_records_and_other_mappings_go_to_the_model() -> None:
    from collections import OrderedDict

    good = {"id": "e1", "type": "review", "text": "fine"}
    codec = codec_for(Event)
    assert codec.encode_batch([Event.model_validate(good)]) is None
    assert codec.encode_batch([OrderedDict(good, event_time="2026-01-02T03:04:05.1234567Z")]) is None


_VALUES = values(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),  # NaN and infinities too: Python values can hold them
        st.text(max_size=8),
        st.sampled_from([*ODD_TEXT, "\ud800", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2026, 1, 2)]),
    )
)


@pytest.mark.parametrize("contract", BATCHED, ids=lambda c: c.schema_name)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_batches_agree_or_go_to_the_model(contract: type[Contract], data: st.DataObject) -> None:
    batch = [mutated(contract, data, _VALUES) for _ in range(data.draw(st.integers(min_value=1, max_value=3)))]
    _agree(contract, batch)
