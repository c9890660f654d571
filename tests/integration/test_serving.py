"""The inference worker against the real broker: every request answered or dead-lettered."""

import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer
from inferstream.errors import ConfigError, ModelError, RequestTimeoutError
from inferstream.schemas import Prediction
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread


@pytest.fixture
def serving(settings: Settings, models_dir: Path) -> Iterator[tuple[Settings, InferenceWorker]]:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(TABULAR_NAME))
    with running_in_thread(worker):
        yield settings, worker


def _rows() -> tuple[list[dict[str, float]], list[int]]:
    return tabular_rows()


def test_every_request_gets_one_prediction_and_bad_ones_are_dead_lettered(
    serving: tuple[Settings, InferenceWorker],
) -> None:
    settings, worker = serving
    rows, target = _rows()
    n = 2000
    requests = [
        {"request_id": f"r{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]} for i in range(n)
    ]
    first = rows[0]
    name = next(iter(first))
    bad = [
        {"request_id": "missing", "model": TABULAR_NAME, "version": "1", "inputs": {name: 1.0}},
        {"request_id": "wrong-type", "model": TABULAR_NAME, "version": "1", "inputs": {**first, name: "big"}},
        {"request_id": "nan", "model": TABULAR_NAME, "version": "1", "inputs": {**first, name: None}},
        {"request_id": "other-version", "model": TABULAR_NAME, "version": "9", "inputs": first},
        {
            "request_id": "late",
            "model": TABULAR_NAME,
            "version": "1",
            "inputs": first,
            "deadline": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        },
    ]
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        assert client.produce(topic, requests[:1000] + bad + requests[1000:]).produced == n + len(bad)
    with Producer(settings) as producer:
        producer.produce(topic, b'{"request_id": "broken"', key=b"broken")
    with Client(settings) as client:
        predictions = [
            m.record
            for m in client.subscribe("predictions", from_beginning=True, max_records=n, idle_timeout=60)
            if isinstance(m.record, Prediction)
        ]
        letters = {letter.original_key: letter for letter in client.dead_letters()}
    counts = Counter(p.request_id for p in predictions)
    assert len(counts) == n
    assert max(counts.values()) == 1
    assert set(letters) == {b"missing", b"wrong-type", b"nan", b"other-version", b"late", b"broken"}
    assert "missing feature(s)" in letters[b"missing"].error_message
    assert "not numbers" in letters[b"wrong-type"].error_message
    assert "NaN" in letters[b"nan"].error_message
    assert "this topic serves breast-cancer:1" in letters[b"other-version"].error_message
    assert "deadline" in letters[b"late"].error_message
    assert "malformed JSON" in letters[b"broken"].error_message
    assert all(letter.stage == "serve" and letter.source_topic == topic for letter in letters.values())
    # Counts reconcile: requests = predictions + dead letters.
    assert worker.stats.requests >= n + 6
    assert worker.stats.predictions + worker.stats.dead_letters == worker.stats.requests
    # The predictions are the model's, with inputs, version and latency carried.
    labels = {0: "malignant", 1: "benign"}
    correct = sum(p.outputs["label"] == labels[int(target[int(p.request_id[1:]) % len(rows)])] for p in predictions)
    assert correct / n > 0.95
    sample = predictions[0]
    assert (sample.model, sample.version) == (TABULAR_NAME, "1")
    assert set(sample.outputs["probabilities"]) == {"malignant", "benign"}
    assert sample.inputs == rows[int(sample.request_id[1:]) % len(rows)]
    assert sample.latency.total_ms >= sample.latency.compute_ms
    assert worker.stats.mean_batch_size > 1  # requests queued, so batches formed


def test_reply_to_gets_the_prediction(serving: tuple[Settings, InferenceWorker]) -> None:
    settings, _worker = serving
    rows, _ = _rows()
    reply = settings.topics.reply_topic("c1")
    with Client(settings) as client:
        client.topics.ensure_reply_topic("c1")
        client.produce(
            settings.topics.request_topic(TABULAR_NAME, "1"),
            [{"request_id": "ask", "model": TABULAR_NAME, "version": "1", "inputs": rows[5], "reply_to": reply}],
        )
        (answer,) = list(client.subscribe(reply, from_beginning=True, max_records=1, idle_timeout=30))
    assert isinstance(answer.record, Prediction)
    assert answer.record.request_id == "ask"


def test_missing_model_file_refuses_to_start(settings: Settings, models_dir: Path, tmp_path: Path) -> None:
    version = ModelRepository(models_dir).resolve(TABULAR_NAME)
    copy = tmp_path / TABULAR_NAME / "1"
    copy.mkdir(parents=True)
    (copy / "model.toml").write_text((version.directory / "model.toml").read_text())
    worker = InferenceWorker(settings, ModelRepository(tmp_path).resolve(TABULAR_NAME))
    with pytest.raises(ModelError, match=r"model\.onnx does not exist"):
        worker.run()
    with Client(settings) as client:  # nothing was consumed: not even the request topic was made
        assert settings.topics.request_topic(TABULAR_NAME, "1") not in client.topics.list()


def test_predict_round_trip_from_many_threads(serving: tuple[Settings, InferenceWorker]) -> None:
    settings, _worker = serving
    rows, target = _rows()
    labels = {0: "malignant", 1: "benign"}
    with Client(settings) as client:
        first = client.predict(f"{TABULAR_NAME}:1", rows[0], timeout=30)
        assert first.outputs["label"] == labels[int(target[0])]
        assert first.latency.total_ms > 0
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda i: client.predict(TABULAR_NAME, rows[i], version="1", timeout=30), range(40))
            )
    assert [a.outputs["label"] for a in answers] == [labels[int(t)] for t in target[:40]]
    assert len({a.request_id for a in answers}) == 40
    with Client(settings) as client:
        mine = list(client.subscribe_predictions(f"{TABULAR_NAME}:1", from_beginning=True, idle_timeout=5))
        others = list(client.subscribe_predictions("other-model", from_beginning=True, idle_timeout=3))
    assert {p.request_id for p in answers} <= {p.request_id for p in mine}
    assert others == []


