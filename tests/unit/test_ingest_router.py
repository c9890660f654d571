"""The ingest processor's routing, without a broker: rules, request ids, and what is refused."""

import json

import pytest

from inferstream.config import Settings
from inferstream.errors import RecordValidationError, RoutingError
from inferstream.schemas import EmbeddingRequest, Event, InferenceRequest, codec_for
from inferstream.streams.ingest import IngestRouter, request_id_for

RULES = [
    {"type": "review", "model": "minilm", "version": "1", "input": "text"},
    {"type": "review", "model": "sentiment", "version": "2", "input": "features"},
    {"type": "transaction", "model": "scorer", "version": "1", "input": "features"},
]


@pytest.fixture
def router() -> IngestRouter:
    return IngestRouter(Settings.load(ingest={"rules": RULES}, topics={"prefix": "p."}))


def _event(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_an_event_goes_to_every_rule_whose_input_it_has(router: IngestRouter) -> None:
    outputs = router.route(_event(id="e1", type="review", text="great", features={"stars": 5}))
    assert [o.topic for o in outputs] == ["p.requests.minilm.1", "p.requests.sentiment.2"]
    embedding = codec_for(EmbeddingRequest).decode(outputs[0].value, headers=outputs[0].headers)
    inference = codec_for(InferenceRequest).decode(outputs[1].value, headers=outputs[1].headers)
    assert (embedding.document_id, embedding.text, embedding.source_event_id) == ("e1", "great", "e1")
    assert inference.inputs == {"stars": 5}
    assert outputs[0].key == embedding.request_id.encode()
    # Only the text: only the embedder's rule applies.
    assert [o.topic for o in router.route(_event(id="e2", type="review", text="ok"))] == ["p.requests.minilm.1"]


def test_request_ids_are_the_same_on_every_replay_and_differ_per_target(router: IngestRouter) -> None:
    event = _event(id="e1", type="review", text="great", features={"stars": 5})
    first, again = router.route(event), router.route(event)
    assert [o.key for o in first] == [o.key for o in again]
    assert first[0].key != first[1].key
    assert first[0].key == request_id_for("e1", "minilm", "1").encode()


def test_what_cannot_be_routed_says_why(router: IngestRouter) -> None:
    with pytest.raises(RoutingError, match="no ingest rule for event type 'click'"):
        router.route(_event(id="c1", type="click", text="x"))
    with pytest.raises(RoutingError, match="has no features"):
        router.route(_event(id="t1", type="transaction", text="x"))
    with pytest.raises(RecordValidationError, match="type: required field is missing"):
        router.route(_event(id="n1", text="x"))
    with pytest.raises(RecordValidationError, match="malformed JSON"):
        router.route(b"\x00not json")
    with pytest.raises(RecordValidationError, match="an event needs `text` or `features`"):
        router.route(_event(id="x1", type="review"))


def test_a_rule_without_a_version_follows_the_models_route() -> None:
    from inferstream.schemas import Route
    from inferstream.schemas.records import RouteVersion
    from inferstream.serving.routes import RouteTable

    settings = Settings.load(
        ingest={"rules": [{"type": "transaction", "model": "scorer", "input": "features"}]}, topics={"prefix": "p."}
    )
    routes = RouteTable(settings)  # not started: the route is given here instead of read from Kafka
    routes.put(
        Route(model="scorer", versions=[RouteVersion(version="1", weight=1), RouteVersion(version="2", weight=1)])
    )
    router = IngestRouter(settings, routes)
    topics = [router.route(_event(id=f"e{i}", type="transaction", features={"a": 1}))[0].topic for i in range(200)]
    assert set(topics) == {"p.requests.scorer.1", "p.requests.scorer.2"}
    again = [router.route(_event(id=f"e{i}", type="transaction", features={"a": 1}))[0].topic for i in range(200)]
    assert again == topics  # a replay lands each event on the same version
    assert router.topics() == ["p.requests.scorer.1", "p.requests.scorer.2"]
    with pytest.raises(RoutingError, match="no route"):
        IngestRouter(settings, RouteTable(settings)).route(_event(id="x", type="transaction", features={"a": 1}))


def test_an_inputs_rule_sends_the_text_and_features_as_one_inference_request() -> None:
    rules = [{"type": "note", "model": "topic-of-text", "version": "1", "input": "inputs"}]
    router = IngestRouter(Settings.load(ingest={"rules": rules}, topics={"prefix": "p."}))
    (output,) = router.route(_event(id="e1", type="note", text="Simmer the onions.", features={"lang": "en"}))
    request = codec_for(InferenceRequest).decode(output.value, headers=output.headers)
    assert output.topic == "p.requests.topic-of-text.1"
    assert request.inputs == {"lang": "en", "text": "Simmer the onions."}
    assert request.source_event_id == "e1"
    (text_only,) = router.route(_event(id="e2", type="note", text="Rain tomorrow."))
    assert codec_for(InferenceRequest).decode(text_only.value, headers=text_only.headers).inputs == {
        "text": "Rain tomorrow."
    }


def test_an_events_traceparent_goes_on_with_its_requests_and_a_malformed_one_is_dropped(router: IngestRouter) -> None:
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = _event(id="e1", type="review", text="great", features={"stars": 5})
    schema = codec_for(Event).header
    outputs = router.route(event, [schema, ("traceparent", traceparent)])
    assert [dict(o.headers)["traceparent"] for o in outputs] == [traceparent, traceparent]
    for hostile in (b"\xff" * 55, traceparent.upper(), b"00-" + b"0" * 52):
        outputs = router.route(event, [schema, ("traceparent", hostile)])
        assert all("traceparent" not in dict(o.headers) for o in outputs)


def test_with_tracing_on_an_events_requests_name_its_span_as_their_parent(router: IngestRouter) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from inferstream import tracing
    from inferstream.config import TracingSettings
    from inferstream.tracing import TraceParent, parse

    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = _event(id="e1", type="review", text="great", features={"stars": 5})
    schema = codec_for(Event).header
    tracing.install(TracerProvider())
    try:
        spans = tracing.spans_for(TracingSettings(enabled=True), "test")
        assert spans is not None
        traced = spans.record("ingest p.events", traceparent, 0.0, {})
        untraced = spans.record("ingest p.events", None, 0.0, {})
        continued = router.route(event, [schema, ("traceparent", traceparent)], traced)
        started = router.route(event, [schema], untraced)
    finally:
        tracing.install(None)
    span = traced.span.get_span_context()
    expected = TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", f"{span.span_id:016x}", 1)
    assert [parse(dict(o.headers)["traceparent"]) for o in continued] == [expected, expected]
    # An event without a traceparent: its trace starts at its ingest span.
    own = untraced.span.get_span_context()
    assert {parse(dict(o.headers)["traceparent"]).trace_id for o in started} == {f"{own.trace_id:032x}"}
