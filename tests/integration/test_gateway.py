"""The HTTP gateway against the real broker: a real uvicorn server on a free port, httpx as the client."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferstream import Client, Settings
from inferstream.config import GatewaySettings
from inferstream.gateway import BackgroundGateway
from inferstream.schemas import Event
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread


def _with_gateway(settings: Settings, **options: Any) -> Settings:
    return settings.model_copy(update={"gateway": GatewaySettings(**options)})


@pytest.fixture
def platform(settings: Settings) -> Settings:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    return settings


@pytest.fixture
def worker(platform: Settings, models_dir: Path) -> Iterator[InferenceWorker]:
    settings = platform.model_copy(update={"models_dir": models_dir})
    with running_in_thread(InferenceWorker(settings, ModelRepository(models_dir).resolve(TABULAR_NAME))) as worker:
        yield worker


def _metric(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_predict_round_trip_through_a_worker(platform: Settings, worker: InferenceWorker) -> None:
    rows, target = tabular_rows()
    labels = {0: "malignant", 1: "benign"}
    with BackgroundGateway(platform) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        answers = []
        for i in range(5):
            response = http.post(
                f"/v1/models/{TABULAR_NAME}:1/predict", json={"inputs": rows[i], "request_id": f"q{i}"}
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
        # The version can go in the body too.
        response = http.post(f"/v1/models/{TABULAR_NAME}/predict", json={"inputs": rows[5], "version": "1"})
        assert response.status_code == 200, response.text
    for i, answer in enumerate(answers):
        assert answer["request_id"] == f"q{i}"
        assert (answer["model"], answer["version"]) == (TABULAR_NAME, "1")
        assert answer["inputs"] == rows[i]
        assert answer["outputs"]["label"] == labels[int(target[i])]
        assert set(answer["outputs"]["probabilities"]) == {"malignant", "benign"}
    # The same requests through the SDK give the same answers.
    with Client(platform) as client:
        direct = client.predict(f"{TABULAR_NAME}:1", rows[0], timeout=30)
    assert direct.outputs == answers[0]["outputs"]


def test_predict_errors_unknown_model_invalid_input_and_timeout(platform: Settings) -> None:
    with Client(platform) as client:
        client.topics.ensure_request_topic(TABULAR_NAME, "1")  # served by nobody
    settings = _with_gateway(platform, predict_timeout_s=1.0)
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        # Opened ahead, the request path's set-up (the producer's connection and id: about a
        # second on a busy machine) is not spent from the timed request's one second.
        own = gateway.app.state.gateway.client
        own.warm()
        with Client(platform) as client:
            assert client.topics.exists(platform.topics.reply_topic(own.client_id))
        unknown = http.post(f"/v1/models/{TABULAR_NAME}:9/predict", json={"inputs": {"a": 1}})
        not_an_object = http.post(f"/v1/models/{TABULAR_NAME}:1/predict", json={"inputs": [1, 2]})
        unknown_field = http.post(f"/v1/models/{TABULAR_NAME}:1/predict", json={"inputs": {}, "model": "x"})
        no_version = http.post(f"/v1/models/{TABULAR_NAME}/predict", json={"inputs": {"a": 1}})
        # Asking for longer than the gateway allows waits the gateway's maximum.
        timed_out = http.post(f"/v1/models/{TABULAR_NAME}:1/predict", json={"inputs": {"a": 1}, "timeout": 60})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_model"
    assert f"requests.{TABULAR_NAME}.9 does not exist" in unknown.json()["detail"]
    assert not_an_object.status_code == 422
    assert not_an_object.json()["detail"][0]["loc"] == ["body", "inputs"]
    assert unknown_field.status_code == 422
    assert no_version.status_code == 404  # a bare name is routed: this model has no route
    assert no_version.json()["error"] == "no_route"
    assert "has no route" in no_version.json()["detail"]
    assert timed_out.status_code == 504, timed_out.text
    body = timed_out.json()
    assert body["error"] == "timeout"
    assert body["timeout_s"] == 1.0
    assert "no answer to request" in body["detail"]
    assert "is a worker serving" in body["detail"]


def test_bearer_token_is_required_when_set(platform: Settings) -> None:
    settings = _with_gateway(platform, token="s3cret-token")
    event = {"id": "e1", "type": "review", "text": "good"}
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        missing = http.post("/v1/events", json=event)
        wrong = http.post("/v1/events", json=event, headers={"Authorization": "Bearer s3cret-tokem"})
        basic = http.post("/v1/events", json=event, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
        metrics_without = http.get("/metrics")
        right = http.post("/v1/events", json=event, headers={"Authorization": "Bearer s3cret-token"})
        metrics_with = http.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        health = http.get("/healthz")
        schema = http.get("/openapi.json")
    for response in (missing, wrong, basic, metrics_without):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
    assert right.status_code == 200, right.text
    assert right.json()["produced"] == 1
    assert metrics_with.status_code == 200
    assert health.status_code == 200
    assert schema.status_code == 200
    # The token never shows in the settings' repr.
    assert "s3cret" not in repr(settings)


def _chunks(body: dict[str, Any], size: int = 500) -> Iterator[bytes]:
    # A generator body: httpx sends it chunked, with no Content-Length.
    data = json.dumps(body).encode()
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_oversized_bodies_get_413_on_every_route_declared_or_chunked(
    platform: Settings, worker: InferenceWorker
) -> None:
    settings = _with_gateway(platform, max_body_bytes=2048)
    rows, _ = tabular_rows()
    predict = f"/v1/models/{TABULAR_NAME}:1/predict"
    big = {
        "/v1/events": {"id": "big", "type": "review", "text": "x" * 5000},
        predict: {"inputs": rows[0], "attributes": {"pad": "x" * 5000}},
        "/v1/search": {"query": "x" * 5000},
    }
    small = {
        "/v1/events": {"id": "small", "type": "review", "text": "fits"},
        predict: {"inputs": rows[0], "request_id": "small"},
        "/v1/search": {"query": ""},  # read and parsed: 422 for the empty query, as when declared
    }
    json_type = {"Content-Type": "application/json"}
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        for route, body in big.items():
            declared = http.post(route, json=body)
            streamed = http.post(route, content=_chunks(body), headers=json_type)
            for response in (declared, streamed):
                assert response.status_code == 413, (route, response.text)
                assert response.json()["error"] == "body_too_large"
                assert "2048 bytes" in response.json()["detail"]
        answers = {route: http.post(route, content=_chunks(body), headers=json_type) for route, body in small.items()}
        declared_search = http.post("/v1/search", json=small["/v1/search"])
    assert answers["/v1/events"].status_code == 200, answers["/v1/events"].text
    assert answers[predict].status_code == 200, answers[predict].text
    assert answers[predict].json()["request_id"] == "small"
    assert answers["/v1/search"].status_code == declared_search.status_code == 422
    assert answers["/v1/search"].json() == declared_search.json()
    with Client(platform) as client:
        ids = [m.key for m in client.subscribe("events", from_beginning=True, idle_timeout=3)]
    assert ids == [b"small"]


def test_events_are_validated_produced_and_read_back(platform: Settings) -> None:
    good = [
        {"id": "e1", "type": "review", "text": "Fast delivery"},
        {"id": "e2", "type": "transaction", "features": {"amount": 42.5, "country": "FR"}},
    ]
    bad = [
        {"id": "b1", "type": "review", "text": "fine"},
        {"id": "b2", "text": "no type"},
        {"id": "b3", "type": "transaction", "features": {"amount": [1, 2]}},
    ]
    with BackgroundGateway(platform) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        one = http.post("/v1/events", json={"id": "e0", "type": "review", "text": "one alone"})
        many = http.post("/v1/events", json=good)
        rejected = http.post("/v1/events", json=bad)
        not_json = http.post("/v1/events", content=b"{nope", headers={"Content-Type": "application/json"})
    assert one.status_code == 200
    assert one.json()["ids"] == ["e0"]
    assert many.status_code == 200
    assert many.json()["produced"] == 2
    assert many.json()["topic"] == platform.topics.name("events")
    assert rejected.status_code == 422
    body = rejected.json()
    assert body["error"] == "invalid_events"
    assert "2 of 3 records are invalid; nothing was produced" in body["detail"]
    problems = {(p["record"], p["field"]) for p in body["problems"]}
    assert problems == {(1, "type"), (2, "features.amount")}
    assert not_json.status_code == 422
    assert not_json.json()["error"] == "invalid_json"
    with Client(platform) as client:
        read = [m.record for m in client.subscribe("events", from_beginning=True, idle_timeout=3)]
    assert sorted(e.id for e in read if isinstance(e, Event)) == ["e0", "e1", "e2"]
    by_id = {e.id: e for e in read if isinstance(e, Event)}
    assert by_id["e2"].features == {"amount": 42.5, "country": "FR"}


def _prediction(i: int, model: str, pad: int) -> dict[str, Any]:
    return {
        "request_id": f"{model}-{i}",
        "event_time": datetime.now(UTC).isoformat(),
        "model": model,
        "version": "1",
        "inputs": {"x": i},
        "outputs": {"label": "yes"},
        "latency": {"queue_ms": 0.1, "compute_ms": 0.2, "total_ms": 0.5},
        "attributes": {"pad": "p" * pad},
    }


def test_a_slow_stream_client_is_dropped_while_a_normal_one_gets_everything(platform: Settings) -> None:
    settings = _with_gateway(platform, sse_queue_size=8, sse_drop_after_s=0.5)
    n = 3000
    with BackgroundGateway(settings) as gateway:
        received: list[dict[str, Any]] = []
        ended: list[str] = []

        def read_normally() -> None:
            with httpx.stream("GET", f"{gateway.url}/v1/predictions/stream?model=wanted", timeout=60) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[len("event: ") :]
                    elif line.startswith("data: ") and event == "prediction":
                        received.append(json.loads(line[len("data: ") :]))
                        if len(received) == n:
                            return
                    elif line.startswith("data: "):
                        ended.append(line)
                        return

        normal = threading.Thread(target=read_normally, daemon=True)
        normal.start()
        # The slow client: a tiny receive buffer, and it reads nothing until the end.
        host, port = gateway.url.removeprefix("http://").split(":")
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall(b"GET /v1/predictions/stream HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 60
        while _metric(gateway.url, "inferstream_gateway_stream_clients") < 2:
            assert time.monotonic() < deadline, "the stream clients never connected"
            time.sleep(0.05)

        records = [_prediction(i, "wanted", pad=4000) for i in range(n)]
        records += [_prediction(i, "other", pad=10) for i in range(n // 10)]
        with Client(platform) as client:
            assert client.produce("predictions", records).produced == len(records)

        normal.join(120)
        assert not normal.is_alive()
        assert not ended, ended
        # Every prediction of the wanted model, once, in order per partition; none of the other.
        assert sorted(int(p["request_id"].split("-")[1]) for p in received) == list(range(n))
        assert {p["model"] for p in received} == {"wanted"}
        while _metric(gateway.url, "inferstream_gateway_stream_dropped_total") < 1:
            assert time.monotonic() < deadline + 60, "the slow client was never dropped"
            time.sleep(0.05)

        # Now the slow client reads: what fitted in the buffers, then the reason it was dropped.
        slow.settimeout(60)
        data = b""
        while chunk := slow.recv(1 << 16):
            data += chunk
        slow.close()
        assert data.startswith(b"HTTP/1.1 200")
        assert data.count(b"event: prediction") < n
        dropped = re.search(rb"event: dropped\r\ndata: (.*?)\r\n", data)
        assert dropped is not None
        assert "too slow" in json.loads(dropped.group(1))["reason"]
        assert _metric(gateway.url, "inferstream_gateway_stream_dropped_total") == 1
        assert _metric(gateway.url, "inferstream_gateway_stream_sent_total") >= n


def test_healthz_metrics_and_openapi(platform: Settings) -> None:
    with BackgroundGateway(platform) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        health = http.get("/healthz")
        http.post("/v1/events", json={"id": "e1", "type": "review", "text": "counted"})
        http.post("/v1/models/nope:1/predict", json={"inputs": {}})  # answered past FastAPI's routing
        metrics = http.get("/metrics")
        schema = http.get("/openapi.json").json()
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "bootstrap_servers": platform.kafka.bootstrap_servers}
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'inferstream_gateway_requests_total{route="/healthz",status="200"} 1.0' in metrics.text
    assert 'inferstream_gateway_requests_total{route="/v1/events",status="200"} 1.0' in metrics.text
    assert 'inferstream_gateway_requests_total{route="/v1/models/{name}/predict",status="404"} 1.0' in metrics.text
    events_topic = platform.topics.name("events")
    assert f'inferstream_records_out_total{{stage="produce",topic="{events_topic}"}} 1.0' in metrics.text
    assert {
        "/v1/models/{name}/predict",
        "/v1/predictions/stream",
        "/v1/events",
        "/healthz",
        "/metrics",
    } <= set(schema["paths"])
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["anyOf"][0]["required"] == ["id", "type"]


def test_healthz_says_503_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.load(kafka={"bootstrap_servers": f"127.0.0.1:{port}"}, state_dir=tmp_path)
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        health = http.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in health.json()["detail"]


def _command_env(platform: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": platform.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": platform.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(tmp_path),
        "COLUMNS": "200",
        **extra,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_gateway(env: dict[str, str], log_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``inferstream ARGS --port PORT`` in a child process, once /healthz answers on 127.0.0.1; and its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "inferstream", *args, "--port", str(port)], env=env, stderr=log_file
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return child, url
        except httpx.TransportError:
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                raise AssertionError(f"the gateway never answered: {log_path.read_text()}") from None
            time.sleep(0.1)


def _stop(child: subprocess.Popen[bytes]) -> int:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        return child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_gateway_command_serves_and_stops_cleanly_with_a_stream_open(platform: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "gateway.log"
    child, url = _start_gateway(_command_env(platform, tmp_path), log_path, "gateway")
    try:
        with httpx.stream("GET", f"{url}/v1/predictions/stream", timeout=60) as response:
            assert response.status_code == 200
            child.send_signal(signal.SIGTERM)
            lines = list(response.iter_lines())  # the stream ends, with the reason
        # uvicorn shuts down gracefully, then re-raises the signal for the exit status.
        assert child.wait(60) in (0, -signal.SIGTERM)
        assert lines[-3:] == ["event: dropped", 'data: {"reason": "the gateway is shutting down"}', ""]
    finally:
        _stop(child)
    log = log_path.read_text()
    assert f"gateway on {url} (no token set" in log
    assert "Traceback" not in log


def test_a_public_address_without_a_token_is_refused_before_kafka_is_contacted(tmp_path: Path) -> None:
    # A "broker" that only listens: a gateway that contacted Kafka would connect to it.
    with socket.socket() as broker:
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        broker.setblocking(False)
        env = {
            **os.environ,
            "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.getsockname()[1]}",
            "INFERSTREAM_STATE_DIR": str(tmp_path),
            "COLUMNS": "200",
        }
        for host in ("0.0.0.0", "::"):
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "inferstream", "gateway", "--host", host, "--port", str(_free_port())],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert result.returncode != 0
            assert time.monotonic() - started < 30  # at once, not after a Kafka timeout
            message = result.stderr.decode()
            assert f"listen on {host} with no token" in message
            for named in ("INFERSTREAM_GATEWAY__TOKEN", "gateway.token", "--insecure-no-token"):
                assert named in message, message
            assert "Traceback" not in message
        with pytest.raises(BlockingIOError):
            broker.accept()  # nobody connected


def test_insecure_no_token_serves_on_a_public_address_with_a_loud_warning(platform: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "gateway.log"
    child, url = _start_gateway(
        _command_env(platform, tmp_path), log_path, "gateway", "--host", "0.0.0.0", "--insecure-no-token"
    )
    try:
        event = {"id": "open", "type": "review", "text": "no token needed"}
        assert httpx.post(f"{url}/v1/events", json=event, timeout=30).status_code == 200
    finally:
        assert _stop(child) in (0, -signal.SIGTERM)
    log = log_path.read_text()
    assert "INSECURE: the gateway listens on 0.0.0.0 with no token" in log
    assert "NO TOKEN" in log
    assert "Traceback" not in log


def test_the_token_never_shows_in_logs_help_or_reprs(platform: Settings, tmp_path: Path) -> None:
    token = "tok-7f3a9c1e-never-print-me"
    env = _command_env(platform, tmp_path, INFERSTREAM_GATEWAY__TOKEN=token)
    log_path = tmp_path / "gateway.log"
    # Debug logging, on a public address (allowed: a token is set), every kind of call.
    child, url = _start_gateway(env, log_path, "-vv", "gateway", "--host", "0.0.0.0")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            wrong = http.get("/metrics", headers={"Authorization": f"Bearer {token}x"})
            assert wrong.status_code == 401
            assert token not in wrong.text
            assert http.post("/v1/events", json={"id": "x", "type": "review", "text": "t"}).status_code == 401
    finally:
        _stop(child)
    log = log_path.read_text()
    assert "bearer token required" in log
    assert token not in log
    helped = subprocess.run(
        [sys.executable, "-m", "inferstream", "gateway", "--help"], env=env, capture_output=True, timeout=60, check=True
    )
    assert token not in helped.stdout.decode() + helped.stderr.decode()
    settings = _with_gateway(platform, token=token)
    with BackgroundGateway(settings) as gateway:
        state = gateway.app.state.gateway
        for shown in (repr(settings), repr(settings.gateway), repr(state), repr(state.client), str(settings)):
            assert token not in shown


def test_docs_load_offline_from_the_gateway_itself(platform: Settings) -> None:
    settings = _with_gateway(platform, token="docs-stay-open")
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert "swagger-ui" in page.text
        # Every absolute URL on the page is the gateway's own; none is another host (no CDN).
        absolute = re.findall(r"https?://[^\s\"'<>)]+", page.text)
        assert all(u.startswith(f"{gateway.url}/") for u in absolute), absolute
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert len(assets) >= 3, page.text  # the script, the stylesheet, the icon
        for asset in assets:
            assert asset.startswith("/"), asset
            loaded = http.get(asset)
            assert loaded.status_code == 200, asset
            assert loaded.content
        schema_url = re.search(r"""url: ["']([^"']+)["']""", page.text)
        assert schema_url is not None
        assert schema_url.group(1) == "/openapi.json"
        assert http.get("/openapi.json").status_code == 200
