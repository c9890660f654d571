"""The worker supervisor follows the lag: more processes while it grows, fewer once it drains."""

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from inferstream import Client, Settings
from inferstream.demo import sample_texts
from inferstream.schemas import Embedding, Prediction
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, build_embedder, build_tabular, tabular_rows
from inferstream.serving.supervisor import ScalePolicy, Supervisor, serve_command, threads_per_copy
from inferstream.stack.testing import cli_env


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


def _children(pid: int) -> list[list[str]]:
    """The command lines of a process's children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found.append((stat.parent / "cmdline").read_bytes().decode().split("\0")[:-1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def test_serve_replicas_runs_copies_in_one_group_sharing_the_cpus(settings: Settings, models_dir: Path) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})
    rows, _target = tabular_rows()
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.topics.ensure_request_topic(TABULAR_NAME, "1")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "serve", "--model", f"{TABULAR_NAME}:1", "--replicas", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(settings, models_dir),
    )
    threads = threads_per_copy(0, 2)
    try:
        assert process.stderr is not None
        assert f"each worker process runs ONNX Runtime on {threads} thread(s)" in process.stderr.readline().decode()
        group = settings.topics.worker_group(TABULAR_NAME, "1")
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        deadline = time.monotonic() + 120
        members = 0
        while members < 2 and time.monotonic() < deadline:
            assert process.poll() is None
            (described,) = admin.describe_consumer_groups([group]).values()
            members = len(described.result().members)
            time.sleep(0.5)
        assert members == 2  # both copies joined the one group
        copies = [c for c in _children(process.pid) if "serve" in c]
        assert len(copies) == 2
        assert all(c[c.index("--threads") + 1] == str(threads) for c in copies), copies
        n = 3000
        requests = [
            {"request_id": f"p{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]}
            for i in range(n)
        ]
        with Client(settings) as client:
            stream = client.subscribe("predictions", max_records=n, idle_timeout=60)
            client.produce(topic, requests)
            ids = Counter(m.record.request_id for m in stream if isinstance(m.record, Prediction))
        assert ids == Counter(r["request_id"] for r in requests)  # every request once
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
