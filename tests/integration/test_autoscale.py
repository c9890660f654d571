"""The worker supervisor follows the lag: more processes while it grows, fewer once it drains."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from inferstream import Client, Settings
from inferstream.demo import sample_texts
from inferstream.schemas import Embedding
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, build_embedder, build_tabular
from inferstream.serving.supervisor import ScalePolicy, Supervisor, serve_command


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    models = tmp_path / "models"
    build_embedder(models)
    # The worker processes the supervisor starts read their settings from the environment.
    monkeypatch.setenv("INFERSTREAM_TOPICS__PREFIX", settings.topics.prefix)
    monkeypatch.setenv("INFERSTREAM_MODELS_DIR", str(models))
    return settings.model_copy(update={"models_dir": models})


def test_autoscale_adds_processes_under_lag_and_removes_them_when_drained(env: Settings) -> None:
    settings = env
    texts = sample_texts()[:600]  # the embedder serves ~50 texts/s a process here: a backlog of seconds
    topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(EMBEDDER_NAME, "1")
        client.produce(
            topic,
            [
                {"request_id": f"t{i}", "model": EMBEDDER_NAME, "version": "1", "document_id": f"d{i}", "text": t}
                for i, t in enumerate(texts)
            ],
            schema="embedding-request",
        )
    supervisor = Supervisor(
        settings,
        serve_command(None, settings.kafka.bootstrap_servers, f"{EMBEDDER_NAME}:1"),
        topics=[topic],
        group_id=settings.topics.worker_group(EMBEDDER_NAME, "1"),
        policy=ScalePolicy(max_replicas=3, scale_up_lag=100, scale_down_lag=0, drained_samples=2, interval_s=1.0),
    )
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            scaled_up = max((e.replicas for e in supervisor.events), default=0) > 1
            if scaled_up and supervisor.lag == 0 and supervisor.running == 1:
                break
            time.sleep(0.5)
    finally:
        supervisor.stop()
        thread.join(120)
    assert not thread.is_alive()
    counts = [e.replicas for e in supervisor.events]
    assert max(counts) > 1, supervisor.events  # it added processes while the lag was high
    assert max(counts) <= 3  # never above --max-replicas (nor the 3 partitions)
    assert supervisor.lag == 0
    assert counts[-1] == 1, supervisor.events  # and removed them once it drained
    with Client(settings) as client:
        ids = {
            m.record.id
            for m in client.subscribe("embeddings", from_beginning=True, idle_timeout=5)
            if isinstance(m.record, Embedding)
        }
    assert ids == {f"d{i}" for i in range(len(texts))}
    print(" → ".join(f"{e.replicas} ({e.reason}, lag {e.lag})" for e in supervisor.events), file=sys.stderr)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state  # exited, not reaped yet by whoever adopted it


def test_a_copy_whose_supervisor_dies_stops_by_itself(env: Settings) -> None:
    settings = env
    build_tabular(settings.models_dir)
    copy = serve_command(None, settings.kafka.bootstrap_servers, f"{TABULAR_NAME}:1", "--instance", "0")
    # A stand-in supervisor: starts the copy, says its pid, then is killed without stopping it.
    parent = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, *copy], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(5)  # the copy is up and serving
    assert not _gone(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    parent.stdout.close()
    deadline = time.monotonic() + 60
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gone(child), "the orphaned copy is still running"


STAND_IN = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [*sys.argv[1:], "--supervisor", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
)
print(child.pid, flush=True)
time.sleep(600)
"""
