"""The JSON policy over validated batches looks only where a bad value can be, and still finds every one."""

from __future__ import annotations

import pytest

from inferstream.schemas import Embedding, Event, codec_for
from inferstream.schemas.policy_plan import PolicyPlan


def test_the_plan_skips_what_the_model_already_holds_to_the_policy() -> None:
    plan = PolicyPlan(Event)
    assert plan.strings == ("id", "source", "text")  # type is a name: ASCII by its pattern
    assert plan.string_maps == ("attributes",)
    assert plan.walked == ("features",)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"text": "fine \ud800 then"}, "text", "lone surrogate U+D800"),
        ({"attributes": {"k": "\udfff"}}, "attributes.k", "lone surrogate"),
        ({"attributes": {"\ud800": "v"}}, "attributes", "key invalid Unicode"),
        ({"features": {"x": 2**70}}, "features.x", "64-bit"),
    ],
)
def test_a_bad_record_among_good_ones_is_found_with_its_field(bad: dict, field: str, reason: str) -> None:
    codec = codec_for(Event)
    good = [{"id": f"e{i}", "type": "t", "text": "héllo wörld ✓"} for i in range(50)]
    result = codec.validate_batch([*good[:20], {"id": "bad", "type": "t", "text": "x", **bad}, *good[20:]])
    assert list(result.errors) == [20]
    (problem,) = result.errors[20].problems
    assert problem.field == field
    assert reason in problem.reason
    assert len(result.records) == 50


def test_non_ascii_text_without_surrogates_passes_and_vectors_are_looked_at() -> None:
    assert (
        PolicyPlan(Event).suspects(codec_for(Event).validate_batch([{"id": "e", "type": "t", "text": "日本"}]).records)
        == []
    )
    embedding = codec_for(Embedding).validate(
        {"id": "d", "event_time": 0, "model": "m", "version": "1", "vector": [1.0]}
    )
    assert PolicyPlan(Embedding).suspects([embedding]) == [0]  # the walk passes vectors over quickly
