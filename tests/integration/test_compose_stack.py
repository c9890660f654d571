"""compose/docker-compose.yml's services, run as local processes with the same commands and
environment, turn events into predictions, index documents, an inference table and a drift alert.

No Docker engine runs here, so each service of the inferstream image runs as
``python -m inferstream <its command>``: compose hostnames point at the harness's Kafka and
Elasticsearch, each named volume, config and secret is a local folder or file, a path the
container would own lives under a folder of its own, and the ports move to free loopback
ports. The setup steps run first and must succeed; each process must pass its own
healthcheck (the compose file's test command) before events go in.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from compose_stack import is_one_shot, load, platform_services
from inferstream import Client, Settings
from inferstream.demo import sample_events
from inferstream.monitoring import table as inference_table
from inferstream.stack.testing import Broker, SearchServer

EVENTS = 800  # 400 clinical (the monitor's two windows of 200: the second one shifted) and 400 passages
TOKEN = "compose-test-token"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server that keeps the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/drift", received
    finally:
        server.shutdown()
        server.server_close()


class LocalStack:
    """The compose services as processes on this machine, with the environment compose gives them."""

    def __init__(self, compose: dict[str, Any], root: Path, kafka: str, elasticsearch: str, prefix: str) -> None:
        self.compose = compose
        self.root = root
        self.hosts = {"kafka:19092": kafka, "http://elasticsearch:9200": elasticsearch}
        # Apart from the other tests on the session's broker and Elasticsearch.
        self.isolation = {
            "INFERSTREAM_TOPICS__PREFIX": prefix,
            "INFERSTREAM_INGEST__GROUP": f"{prefix}ingest",
            "INFERSTREAM_ELASTICSEARCH__INDEX": f"{prefix}documents",
        }
        self.logs: dict[str, Path] = {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self.processes = [n for n, s in platform_services(compose).items() if not is_one_shot(s)]

    def _mounts(self, name: str, service: dict[str, Any]) -> dict[str, Path]:
        """Container path → local path: the service's volumes, configs and secrets."""
        mounts: dict[str, Path] = {}
        for volume in service.get("volumes") or []:
            source, target = volume.split(":")[:2]
            mounts[target] = self.root / "volumes" / source
            mounts[target].mkdir(parents=True, exist_ok=True)
        for config in service.get("configs") or []:
            path = self.root / "configs" / config["source"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.compose["configs"][config["source"]]["content"])
            mounts[config["target"]] = path
        for secret in service.get("secrets") or []:
            path = self.root / "secrets" / secret
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(os.environ.get(self.compose["secrets"][secret]["environment"], TOKEN))
            mounts[f"/run/secrets/{secret}"] = path
        return mounts

    def _local(self, name: str, value: str, mounts: dict[str, Path]) -> str:
        for host, local in self.hosts.items():
            value = value.replace(host, local)
        if not value.startswith("/"):
            return value
        for target in sorted(mounts, key=len, reverse=True):
            if value == target or value.startswith(f"{target}/"):
                return str(mounts[target]) + value[len(target) :]
        # The container's own filesystem.
        return str(self.root / "containers" / name) + value

    def environment(self, name: str) -> dict[str, str]:
        """The service's environment here: compose's values with hosts, paths and ports made local."""
        service = self.compose["services"][name]
        mounts = self._mounts(name, service)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTREAM_")}
        env.update({key: self._local(name, str(value), mounts) for key, value in service["environment"].items()})
        env.update(self.isolation)
        for host_key, port_key in (
            ("INFERSTREAM_METRICS__HOST", "INFERSTREAM_METRICS__PORT"),
            ("INFERSTREAM_GATEWAY__HOST", "INFERSTREAM_GATEWAY__PORT"),
        ):
            if port_key in env:  # every process on this one machine: loopback, a port of its own
                env[host_key], env[port_key] = "127.0.0.1", str(_free_port())
        Path(env["INFERSTREAM_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
        return env

    def start(self, name: str) -> subprocess.Popen[bytes]:
        service = self.compose["services"][name]
        env = self.environment(name)
        mounts = self._mounts(name, service)
        args = [self._local(name, arg, mounts) for arg in service["command"]]
        self.logs[name] = self.root / f"{name}.log"
        with self.logs[name].open("ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "inferstream", *args], env=env, stdout=log, stderr=log)
        self.children[name] = child
        self.environments[name] = env
        return child

    def run_once(self, name: str) -> None:
        code = self.start(name).wait(300)
        assert code == 0, f"setup step {name} failed ({code}):\n{self.logs[name].read_text()}"

    def healthy(self, name: str) -> bool:
        """The service's own healthcheck (compose's CMD test), run here with its environment."""
        test = self.compose["services"][name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"], test
        probe = subprocess.run(
            [sys.executable, *test[2:]], env=self.environments[name], capture_output=True, timeout=60, check=False
        )
        return probe.returncode == 0

    def wait_healthy(self, names: list[str]) -> None:
        waiting = set(names)
        deadline = time.monotonic() + 240
        while waiting:
            for name in sorted(waiting):
                assert self.children[name].poll() is None, f"{name} exited:\n{self.logs[name].read_text()}"
                if self.healthy(name):
                    waiting.discard(name)
            assert time.monotonic() < deadline, f"never healthy: {sorted(waiting)}; {self.log_tails()}"
            time.sleep(0.5)

    def log_tails(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-2000:]}" for n, p in self.logs.items())

    def stop(self) -> dict[str, int]:
        """SIGTERM to every process that runs; their exit codes."""
        running = {n: c for n, c in self.children.items() if n in self.processes}
        for child in running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        codes = {}
        for name, child in running.items():
            try:
                codes[name] = child.wait(120)
            except subprocess.TimeoutExpired:
                child.kill()
                codes[name] = child.wait()
        return codes


def _until(what: str, check: Any, stack: LocalStack, timeout: float = 300) -> Any:
    """Poll ``check`` until it returns something true (fails, with the logs, past the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} never happened; {stack.log_tails()}"
        time.sleep(1)


@pytest.mark.timeout(900)
def test_the_compose_services_run_the_demo_flow(kafka: Broker, elasticsearch: SearchServer, tmp_path: Path) -> None:
    prefix = f"c{uuid.uuid4().hex[:10]}."
    with _webhook_receiver() as (hook_url, hooks):
        compose = load(environ={"INFERSTREAM_DRIFT_WEBHOOK": hook_url, "INFERSTREAM_GATEWAY__TOKEN": TOKEN})
        stack = LocalStack(compose, tmp_path, kafka.bootstrap_servers, elasticsearch.url, prefix)
        settings = Settings.load(kafka={"bootstrap_servers": kafka.bootstrap_servers}, topics={"prefix": prefix})
        try:
            for step in ("topics", "models", "reference"):  # in depends_on order
                stack.run_once(step)
            for name in stack.processes:
                stack.start(name)
            stack.wait_healthy(stack.processes)
            _flow(stack, settings)
        finally:
            codes = stack.stop()
        # uvicorn ends the gateway by re-raising the SIGTERM it handled; the others exit 0.
        assert codes.pop("gateway") in (0, -signal.SIGTERM), stack.log_tails()
        assert codes == {name: 0 for name in stack.processes if name != "gateway"}, stack.log_tails()
        # The monitor's webhook got the alert the topic holds.
        (alert,) = [h for h in hooks if h["status"] == "drift"]
        assert alert["monitor"] == "demo-clinical"


def _flow(stack: LocalStack, settings: Settings) -> None:
    clinical = docs = EVENTS // 2
    index = stack.environments["index"]["INFERSTREAM_ELASTICSEARCH__INDEX"]
    search = Elasticsearch(stack.environments["index"]["INFERSTREAM_ELASTICSEARCH__URL"])
    with search, Client(settings) as client:
        assert client.produce("events", sample_events(EVENTS)).produced == EVENTS
        # Every clinical event comes out as one prediction of the classifier.
        assert len(_predictions(client, clinical)) == clinical
        # Every passage is indexed, or dead-lettered by the embedder with the reason (too long).
        embedder_topic = settings.topics.request_topic("minilm", "1")

        def indexed() -> bool:
            search.indices.refresh(index=index, ignore_unavailable=True)
            count = search.count(index=index)["count"] if search.indices.exists(index=index) else 0
            refused = sum(1 for _ in client.dead_letters(source_topic=embedder_topic))
            return count + refused == docs and count > 0

        _until("indexing every passage", indexed, stack)
        # The drift monitor alerts on the shifted half.
        alerts = list(client.alerts(monitor="demo-clinical", from_beginning=True, max_records=1, idle_timeout=300))
        assert [a.status for a in alerts] == ["drift"]
    # The table sink wrote every prediction to the inference table.
    table_dir = inference_table.table_dir(Settings.load(state_dir=stack.environments["table"]["INFERSTREAM_STATE_DIR"]))
    _until(
        "the inference table holding every prediction",
        lambda: table_dir.is_dir() and inference_table.read_table(table_dir).num_rows == clinical,
        stack,
    )
    # The gateway asks for its token (from the secret) and takes it.
    gateway = stack.environments["gateway"]
    url = f"http://127.0.0.1:{gateway['INFERSTREAM_GATEWAY__PORT']}/v1/models"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    refused.value.close()
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        models = {model["id"] for model in json.load(response)["data"]}
    assert {"breast-cancer", "minilm"} <= models


def _predictions(client: Client, expected: int) -> set[str]:
    ids: set[str] = set()
    for prediction in client.subscribe_predictions("breast-cancer:1", from_beginning=True, idle_timeout=300):
        ids.add(prediction.request_id)
        if len(ids) == expected:
            break
    return ids
