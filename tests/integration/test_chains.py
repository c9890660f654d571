"""A model chain (minilm → text-topic) served over the real broker: one prediction per request, or a dead letter."""

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ingest import ingest_process  # the ingest processor as `inferstream stream ingest`

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer
from inferstream.schemas import Prediction
from inferstream.serving.chain import ChainRunner
from inferstream.serving.chain_link import step_topic
from inferstream.serving.demo_models import (
    CHAIN_NAME,
    EMBEDDER_NAME,
    TOPIC_NAME,
    topic_sentences,
)
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import set_route
from inferstream.stack.testing import cli_env, running_in_thread

STEPS = [(EMBEDDER_NAME, "1"), (TOPIC_NAME, "1")]


@pytest.fixture
def chain(settings: Settings, models_dir: Path) -> Iterator[tuple[Settings, ChainRunner]]:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    runner = ChainRunner(settings, ModelRepository(models_dir).get_chain(CHAIN_NAME, "1"))
    with running_in_thread(runner, timeout=120):
        yield settings, runner


def _request(request_id: str, inputs: dict[str, object], **extra: object) -> dict[str, object]:
    return {"request_id": request_id, "model": CHAIN_NAME, "version": "1", "inputs": inputs, **extra}


def test_every_chain_request_gets_one_prediction_listing_both_steps(chain: tuple[Settings, ChainRunner]) -> None:
    settings, runner = chain
    sentences = topic_sentences(60, seed=7)  # 240 texts the classifier was not trained on
    n = len(sentences)
    requests = [
        _request(f"r{i}", {"text": text}, attributes={"n": str(i)}, source_event_id=f"e{i}")
        for i, (text, _) in enumerate(sentences)
    ]
    bad = [
        _request("too-long", {"text": "word " * 400}),  # over minilm's 256 tokens
        _request("no-text", {"title": "a text under the wrong field"}),
        _request("empty", {"text": "   "}),
    ]
    topic = settings.topics.request_topic(CHAIN_NAME, "1")
    step2 = step_topic(settings, CHAIN_NAME, "1", 2)
    with Client(settings) as client:
        assert client.produce(topic, requests[:100] + bad + requests[100:]).produced == n + len(bad)
        # A bad request at the second step: a vector of the wrong width.
        wrong = _request(
            "narrow",
            {"text": "x", "embedding": [0.5] * 10},
            chain=[{"model": EMBEDDER_NAME, "version": "1", "latency_ms": 1}],
        )
        assert client.produce(step2, [wrong]).produced == 1
    with Producer(settings) as producer:
        producer.produce(topic, b'{"request_id": "broken"', key=b"broken")
    with Client(settings) as client:
        predictions = [
            m.record
            for m in client.subscribe("predictions", from_beginning=True, max_records=n, idle_timeout=120)
            if isinstance(m.record, Prediction)
        ]
        letters = {letter.original_key: letter for letter in client.dead_letters()}
        embeddings = client.topics.describe(settings.topics.platform_topics()["embeddings"]).messages
    counts = Counter(p.request_id for p in predictions)
    assert set(counts) == {f"r{i}" for i in range(n)}
    assert max(counts.values()) == 1
    for prediction in predictions:
        assert (prediction.model, prediction.version) == (CHAIN_NAME, "1")
        assert [(s.model, s.version) for s in prediction.chain] == STEPS
        index = int(prediction.request_id[1:])
        # The request's inputs, attributes and source event are carried through both steps.
        assert prediction.inputs == {"text": sentences[index][0]}
        assert prediction.attributes == {"n": str(index)}
        assert prediction.source_event_id == f"e{index}"
        assert prediction.latency.total_ms >= sum(s.latency_ms for s in prediction.chain) - 1
    correct = sum(p.outputs["label"] == sentences[int(p.request_id[1:])][1] for p in predictions)
    assert correct / n > 0.9
    # Bad input at either step: dead-lettered with its bytes and the reason; the rest flowed.
    assert set(letters) == {b"too-long", b"no-text", b"empty", b"broken", b"narrow"}
    assert "over max_length 256 of minilm:1" in letters[b"too-long"].error_message
    assert "input 'text' is missing" in letters[b"no-text"].error_message
    assert "text is empty" in letters[b"empty"].error_message
    assert "malformed JSON" in letters[b"broken"].error_message
    assert "has 10 values, not 384" in letters[b"narrow"].error_message
    assert letters[b"narrow"].source_topic == step2
    assert all(letters[key].source_topic == topic for key in (b"too-long", b"no-text", b"empty", b"broken"))
    assert letters[b"too-long"].payload.startswith(b'{"request_id":"too-long"')
    # The embedder inside the chain wrote nothing to embeddings (the index would take request texts).
    assert embeddings == 0
    # Counts reconcile at every step: requests = outputs + dead letters.
    runner.stop()
    first, second = (worker.stats for worker in runner.workers)
    assert first.requests == n + 4
    assert (first.predictions, first.dead_letters) == (n, 4)
    assert (second.requests, second.predictions, second.dead_letters) == (n + 1, n, 1)


