"""Serving disrupted mid-stream: kill -9 and a restart, a second copy joining (a rebalance).

At-least-once answers every request; exactly-once answers each once, and dead-letters bad
input once, as read_committed readers see it.
"""

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from inferstream import Client, Settings
from inferstream.schemas import Prediction
from inferstream.serving.demo_models import TABULAR_NAME
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker, WorkerOptions
from inferstream.stack.testing import cli_env


def _serve(settings: Settings, models: Path, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "inferstream", "serve", "--model", f"{TABULAR_NAME}:1", *flags],
        env=cli_env(settings, models),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _requests(models: Path, n: int, bad_every: int = 0) -> tuple[list[dict[str, object]], set[str]]:
    """``n`` tabular requests; every ``bad_every``-th has inputs the model does not know (their ids)."""
    features = ModelRepository(models).resolve(TABULAR_NAME).config.preprocessing.features  # type: ignore[union-attr]
    requests: list[dict[str, object]] = [
        {"request_id": f"r{i}", "model": TABULAR_NAME, "version": "1", "inputs": {f: float(i % 7) for f in features}}
        for i in range(n)
    ]
    bad = range(0, n, bad_every) if bad_every else range(0)
    for i in bad:
        requests[i] = {"request_id": f"bad{i}", "model": TABULAR_NAME, "version": "1", "inputs": {"nope": 1.0}}
    return requests, {f"bad{i}" for i in bad}


def _predictions(settings: Settings, idle: float) -> list[str]:
    with Client(settings) as client:
        return [
            m.record.request_id
            for m in client.subscribe("predictions", from_beginning=True, idle_timeout=idle)
            if isinstance(m.record, Prediction)
        ]


def test_kill_9_mid_stream_then_restart_answers_every_request(settings: Settings, models_dir: Path) -> None:
    models = models_dir
    n = 20_000
    requests, _ = _requests(models, n)
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(TABULAR_NAME, "1")
        assert client.produce(topic, requests).produced == n
    worker = _serve(settings, models)
    deadline = time.monotonic() + 60
    with Client(settings) as client:
        stream = client.subscribe("predictions", from_beginning=True, idle_timeout=60)
        seen = 0
        for _ in stream:
            seen += 1
            if seen >= n // 4 or time.monotonic() > deadline:
                break
        stream.close()
    worker.send_signal(signal.SIGKILL)  # mid-stream: no chance to commit or flush
    worker.wait(30)
    assert 0 < seen < n, "the worker should have been killed mid-stream"
    restarted = _serve(settings, models)
    try:
        ids: list[str] = []
        deadline = time.monotonic() + 120
        while len(set(ids)) < n and time.monotonic() < deadline:
            ids = _predictions(settings, idle=5)
    finally:
        restarted.send_signal(signal.SIGTERM)
        _out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err.decode()[-2000:]
    counts = Counter(ids)
    missing = {f"r{i}" for i in range(n)} - set(counts)
    assert not missing, f"{len(missing)} requests never answered"
    duplicates = sum(c - 1 for c in counts.values())
    # At-least-once: what the killed worker had produced but not committed is served again.
    print(f"kill -9 after {seen} predictions seen: {duplicates} duplicates out of {n}")
    assert duplicates < n


def test_exactly_once_kill_9_mid_stream_then_restart_serves_every_request_once(
    settings: Settings, models_dir: Path
) -> None:
    models = models_dir
    n = 20_000
    # Bad input all along the stream: inputs the model does not know, and bytes that are no request.
    requests, unknown_inputs = _requests(models, n, bad_every=500)
    good = {str(r["request_id"]) for r in requests} - unknown_inputs
    garbage = {f"junk{i}".encode() for i in range(250, n, 1000)}
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(TABULAR_NAME, "1")
        assert client.produce(topic, requests).produced == n
        for key in sorted(garbage):
            client.producer.produce(topic, b"\xffnot a request " + key, key)
        client.producer.flush()
    worker = _serve(settings, models, "--exactly-once")
    with Client(settings) as client:
        stream = client.subscribe("predictions", from_beginning=True, idle_timeout=60)
        seen = 0
        for _ in stream:  # read_committed: only what committed transactions wrote
            seen += 1
            if seen >= n // 4:
                break
        stream.close()
    worker.send_signal(signal.SIGKILL)  # mid-stream, most likely inside a transaction
    worker.wait(30)
    killed = time.monotonic()
    assert 0 < seen < len(good), "the worker should have been killed mid-stream"
    restarted = _serve(settings, models, "--exactly-once")
    try:
        ids: list[str] = []
        deadline = time.monotonic() + 120
        while len(set(ids)) < len(good) and time.monotonic() < deadline:
            ids = _predictions(settings, idle=5)
        served_after = time.monotonic() - killed
    finally:
        restarted.send_signal(signal.SIGTERM)
        _out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err.decode()[-2000:]
    counts = Counter(ids)
    assert set(counts) == good, f"{len(good - set(counts))} requests never answered"
    assert [i for i, c in counts.items() if c > 1] == [], "requests answered twice"
    with Client(settings) as client:
        letters = Counter(letter.original_key for letter in client.dead_letters())
    assert letters == Counter([key.encode() for key in unknown_inputs] + list(garbage))
    print(f"kill -9 after {seen} predictions seen; all {len(good)} served once {served_after:.1f}s after the kill")


def test_exactly_once_copy_joining_mid_stream_serves_every_request_once(settings: Settings, models_dir: Path) -> None:
    models = models_dir
    settings = settings.model_copy(update={"models_dir": models})
    version = ModelRepository(models).resolve(TABULAR_NAME)
    n = 20_000
    requests, bad = _requests(models, n, bad_every=500)
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(TABULAR_NAME, "1")
        assert client.produce(topic, requests[: n // 2]).produced == n // 2
    workers = [InferenceWorker(settings, version, options=WorkerOptions(exactly_once=True, instance=i)) for i in (0, 1)]
    errors: list[BaseException] = []

    def run(worker: InferenceWorker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,), daemon=True) for worker in workers]
    threads[0].start()
    deadline = time.monotonic() + 60
    while workers[0].stats.requests < n // 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    threads[1].start()  # the group rebalances while the first copy has a transaction open
    try:
        with Client(settings) as client:  # the rest arrives over the rebalance
            for start in range(n // 2, n, n // 20):
                assert client.produce(topic, requests[start : start + n // 20]).produced == n // 20
                time.sleep(0.5)
        ids: list[str] = []
        deadline = time.monotonic() + 120
        while len(set(ids)) < n - len(bad) and time.monotonic() < deadline:
            ids = _predictions(settings, idle=5)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert workers[1].stats.requests > 0, "the second copy should have taken over partitions"
    counts = Counter(ids)
    assert set(counts) == {str(r["request_id"]) for r in requests} - bad
    assert [i for i, c in counts.items() if c > 1] == [], "requests answered twice"
    with Client(settings) as client:
        letters = Counter(letter.original_key for letter in client.dead_letters())
    assert letters == Counter(key.encode() for key in bad)