def test_predict_async_awaits_many_answers_on_one_event_loop(serving: tuple[Settings, InferenceWorker]) -> None:
    import asyncio

    settings, _worker = serving
    rows, target = _rows()
    labels = {0: "malignant", 1: "benign"}

    async def ask_all(client: Client) -> list[Prediction]:
        calls = [client.predict_async(f"{TABULAR_NAME}:1", rows[i], timeout=30) for i in range(30)]
        return list(await asyncio.gather(*calls))

    with Client(settings) as client:
        answers = asyncio.run(ask_all(client))  # the first call opens the reply topic in a thread
        assert [a.outputs["label"] for a in answers] == [labels[int(t)] for t in target[:30]]
        client.topics.ensure_request_topic("nobody", "1")
        with pytest.raises(RequestTimeoutError, match=r"no answer to request .* from nobody:1 within 1s"):
            asyncio.run(client.predict_async("nobody:1", {"x": 1.0}, timeout=1))


def test_predict_times_out_clearly_without_a_worker(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_request_topic("nobody", "1")
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"no answer to request .* from nobody:1 within 2s"):
            client.predict("nobody:1", {"x": 1.0}, timeout=2)
        assert time.monotonic() - started < 10
        # A bare name is routed by the control topic; this model has no route.
        with pytest.raises(ConfigError, match="has no route"):
            client.predict("nobody", {"x": 1.0})


def test_a_vanished_reply_topic_does_not_stop_the_worker(serving: tuple[Settings, InferenceWorker]) -> None:
    settings, worker = serving
    rows, _ = _rows()
    with Client(settings) as client:
        client.produce(
            settings.topics.request_topic(TABULAR_NAME, "1"),
            [
                {
                    "request_id": "orphan",
                    "model": TABULAR_NAME,
                    "version": "1",
                    "inputs": rows[1],
                    "reply_to": settings.topics.reply_topic("long-gone"),
                }
            ],
        )
        # The orphan's prediction still reaches the predictions topic, and the worker goes on.
        orphan = [
            p
            for p in client.subscribe_predictions(TABULAR_NAME, from_beginning=True, idle_timeout=10)
            if p.request_id == "orphan"
        ]
        assert len(orphan) == 1
        assert client.predict(f"{TABULAR_NAME}:1", rows[2], timeout=30).request_id
    assert worker.failure is None


def test_worker_metrics_are_exported(serving: tuple[Settings, InferenceWorker]) -> None:
    settings, worker = serving
    rows, _ = _rows()
    with Client(settings) as client:
        for i in range(3):
            client.predict(f"{TABULAR_NAME}:1", rows[i], timeout=30)
    port = worker.metrics.serve(0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        worker.metrics.close()
    request_topic = settings.topics.request_topic(TABULAR_NAME, "1")
    registry = worker.metrics.registry
    assert registry.get_sample_value("inferstream_records_in_total", {"topic": request_topic, "stage": "serve"}) >= 3
    assert registry.get_sample_value("inferstream_batch_size_count", {"stage": "serve"}) >= 1
    assert registry.get_sample_value("inferstream_stage_seconds_count", {"stage": "serve", "step": "compute"}) >= 1
    assert registry.get_sample_value("inferstream_stage_seconds_count", {"stage": "serve", "step": "queue"}) >= 1
    assert 'inferstream_records_out_total{stage="serve"' in body
    # Per model version, as Triton names them: requests by outcome, rows, executions, latencies.
    version = {"model": TABULAR_NAME, "version": "1"}
    served = registry.get_sample_value("inferstream_inference_requests_total", {**version, "outcome": "success"})
    assert served >= 3
    assert registry.get_sample_value("inferstream_inference_count_total", version) >= 3
    assert registry.get_sample_value("inferstream_inference_exec_count_total", version) >= 1
    assert registry.get_sample_value("inferstream_inference_queue_seconds_count", version) == served
    assert registry.get_sample_value("inferstream_inference_request_seconds_count", version) == served
    assert registry.get_sample_value("inferstream_inference_compute_seconds_count", version) >= 1
    assert 'inferstream_inference_batch_size_bucket{le="+Inf",model=' in body