def test_predict_round_trip_through_a_chain_pinned_and_routed(chain: tuple[Settings, ChainRunner]) -> None:
    settings, _runner = chain
    with Client(settings) as client:
        answer = client.predict(
            f"{CHAIN_NAME}:1", {"text": "Heavy snow and strong winds are expected tonight."}, timeout=60
        )
        assert answer.outputs["label"] == "weather"
        assert [(s.model, s.version) for s in answer.chain] == STEPS
        assert set(answer.outputs["probabilities"]) == {"sports", "cooking", "weather", "computing"}
        # A chain is routed like a model: its alias resolves to a version by request id.
        set_route(settings, CHAIN_NAME, {"1": 100.0})
        routed = client.predict(CHAIN_NAME, {"text": "The striker scored in the last minute of the final."}, timeout=60)
        assert (routed.model, routed.version, routed.outputs["label"]) == (CHAIN_NAME, "1", "sports")


def test_serve_cli_runs_every_step_of_a_chain(settings: Settings, models_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "serve", "--model", CHAIN_NAME],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(settings, models_dir),
    )
    try:
        assert process.stderr is not None
        started = [process.stderr.readline().decode() for _ in range(2)]
        assert f"step {EMBEDDER_NAME}:1" in started[0]
        assert f"step {TOPIC_NAME}:1" in started[1]
        with Client(settings) as client:
            while not client.topics.exists(step_topic(settings, CHAIN_NAME, "1", 2)):
                assert process.poll() is None, process.communicate()[1].decode()
                time.sleep(0.2)
            answer = client.predict(f"{CHAIN_NAME}:1", {"text": "Stir the garlic into the tomato sauce."}, timeout=90)
        assert answer.outputs["label"] == "cooking"
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert "served 1 requests: 1 predictions, 0 dead letters" in err.decode()


def test_events_reach_a_chain_through_an_ingest_rule(chain: tuple[Settings, ChainRunner], tmp_path: Path) -> None:
    settings, _runner = chain
    rules = [{"type": "note", "model": CHAIN_NAME, "version": "1", "input": "inputs"}]
    sentences = topic_sentences(5, seed=11)
    events = [{"id": f"note-{i}", "type": "note", "text": text} for i, (text, _) in enumerate(sentences)]
    log = tmp_path / "ingest.log"
    with ingest_process(settings, log, group="ingest-chain", rules=rules), Client(settings) as client:
        stream = client.subscribe("predictions", max_records=len(events), idle_timeout=120)
        client.produce("events", events)
        predictions = [m.record for m in stream if isinstance(m.record, Prediction)]
    by_event = Counter(p.source_event_id for p in predictions)
    assert by_event == Counter(e["id"] for e in events)  # every event, once
    for prediction in predictions:
        assert (prediction.model, prediction.version) == (CHAIN_NAME, "1")
        assert [(s.model, s.version) for s in prediction.chain] == STEPS
    topics = dict(sentences)
    right = sum(p.outputs["label"] == topics[str(p.inputs["text"])] for p in predictions)
    assert right >= len(events) - 2  # the topic classifier on texts it was not trained on


def _serve_chain(settings: Settings, models_dir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "serve", "--model", CHAIN_NAME],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(settings, models_dir),
    )
    assert process.stderr is not None
    for _ in STEPS:  # one line a step once it serves
        assert "step" in process.stderr.readline().decode()
    return process


def test_kill_9_of_a_chain_mid_stream_then_restart_answers_every_request(settings: Settings, models_dir: Path) -> None:
    sentences = topic_sentences(150, seed=13)
    n = len(sentences)
    topic = settings.topics.request_topic(CHAIN_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(CHAIN_NAME, "1")
        requests = [_request(f"k{i}", {"text": text}) for i, (text, _) in enumerate(sentences)]
        assert client.produce(topic, requests).produced == n
    served = _serve_chain(settings, models_dir)
    seen = 0
    with Client(settings) as client:
        for _ in client.subscribe("predictions", from_beginning=True, idle_timeout=90):
            seen += 1
            if seen >= n // 4:
                break
    served.send_signal(signal.SIGKILL)  # both steps mid-stream: nothing committed or flushed on the way out
    served.wait(30)
    assert 0 < seen < n, "the chain should have been killed mid-stream"
    restarted = _serve_chain(settings, models_dir)
    try:
        predictions: list[Prediction] = []
        deadline = time.monotonic() + 180  # the dead copy's session (10 s) ends before its partitions move
        while len({p.request_id for p in predictions}) < n and time.monotonic() < deadline:
            with Client(settings) as client:
                predictions = [
                    m.record
                    for m in client.subscribe("predictions", from_beginning=True, idle_timeout=5)
                    if isinstance(m.record, Prediction)
                ]
    finally:
        restarted.send_signal(signal.SIGINT)
        _out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err.decode()[-2000:]
    counts = Counter(p.request_id for p in predictions)
    assert set(counts) == {f"k{i}" for i in range(n)}  # at-least-once: every request answered
    assert all([(s.model, s.version) for s in p.chain] == STEPS for p in predictions)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"chain killed after {seen} predictions: {duplicates} duplicates out of {n}", file=sys.stderr)
