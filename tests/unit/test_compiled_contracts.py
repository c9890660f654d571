"""The compiled decoders (schemas/compiled.py) agree with the pydantic models they are derived from.

Whatever the compiled path accepts, the model accepts with the same record (same
values, same bytes when encoded again); whatever the model refuses, the compiled path
leaves to it (returns None), so errors keep the model's wording.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from contract_mutations import golden, json_values, mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstream.errors import ContractError
from inferstream.schemas import CONTRACTS, Contract, codec_for
from inferstream.schemas._types import new_id, utcnow
from inferstream.schemas.compiled import FastDecoder, FastFields, UnsupportedError, fast_checker, fast_decoder

FAST = sorted((c for c in CONTRACTS.values() if fast_decoder(c) is not None), key=lambda c: c.schema_name)


def _model(contract: type[Contract], data: bytes) -> Contract | None:
    try:
        return contract.model_validate_json(data) if _policy_ok(contract, data) else None
    except ValueError:
        return None


def _policy_ok(contract: type[Contract], data: bytes) -> bool:
    # The codec's own pydantic path: the model, then the JSON policy.
    codec = codec_for(contract)
    fast, codec._fast = codec._fast, None
    try:
        codec.decode(data)
        return True
    except ContractError:
        return False
    finally:
        codec._fast = fast


def _plain(value: Any) -> Any:
    """A dump with vectors as lists (arrays do not compare with ``==``)."""
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _agree(contract: type[Contract], data: bytes) -> None:
    decoder = fast_decoder(contract)
    assert decoder is not None
    fast = decoder.decode(data)
    slow = _model(contract, data)
    if fast is None:
        return  # left to the model: nothing to compare (the model accepts or refuses it alone)
    assert slow is not None, f"compiled path took what the model refuses: {data!r}"
    # Fields left out get their defaults; a fresh id or the current time differs between two decodes.
    given = json.loads(data)
    fresh = {n for n, f in contract.model_fields.items() if n not in given and f.default_factory in (new_id, utcnow)}
    slow = slow.model_copy(update={name: getattr(fast, name) for name in fresh})
    assert _plain(fast.model_dump()) == _plain(slow.model_dump())
    codec = codec_for(contract)
    assert codec.encode(fast) == codec.encode(slow)
    for name in contract.model_fields:
        assert type(getattr(fast, name)) is type(getattr(slow, name)), name


def test_the_hot_path_contracts_have_a_compiled_decoder() -> None:
    names = {c.schema_name for c in FAST}
    assert {"event", "inference-request", "embedding-request", "prediction", "embedding"} <= names


@pytest.mark.parametrize("contract", FAST, ids=lambda c: c.schema_name)
def test_golden_records_decode_the_same_both_ways(contract: type[Contract]) -> None:
    decoder = fast_decoder(contract)
    assert isinstance(decoder, FastDecoder)
    taken = 0
    for record in golden(contract):
        data = json.dumps(record).encode()
        _agree(contract, data)
        taken += decoder.decode(data) is not None
    assert taken >= 1  # the compiled path is the common path, not a formality


@pytest.mark.parametrize("contract", FAST, ids=lambda c: c.schema_name)
def test_fields_decode_to_what_the_record_holds_through_the_models_conversions(contract: type[Contract]) -> None:
    decoder = fast_decoder(contract)
    assert decoder is not None
    try:
        fields = FastFields(contract, raw=frozenset(contract.model_fields) & {"vector", "event_time"})
    except UnsupportedError:
        return  # a model validator needs the record: FastDecoder only
    for record in golden(contract):
        data = json.dumps(record).encode()
        built, struct = decoder.decode(data), fields.decode(data)
        assert (built is None) == (struct is None)
        if built is None:
            continue
        for name in contract.model_fields:
            if name not in record and contract.model_fields[name].default_factory in (new_id, utcnow):
                continue  # a fresh id or the current time each decode
            value = getattr(struct, name)
            if name in fields.conversions:
                value = fields.conversions[name](value)
            assert _plain(value) == _plain(getattr(built, name)), name


def test_the_codec_takes_the_compiled_path_for_plain_records() -> None:
    from inferstream.schemas.records import Prediction

    codec = codec_for(Prediction)
    data = json.dumps(golden(Prediction)[1]).encode()
    assert codec._fast is not None
    assert codec._fast.decode(data) is not None
    assert codec.decode(data) == Prediction.model_validate_json(data)


_VALUES = json_values()


@pytest.mark.parametrize("contract", FAST, ids=lambda c: c.schema_name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_records_decode_the_same_or_go_to_the_model(contract: type[Contract], data: st.DataObject) -> None:
    record = mutated(contract, data, _VALUES)
    _agree(contract, json.dumps(record).encode())


CHECKED = [c for c in FAST if fast_checker(c) is not None]


def _scalar_fields(contract: type[Contract], data: bytes | None = None) -> list[str]:
    """Fields of JSON scalar types; with ``data``, less those a decode makes afresh (a new id)."""
    given = json.loads(data) if data is not None else {}
    return [
        name
        for name, field in contract.model_fields.items()
        if field.annotation in (str, int, float, bool)
        and (data is None or name in given or field.default_factory not in (new_id, utcnow))
    ]


def _checks_alike(contract: type[Contract], data: bytes) -> None:
    """The checker takes exactly what the decoder takes, and its scalar fields hold the record's values."""
    checker, decoder = fast_checker(contract), fast_decoder(contract)
    assert checker is not None
    assert decoder is not None
    checked, decoded = checker.check(data), decoder.decode(data)
    assert (checked is None) == (decoded is None), data
    if decoded is not None:
        for name in _scalar_fields(contract, data):
            assert getattr(checked, name) == getattr(decoded, name), name


