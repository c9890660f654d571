"""Views (schemas/compiled_view.py) read as the records the codec decodes, and echo their inputs' text.

Whatever bytes the compiled decoder takes, the view takes with the same value in every
attribute (same type too), and the echoed field's text holds the record's values; what
the decoder leaves to the model, the view leaves too. Through ``Codec.viewer``, a
record is refused exactly when ``Codec.decode`` refuses it, with the same error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from contract_mutations import golden, json_values, mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstream.errors import ContractError
from inferstream.schemas import codec_for
from inferstream.schemas._types import new_id, utcnow
from inferstream.schemas.compiled import fast_decoder
from inferstream.schemas.compiled_view import FastView, fast_view
from inferstream.schemas.records import Event, InferenceRequest, Prediction

_VALUES = json_values()


def _same_as_decoded(data: bytes) -> None:
    decoder, view = fast_decoder(InferenceRequest), fast_view(InferenceRequest, "inputs")
    assert decoder is not None
    assert view is not None
    record, viewed = decoder.decode(data), view.decode(data)
    assert (record is None) == (viewed is None), data
    if record is None or viewed is None:
        return
    struct, text = viewed
    assert isinstance(struct, view.type)
    given_fields = json.loads(data)
    for name, field in InferenceRequest.model_fields.items():
        if name not in given_fields and field.default_factory in (new_id, utcnow):
            continue  # a fresh id or the current time each decode
        assert getattr(struct, name) == getattr(record, name), name
        assert type(getattr(struct, name)) is type(getattr(record, name)), name
    assert type(text) is bytes
    assert orjson.loads(text) == record.inputs


def test_golden_requests_view_as_they_decode() -> None:
    taken = 0
    for record in golden(InferenceRequest):
        data = json.dumps(record).encode()
        _same_as_decoded(data)
        taken += fast_view(InferenceRequest, "inputs").decode(data) is not None  # type: ignore[union-attr]
    assert taken >= 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_view_as_they_decode(data: st.DataObject) -> None:
    _same_as_decoded(json.dumps(mutated(InferenceRequest, data, _VALUES)).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_viewer_refuses_exactly_what_decode_refuses(data: st.DataObject) -> None:
    codec = codec_for(InferenceRequest)
    read = codec.viewer("inputs")
    raw = json.dumps(mutated(InferenceRequest, data, _VALUES)).encode()
    try:
        record = codec.decode(raw, headers=[codec.header])
    except ContractError as exc:
        reason = str(exc)
    else:
        reason = None
    if reason is not None:
        with pytest.raises(ContractError) as refused:
            read(raw, [codec.header])
        assert str(refused.value) == reason
        return
    viewed, text = read(raw, [codec.header])
    for name in ("request_id", "model", "version", "reply_to", "deadline", "attributes", "inputs"):
        assert getattr(viewed, name) == getattr(record, name), name
    if text is not None:
        assert orjson.loads(text) == record.inputs


def test_the_viewer_keeps_the_text_as_it_came_and_checks_the_header() -> None:
    codec = codec_for(InferenceRequest)
    read = codec.viewer("inputs")
    deadline = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    raw = (
        b'{"request_id":"r1","model":"m","version":"1","deadline":"' + deadline.encode() + b'",'
        b'"inputs": {"a": 1E2, "b" : -0.5,"c":"\\u00e9", "d": [1, 2]}}'
    )
    viewed, text = read(raw, [codec.header])
    assert text == b'{"a": 1E2, "b" : -0.5,"c":"\\u00e9", "d": [1, 2]}'
    assert viewed.inputs == {"a": 100.0, "b": -0.5, "c": "é", "d": [1, 2]}
    assert viewed.deadline == datetime.fromisoformat(deadline)
    assert viewed.event_time.tzinfo is not None
    # Another contract's header is refused as decode refuses it.
    with pytest.raises(ContractError, match="'prediction' record"):
        read(raw, [codec_for(Prediction).header])
    # What the compiled path leaves (an epoch event time, a deeper input) comes from decode, with no text.
    for odd in (
        b'{"request_id":"r1","model":"m","version":"1","event_time":1700000000,"inputs":{"a":1}}',
        b'{"request_id":"r1","model":"m","version":"1","inputs":{"a":{"b":{"c":1}}}}',
    ):
        record, text = read(odd, None)
        assert isinstance(record, InferenceRequest)
        assert text is None
    # The policy holds inside the echoed text: an integer beyond 64 bits, a lone surrogate.
    for hostile in (b'{"a": 18446744073709551616}', b'{"a": "\\ud800"}'):
        with pytest.raises(ContractError):
            read(b'{"request_id":"r1","model":"m","version":"1","inputs":' + hostile + b"}", None)


def test_a_prediction_echoing_the_text_reads_as_one_encoding_the_values() -> None:
    codec = codec_for(InferenceRequest)
    raw = json.dumps(golden(InferenceRequest)[0]).encode()
    viewed, text = codec.viewer("inputs")(raw, None)
    assert text is not None
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "request_id": viewed.request_id,
        "event_time": viewed.event_time,
        "model": viewed.model,
        "version": viewed.version,
        "outputs": {"label": "a"},
        "latency": {"queue_ms": 1.0, "compute_ms": 1.0, "total_ms": 2.0},
        "predicted_at": now,
    }
    predictions = codec_for(Prediction)
    echoed = predictions.encode_fields({**fields, "inputs": orjson.Fragment(text)})
    encoded = predictions.encode_fields({**fields, "inputs": viewed.inputs})
    assert predictions.decode(echoed) == predictions.decode(encoded)


def test_a_view_needs_a_required_field_taken_as_decoded() -> None:
    assert fast_view(InferenceRequest, "nothing") is None
    assert fast_view(InferenceRequest, "event_time") is None  # converted: not echoed
    assert fast_view(Event, "features") is None  # a model validator needs the record
    assert isinstance(fast_view(InferenceRequest, "inputs"), FastView)
