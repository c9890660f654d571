"""Hostile records, sent raw (a plain confluent-kafka producer, bypassing the SDK) into a stage.

Each case is bytes and headers as any producer in any language could write them. Every
stage must dead-letter the ones it cannot handle (with the reason and the original bytes
and headers) and go on: the tests send a valid record after them and wait for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from hypothesis import strategies as st

from inferstream import Settings

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Case:
    """One raw record: its name (also its key, so its dead letter is findable), value and headers."""

    name: str
    value: bytes | None
    headers: Headers = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.name.encode()


def _patched(base: dict[str, Any], path: str, raw: str) -> bytes:
    """``base`` as JSON with the value at ``path`` (dotted) replaced by raw JSON text."""
    marker = "__HOSTILE__"
    copy = json.loads(json.dumps(base))
    target = copy
    *parents, leaf = path.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(leaf)] = marker
    else:
        target[leaf] = marker
    return json.dumps(copy).replace(f'"{marker}"', raw).encode()


def cases(valid: dict[str, Any], field_path: str, schema: bytes) -> list[Case]:
    """The hand-picked hostile records of one contract, built around a valid record.

    ``field_path`` names a numeric field to poison (``inputs.mean_radius``); ``schema`` is
    the contract's own header value (``inference-request/1``).
    """
    good = json.dumps(valid).encode()
    own = [("inferstream-schema", schema)]
    name, _, _ = schema.partition(b"/")
    deep = "[" * 300 + "]" * 300
    return [
        Case("malformed", b'{"request_id": "x", '),
        Case("truncated", good[: len(good) // 2]),
        Case("empty", b""),
        Case("tombstone", None),
        Case("not-an-object", b"[1, 2, 3]"),
        Case("json-null", b"null"),
        Case("wrong-type", _patched(valid, field_path, '"a string"')),
        Case("huge-number", _patched(valid, field_path, "1e400")),
        Case("tiny-number", _patched(valid, field_path, "1e-400")),
        Case("int-beyond-64-bits", _patched(valid, field_path, str(2**70))),
        Case("int-of-5000-digits", _patched(valid, field_path, "9" * 5000)),
        Case("nan", _patched(valid, field_path, "NaN")),
        Case("infinity", _patched(valid, field_path, "-Infinity")),
        Case("deep-nesting", _patched(valid, field_path, deep)),
        Case("lone-surrogate", _patched(valid, field_path, '"\\ud800"')),
        Case("invalid-utf8", good.replace(b'"', b'"\xff', 1)),
        Case("utf8-bom", b"\xef\xbb\xbf" + good),
        Case("utf16", json.dumps(valid).encode("utf-16")),
        Case("duplicate-keys", good[:-1] + b', "' + field_path.split(".")[0].encode() + b'": {}}'),
        Case("oversized-field", _patched(valid, field_path, json.dumps("x" * 200_000))),
        Case("schema-header-not-utf8", good, [("inferstream-schema", b"\xff\xfe\x00")]),
        Case("schema-header-garbage", good, [("inferstream-schema", b"no version here")]),
        Case("schema-header-newer", good, [("inferstream-schema", name + b"/99")]),
        Case("schema-header-other-contract", good, [("inferstream-schema", b"drift-alert/1")]),
        Case("schema-header-twice", good, [*own, ("inferstream-schema", b"\x80")]),
        Case("header-without-value", good, [*own, ("trace", None)]),
        Case("binary-unknown-header", good, [*own, ("x-binary", bytes(range(256)))]),
    ]


def tagged_cases(valid: dict[str, Any], field_path: str, schema: bytes, tag: str) -> list[Case]:
    """:func:`cases` named ``<tag>-<case>``, the id ``"REQ"`` in ``valid`` replaced by that name.

    A case that is served is then found by its id, and its dead letter by its key.
    """
    named = []
    for case in cases(valid, field_path, schema):
        name = f"{tag}-{case.name}"
        value = None if case.value is None else case.value.replace(b'"REQ"', json.dumps(name).encode())
        named.append(Case(name, value, case.headers))
    return named


def produce_raw(settings: Settings, topic: str, records: Iterable[Case]) -> int:
    """Send cases as they are; returns how many were acknowledged."""
    producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    acknowledged = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal acknowledged
        assert error is None, error
        acknowledged += 1

    for case in records:
        producer.produce(topic, case.value, case.key, headers=case.headers or None, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return acknowledged


# -- generated records ------------------------------------------------------------------------

_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _mutations(valid: dict[str, Any], field_path: str) -> st.SearchStrategy[bytes]:
    """Records near the valid one: a field set to any value, junk bytes, truncations."""

    def with_value(value: Any) -> bytes:
        return _patched(valid, field_path, json.dumps(value, allow_nan=True))

    good = json.dumps(valid).encode()
    return st.one_of(
        json_values.map(with_value),
        st.binary(max_size=64),
        st.integers(min_value=0, max_value=len(good)).map(lambda n: good[:n]),
        st.dictionaries(st.sampled_from(sorted(valid)), json_values, max_size=4).map(
            lambda patch: json.dumps({**valid, **patch}, allow_nan=True).encode()
        ),
    )


def generated_cases(valid: dict[str, Any], field_path: str, schema: bytes) -> st.SearchStrategy[list[Case]]:
    """Lists of generated hostile records (each with the contract's header, or a random one)."""
    header_values: st.SearchStrategy[Headers] = st.one_of(
        st.just([("inferstream-schema", schema)]),
        st.binary(max_size=12).map(lambda raw: [("inferstream-schema", raw)]),
        st.just([]),
    )
    one = st.tuples(_mutations(valid, field_path), header_values)
    named: Callable[[list[tuple[bytes, Headers]]], list[Case]] = lambda items: [  # noqa: E731
        Case(f"gen-{i}", value, headers) for i, (value, headers) in enumerate(items)
    ]
    return st.lists(one, min_size=1, max_size=15).map(named)


def assert_metrics_reconcile(registry: Any, stage: str) -> None:
    """The stage's records consumed equal the records it handled (out + dead letters + ...)."""
    consumed = handled = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.labels.get("stage") != stage or not sample.name.endswith("_total"):
                continue
            if sample.name == "inferstream_records_in_total":
                consumed += sample.value
            elif sample.name == "inferstream_records_handled_total":
                handled += sample.value
    assert consumed > 0
    assert consumed == handled, f"{stage}: {consumed} records in, {handled} handled"