def test_the_checker_covers_the_streamed_contracts() -> None:
    assert {"prediction", "drift-alert"} <= {c.schema_name for c in CHECKED}


@pytest.mark.parametrize("contract", CHECKED, ids=lambda c: c.schema_name)
def test_golden_records_check_as_they_decode(contract: type[Contract]) -> None:
    for record in golden(contract):
        _checks_alike(contract, json.dumps(record).encode())


@pytest.mark.parametrize("contract", CHECKED, ids=lambda c: c.schema_name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_records_check_as_they_decode(contract: type[Contract], data: st.DataObject) -> None:
    _checks_alike(contract, json.dumps(mutated(contract, data, _VALUES)).encode())


@pytest.mark.parametrize("contract", CHECKED, ids=lambda c: c.schema_name)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fields_of_refuses_exactly_what_decode_refuses(contract: type[Contract], data: st.DataObject) -> None:
    codec = codec_for(contract)
    raw = json.dumps(mutated(contract, data, _VALUES)).encode()
    names = _scalar_fields(contract, raw)
    fields_of = codec.fields_of(names)
    try:
        record = codec.decode(raw, headers=[codec.header])
    except ContractError:
        with pytest.raises(ContractError):
            fields_of(raw, [codec.header])
        return
    assert fields_of(raw, [codec.header]) == tuple(getattr(record, name) for name in names)


def test_fields_of_checks_the_header_and_takes_scalar_fields_only() -> None:
    from inferstream.schemas.records import Prediction

    codec = codec_for(Prediction)
    fields_of = codec.fields_of(["request_id", "model", "version"])
    raw = json.dumps(golden(Prediction)[1]).encode()
    record = codec.decode(raw)
    assert fields_of(raw, None) == (record.request_id, record.model, record.version)
    assert fields_of(raw, [codec.header]) == fields_of(raw, None)
    with pytest.raises(ContractError, match="expected 'prediction'"):
        fields_of(raw, [("inferstream-schema", b"event/1")])
    with pytest.raises(ContractError):
        fields_of(raw.replace(b'"model"', b'"modle"'), None)
    for not_scalar in ("event_time", "latency", "nope"):
        with pytest.raises(ValueError, match=not_scalar):
            codec.fields_of([not_scalar])


def test_the_checker_looks_inside_lists_and_optional_parts() -> None:
    from inferstream.schemas.records import Prediction

    record = next(r for r in golden(Prediction) if r.get("chain") and r["chain"][0].get("lineage"))
    step = record["chain"][0]
    variants = {
        "as it is": record,
        "a step's model name": {**record, "chain": [{**step, "model": "-bad"}]},
        "a step's lineage": {**record, "chain": [{**step, "lineage": {**step["lineage"], "sha256": 1}}]},
        "a negative step latency": {**record, "chain": [step, {**step, "latency_ms": -1.0}]},
        "a timestamp": {**record, "predicted_at": "2026-02-30T00:00:00Z"},
    }
    for what, variant in variants.items():
        data = json.dumps(variant).encode()
        _checks_alike(Prediction, data)
        assert (fast_checker(Prediction).check(data) is None) == (what != "as it is"), what  # type: ignore[union-attr]
