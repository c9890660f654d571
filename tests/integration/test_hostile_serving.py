"""Hostile requests sent raw to the inference worker: each one is dead-lettered or served, never a crash.

Regressions of the hardening issue: an integer beyond 64 bits crashed the worker when it
encoded the prediction (a crash loop on restart); a schema header that is not UTF-8 did
the same when decoded; a refused request made its caller wait for the whole timeout.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hostile import Case, assert_metrics_reconcile, generated_cases, produce_raw, tagged_cases
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from inferstream import Client, Settings
from inferstream.errors import RecordValidationError, RequestRejectedError
from inferstream.gateway import BackgroundGateway
from inferstream.schemas import Prediction
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker, WorkerOptions
from inferstream.stack.testing import Broker, running_in_thread

SCHEMA = b"inference-request/1"
# Hostile cases that carry a valid request under a header the worker may follow: served.
SERVED = {"tiny-number", "header-without-value", "binary-unknown-header", "schema-header-twice"}


def _valid(request_id: str) -> dict[str, object]:
    rows, _ = tabular_rows()
    return {"request_id": request_id, "model": TABULAR_NAME, "version": "1", "inputs": rows[0]}


def _field() -> str:
    rows, _ = tabular_rows()
    return f"inputs.{next(iter(rows[0]))}"


def _worker(
    kafka: Broker, tmp_path_factory: pytest.TempPathFactory, models_dir: Path, options: WorkerOptions
) -> Iterator[tuple[Settings, InferenceWorker]]:
    settings = Settings.load(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},
        topics={"prefix": f"h{uuid.uuid4().hex[:10]}."},
        state_dir=tmp_path_factory.mktemp("hostile-serving"),
        models_dir=models_dir,
    )
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(TABULAR_NAME), options=options)
    with running_in_thread(worker):
        yield settings, worker


_KINDS = {
    "plain": WorkerOptions(),
    "exactly-once": WorkerOptions(exactly_once=True),
    "shadow": WorkerOptions(shadow_of=("1",)),  # reads version 1's requests in a group of its own
}


@pytest.fixture(scope="module", params=sorted(_KINDS))
def serving(
    request: pytest.FixtureRequest, kafka: Broker, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[Settings, InferenceWorker]]:
    yield from _worker(kafka, tmp_path_factory, models_dir, _KINDS[request.param])


@pytest.fixture(scope="module")
def plain(
    kafka: Broker, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[Settings, InferenceWorker]]:
    yield from _worker(kafka, tmp_path_factory, models_dir, WorkerOptions())


def _settle(worker: InferenceWorker, requests: int, timeout: float = 120) -> None:
    """Wait until the worker has served or dead-lettered ``requests`` requests in all."""
    deadline = time.monotonic() + timeout
    while worker.stats.requests < requests:
        assert worker.failure is None, f"the worker stopped: {worker.failure!r}"
        assert time.monotonic() < deadline, f"{worker.stats.requests} of {requests} requests handled"
        time.sleep(0.05)


def _outcomes(
    settings: Settings, names: set[str], worker: InferenceWorker
) -> tuple[dict[str, int], dict[bytes, object]]:
    with Client(settings) as client:
        predicted: dict[str, int] = {}
        for message in client.subscribe(worker.output_topic, from_beginning=True, idle_timeout=5):
            if isinstance(message.record, Prediction) and message.record.request_id in names:
                predicted[message.record.request_id] = predicted.get(message.record.request_id, 0) + 1
        letters = {letter.original_key or b"": letter for letter in client.dead_letters()}
    return predicted, letters


def test_hand_picked_hostile_requests_are_dead_lettered_and_the_next_one_is_served(
    serving: tuple[Settings, InferenceWorker],
) -> None:
    settings, worker = serving
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    tag = uuid.uuid4().hex[:6]
    hostile = tagged_cases(_valid("REQ"), _field(), SCHEMA, tag)
    after = Case(f"{tag}-after", json.dumps(_valid(f"{tag}-after")).encode(), [("inferstream-schema", SCHEMA)])
    before = worker.stats.requests
    assert produce_raw(settings, topic, [*hostile, after]) == len(hostile) + 1
    _settle(worker, before + len(hostile) + 1)

    names = {case.name for case in hostile} | {after.name}
    predicted, letters = _outcomes(settings, names, worker)
    assert predicted.get(after.name) == 1, "the valid request after the hostile ones was not served"
    for case in hostile:
        letter = letters.get(case.key)
        served = predicted.get(case.name, 0)
        assert (letter is None) != (served == 0), f"{case.name}: served {served} times, dead letter {letter}"
        expected_served = case.name.removeprefix(f"{tag}-") in SERVED
        assert (served == 1) == expected_served, f"{case.name}: {letter}"
        if letter is not None:
            assert letter.stage == "serve"
            assert letter.error_message, case.name
            assert letter.payload == (case.value or b""), f"{case.name}: the original bytes are not kept"
            assert letter.original_headers == case.headers, f"{case.name}: the original headers are not kept"
    stats = worker.stats
    assert stats.requests == stats.predictions + stats.dead_letters
    assert_metrics_reconcile(worker.metrics.registry, "serve")
    reasons = {
        case.name.removeprefix(f"{tag}-"): letters[case.key].error_message for case in hostile if case.key in letters
    }
    assert "64-bit" in reasons["int-beyond-64-bits"]
    assert "not UTF-8" in reasons["schema-header-not-utf8"]
    assert "not a JSON number" in reasons["nan"]
    assert "nested deeper" in reasons["deep-nesting"]
    assert "surrogate" in reasons["lone-surrogate"]
    assert "version 99" in reasons["schema-header-newer"]


@hypothesis_settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=generated_cases(_valid("GEN"), _field(), SCHEMA))
def test_generated_hostile_requests_never_stop_the_worker(
    serving: tuple[Settings, InferenceWorker], batch: list[Case]
) -> None:
    settings, worker = serving
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    tag = uuid.uuid4().hex[:8]
    after = Case(f"{tag}-after", json.dumps(_valid(f"{tag}-after")).encode(), [("inferstream-schema", SCHEMA)])
    before = (worker.stats.requests, worker.stats.dead_letters)
    produce_raw(settings, topic, [*(Case(f"{tag}-{c.name}", c.value, c.headers) for c in batch), after])
    _settle(worker, before[0] + len(batch) + 1)
    predicted, _letters = _outcomes(settings, {after.name}, worker)
    assert predicted == {after.name: 1}
    stats = worker.stats
    assert stats.requests == stats.predictions + stats.dead_letters
    assert stats.dead_letters - before[1] <= len(batch)


def test_a_refused_request_fails_the_caller_at_once_with_the_reason(plain: tuple[Settings, InferenceWorker]) -> None:
    settings, _worker = plain
    row = dict(tabular_rows()[0][0])
    first = next(iter(row))
    with Client(settings) as client:
        # Inputs the contract accepts and the model cannot take: the worker refuses, the reply says why.
        with pytest.raises(RequestRejectedError, match="not numbers") as refused:
            client.predict(f"{TABULAR_NAME}:1", {**row, first: "big"}, timeout=120)
        assert refused.value.error_class
        with pytest.raises(RequestRejectedError, match="missing feature"):
            client.predict(f"{TABULAR_NAME}:1", {first: 1.0}, timeout=120)
        # What the JSON policy refuses never leaves the client.
        with pytest.raises(RecordValidationError, match=f"inputs.{first}"):
            client.predict(f"{TABULAR_NAME}:1", {**row, first: 2**70}, timeout=120)
        with pytest.raises(RecordValidationError, match="not a JSON number"):
            client.predict(f"{TABULAR_NAME}:1", {**row, first: float("nan")}, timeout=120)
        assert client.predict(f"{TABULAR_NAME}:1", row, timeout=60).outputs["label"]


def test_the_gateway_answers_bad_inputs_with_422_and_the_reason(plain: tuple[Settings, InferenceWorker]) -> None:
    settings, _worker = plain
    row = dict(tabular_rows()[0][0])
    first = next(iter(row))
    url = f"/v1/models/{TABULAR_NAME}:1/predict"
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as http:
        refused = http.post(url, json={"inputs": {**row, first: "big"}, "timeout": 100})
        assert refused.status_code == 422, refused.text
        assert "not numbers" in refused.json()["detail"]
        body = json.dumps({"inputs": row}).replace(str(row[first]), "NaN", 1)
        nan = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert nan.status_code == 422, nan.text
        assert nan.json()["field"] == f"inputs.{first}"
        surrogate = json.dumps({"inputs": {**row, "note": "\ud800"}})
        lone = http.post(url, content=surrogate, headers={"Content-Type": "application/json"})
        assert lone.status_code == 422, lone.text
        assert "surrogate" in lone.json()["detail"]
        deep = '{"inputs": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
        nested = http.post(url, content=deep, headers={"Content-Type": "application/json"})
        assert nested.status_code == 422, nested.text
        big = json.dumps({"inputs": row}).replace(str(row[first]), str(2**70), 1)
        huge = http.post(url, content=big, headers={"Content-Type": "application/json"})
        assert huge.status_code == 422, huge.text
        assert "64-bit" in huge.json()["detail"]
        served = http.post(url, json={"inputs": row})
        assert served.status_code == 200, served.text


def test_hostile_requests_to_a_chain_are_dead_lettered_at_its_first_step(settings: Settings, models_dir: Path) -> None:
    from inferstream.serving.chain import ChainRunner
    from inferstream.serving.demo_models import CHAIN_NAME

    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    tag = uuid.uuid4().hex[:6]
    valid = {"request_id": "REQ", "model": CHAIN_NAME, "version": "1", "inputs": {"text": "rain again tomorrow"}}
    hostile = tagged_cases(valid, "inputs.text", SCHEMA, tag)
    after = Case(f"{tag}-after", json.dumps({**valid, "request_id": f"{tag}-after"}).encode())
    runner = ChainRunner(settings, ModelRepository(models_dir).get_chain(CHAIN_NAME, "1"))
    with running_in_thread(runner, timeout=120):
        produce_raw(settings, settings.topics.request_topic(CHAIN_NAME, "1"), [*hostile, after])
        first = runner.workers[0]
        _settle(first, len(hostile) + 1)
        predicted: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while after.name not in predicted:  # through both steps
            assert time.monotonic() < deadline
            predicted, letters = _outcomes(settings, {c.name for c in hostile} | {after.name}, runner.workers[-1])
    for worker in runner.workers:
        assert worker.stats.requests == worker.stats.predictions + worker.stats.dead_letters
    for case in hostile:
        assert (case.name in predicted) != (case.key in letters), case.name
