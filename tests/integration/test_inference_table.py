"""The inference table against the real broker: what was served is what is archived, once, even after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer, read_bounded
from inferstream.monitoring.table import read_table, table_dir, table_files
from inferstream.schemas import Prediction, codec_for
from inferstream.serving.demo_models import TABULAR_NAME, build_tabular, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.streams.table_sink import InferenceTableSink, ParquetTableSink


def _wait(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert condition()


def _thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_the_table_holds_exactly_what_the_worker_served(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_tabular(models)
    settings = settings.model_copy(update={"models_dir": models})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    worker = InferenceWorker(settings, ModelRepository(models).resolve(TABULAR_NAME))
    sink = InferenceTableSink(settings, max_rows=300, max_delay_s=0.5)
    worker_thread, worker_errors = _thread(worker.run)
    sink_thread, sink_errors = _thread(sink.run)
    assert worker.ready.wait(60)
    assert sink.ready.wait(60)
    rows, _ = tabular_rows()
    n = 1000
    requests = [
        {"request_id": f"r{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]} for i in range(n)
    ]
    with Client(settings) as client:
        client.produce(client.settings.topics.request_topic(TABULAR_NAME, "1"), requests)
        _wait(lambda: sink.stats.written >= n)
        # Something that is not a prediction goes to the dead-letter topic, not into the table.
        client.producer.produce(client.topic("predictions"), b"not a prediction", b"junk")
        client.producer.flush()
        _wait(lambda: sink.stats.dead_letters == 1)
    worker.stop()
    sink.stop()
    worker_thread.join(60)
    sink_thread.join(60)
    assert not worker_errors, worker_errors
    assert not sink_errors, sink_errors
    assert sink.stats.consumed == sink.stats.written + sink.stats.dead_letters + sink.stats.skipped

    topic = settings.topics.platform_topics()["predictions"]
    served = {}
    for message in read_bounded(settings, topic):
        if message.key() != b"junk":
            prediction = codec_for(Prediction).decode(message.value() or b"")
            served[prediction.request_id] = prediction
    table = read_table(table_dir(settings), model=TABULAR_NAME, version="1")
    archived = table.to_pylist()
    assert sorted(r["request_id"] for r in archived) == sorted(served)
    assert len(archived) == n
    first = next(r for r in archived if r["request_id"] == "r0")
    assert first["outputs"] == served["r0"].model_dump_json(include={"outputs"})[len('{"outputs":') : -1]
    assert abs(first["latency"]["total_ms"] - served["r0"].latency.total_ms) < 1e-6
    # Partitioned by model and date; files named by topic, partition and offset range.
    for item in table_files(table_dir(settings)):
        assert item.path.parent.parent.name == f"model={TABULAR_NAME}"
        assert item.path.parent.name.startswith("date=")
        assert item.path.name.startswith(f"{topic}+{item.partition}+")


def _produce_predictions(settings: Settings, start: int, count: int) -> None:
    codec = codec_for(Prediction)
    rows, _ = tabular_rows()
    topic = settings.topics.platform_topics()["predictions"]
    with Producer(settings) as producer:
        for i in range(start, start + count):
            p = Prediction(
                request_id=f"p{i}",
                event_time=1_735_689_000 + i,
                model="breast-cancer",
                version="1",
                inputs=rows[i % len(rows)],
                outputs={"label": "benign"},
                latency={"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
            )
            producer.produce(topic, codec.encode(p), p.key(), [codec.header])


def test_files_renamed_but_not_committed_are_not_written_twice(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _produce_predictions(settings, 0, 600)
    # A sink that wrote its files and died before committing: everything is replayed.
    crashed = ParquetTableSink(settings)
    crashed.setup()
    topic = settings.topics.platform_topics()["predictions"]
    for message in read_bounded(settings, topic):
        crashed.add(
            message.partition() or 0, message.offset() or 0, codec_for(Prediction).decode(message.value() or b"")
        )
    crashed.flush()
    sink = InferenceTableSink(settings, max_rows=10_000, max_delay_s=0.2)
    thread, errors = _thread(sink.run)
    _wait(lambda: sink.stats.consumed >= 600)
    sink.stop()
    thread.join(60)
    assert not errors, errors
    assert sink.stats.skipped == 600
    assert sink.stats.written == 0
    ids = read_table(table_dir(settings)).column("request_id").to_pylist()
    assert sorted(ids) == sorted(f"p{i}" for i in range(600))


def test_kill_9_and_restart_loses_nothing_and_duplicates_nothing(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        # The killed member leaves the group after this, not the default 45 s: the restart waits for it.
        "INFERSTREAM_KAFKA__SESSION_TIMEOUT_MS": "10000",
    }
    command = [sys.executable, "-m", "inferstream", "table", "sink", "--max-rows", "200", "--max-delay", "0.2"]
    root = table_dir(settings)

    def rows_in_files() -> int:
        return sum(f.last - f.first + 1 for f in table_files(root))

    _produce_predictions(settings, 0, 3000)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: len(table_files(root)) >= 3)  # mid-stream: some files written, not all
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    _produce_predictions(settings, 3000, 1000)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while read_table(root).num_rows < 4000 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # anything more would be a duplicate: give it the chance to show
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    log = stderr.decode()[-4000:]
    assert process.returncode == 0, log
    ids = read_table(root).column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4000, f"{len(ids)} rows, {len(set(ids))} ids; the restarted sink said:\n{log}"
    assert rows_in_files() >= 4000
    assert not list(root.glob("**/*.tmp"))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_table_export_from_the_cli(settings: Settings, tmp_path: Path, suffix: str) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    _produce_predictions(settings, 0, 50)
    sink = InferenceTableSink(settings, max_delay_s=0.2)
    thread, errors = _thread(sink.run)
    _wait(lambda: sink.stats.written >= 50)
    sink.stop()
    thread.join(60)
    assert not errors
    out = tmp_path / f"export{suffix}"
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferstream",
            "table",
            "export",
            str(out),
            "--model",
            "breast-cancer:1",
            "--since",
            "2024-12-31T23:50:20Z",
            "--until",
            "2024-12-31T23:50:40Z",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 20 predictions" in result.stderr
    assert out.stat().st_size > 0
