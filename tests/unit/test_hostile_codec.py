"""The codec and the JSON policy under generated hostile input: one policy, one kind of error."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferstream.errors import ContractError, RecordEncodingError, RecordValidationError
from inferstream.schemas import Event, InferenceRequest, Prediction, codec_for, jsonpolicy
from inferstream.schemas.codec import parse_schema_header
from inferstream.schemas.jsonpolicy import INT_MAX, INT_MIN, MAX_DEPTH, JsonPolicyError, problem_in

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**90), max_value=2**90),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
)


def _allowed(value: object, depth: int = 1) -> bool:
    """The policy, written the plain way, for comparison."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    if isinstance(value, str):
        return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_allowed(item, depth + 1) for item in value)
    assert isinstance(value, dict)
    return all(_allowed(k) and _allowed(v, depth + 1) for k, v in value.items())


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_decode_raises_only_contract_errors_whatever_the_bytes(data: bytes, header: bytes | None) -> None:
    for contract in (InferenceRequest, Event, Prediction):
        headers = [] if header is None else [("inferstream-schema", header)]
        with contextlib.suppress(ContractError):
            codec_for(contract).decode(data, headers=headers)


@given(values)
def test_every_entry_point_applies_the_same_policy(value: object) -> None:
    allowed = _allowed({"x": value}, 1)
    assert (problem_in({"x": value}) is None) == allowed
    text = json.dumps({"x": value}, allow_nan=True)
    try:
        jsonpolicy.loads(text.encode())
    except JsonPolicyError:
        loaded = False
    else:
        loaded = True
    # json.dumps writes lone surrogates as escapes; the parser reads them back the same way
    assert loaded == allowed
    request = {"request_id": "r", "model": "m", "version": "1", "inputs": {"x": value}}
    codec = codec_for(InferenceRequest)
    try:
        codec.decode(json.dumps(request, allow_nan=True).encode())
    except RecordValidationError:
        decoded = False
    else:
        decoded = True
    try:
        codec.validate(request)
    except RecordValidationError:
        validated = False
    else:
        validated = True
    assert decoded == validated == allowed


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": NaN}', "a: nan is not a JSON number"),
        (b'{"a": 1e400}', "a: inf is not a JSON number"),
        (b'{"a": 1180591620717411303424}', "a: 1180591620717411303424 is out of the 64-bit integer range"),
        (b'{"a": "\\ud800"}', "a: invalid Unicode: lone surrogate U+D800 at character 1"),
        (b'{"a": "\xff"}', "invalid UTF-8 at byte 8 (0xff)"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        ('{"a": 1}'.encode("utf-16"), "UTF-16 or UTF-32"),
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper than 64 levels"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 64 levels"),
        (b'{"a": ' + b"9" * 5000 + b"}", "out of range"),
        (b'{"a": 1', "malformed JSON"),
    ],
)
def test_the_policy_says_where_and_why(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonPolicyError) as refused:
        jsonpolicy.loads(raw)
    assert reason in str(refused.value)


def test_duplicate_keys_keep_the_last_value_everywhere() -> None:
    raw = b'{"request_id": "a", "request_id": "b", "model": "m", "version": "1", "inputs": {}}'
    assert jsonpolicy.loads(raw)["request_id"] == "b"
    assert codec_for(InferenceRequest).decode(raw).request_id == "b"


def test_schema_headers_that_are_not_text_are_contract_errors() -> None:
    assert parse_schema_header([("inferstream-schema", b"event/1")]) == ("event", 1)
    assert parse_schema_header([("other", b"\xff")]) is None
    for bad in (b"\xff\xfe", b"event", b"event/x", b"event/99999999999"):
        with pytest.raises(ContractError, match="inferstream-schema"):
            parse_schema_header([("inferstream-schema", bad)])


def test_encoding_a_value_json_cannot_carry_is_a_record_error() -> None:
    codec = codec_for(Prediction)
    fields = {"request_id": "r", "inputs": {"x": 2**70}}
    with pytest.raises(RecordEncodingError, match="64-bit"):
        codec.encode_fields(fields)
    request = InferenceRequest.model_construct(request_id="r", model="m", version="1", inputs={"x": "\ud800"})
    with pytest.raises(RecordEncodingError):
        codec_for(InferenceRequest).encode(request)
