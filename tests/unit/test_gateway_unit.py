"""The gateway without a broker: the exposure check, and the error shapes of each protocol."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.gateway import check_exposure, create_app, is_loopback
from inferstream.gateway._auth import UNAUTHORIZED


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.20", "gateway.internal", "128.0.0.1"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_no_token_beyond_loopback_is_refused_unless_insecure_is_allowed() -> None:
    open_settings = Settings.load()
    assert check_exposure(open_settings, "127.0.0.1") is False
    with pytest.raises(ConfigError) as refused:
        check_exposure(open_settings, "0.0.0.0")
    message = str(refused.value)
    assert "INFERSTREAM_GATEWAY__TOKEN" in message
    assert "gateway.token" in message
    assert "--insecure-no-token" in message
    assert "gateway.allow_insecure" in message
    allowed = Settings.load(gateway={"allow_insecure": True})
    assert check_exposure(allowed, "0.0.0.0") is True
    with_token = Settings.load(gateway={"token": "t0ken-value"})
    assert check_exposure(with_token, "0.0.0.0") is False
    assert "t0ken-value" not in repr(with_token)
    assert "t0ken-value" not in repr(with_token.gateway)


@pytest.fixture
def http() -> Iterator[TestClient]:
    """The gateway's app with a token and a small body limit; nothing here reaches Kafka."""
    app = create_app(Settings.load(gateway={"token": "unit-token", "max_body_bytes": 1024}))
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/events",
            {"error": "unauthorized", "detail": UNAUTHORIZED},
        ),
        (
            "POST",
            "/v1/embeddings",
            {
                "error": {
                    "message": UNAUTHORIZED,
                    "type": "authentication_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        ),
        ("GET", "/v2/models/m", {"error": UNAUTHORIZED}),
    ],
)
def test_each_protocol_answers_401_in_its_own_shape(http: TestClient, method: str, path: str, body: object) -> None:
    response = http.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == body


def test_bodies_over_the_limit_get_413_in_the_shape_of_the_route_they_were_for(http: TestClient) -> None:
    big = {"pad": "x" * 2000}
    native = http.post("/v1/events", json=big)
    openai = http.post("/v1/embeddings", json=big)
    oip = http.post("/v2/models/m/versions/1/infer", json=big)
    assert native.status_code == openai.status_code == oip.status_code == 413
    message = "the request body is over the gateway's limit of 1024 bytes"
    assert native.json() == {"error": "body_too_large", "detail": message}
    assert openai.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "body_too_large",
    }
    assert oip.json() == {"error": message}


def test_invalid_requests_are_400_for_openai_and_the_oip_and_stay_422_natively(http: TestClient) -> None:
    auth = {"Authorization": "Bearer unit-token"}
    native = http.post("/v1/models/m:1/predict", json={"inputs": [1]}, headers=auth)
    openai = http.post("/v1/embeddings", json={"model": "m", "input": "x", "extra": 1}, headers=auth)
    oip = http.post("/v2/models/m/infer", json={"inputs": []}, headers=auth)
    nan = http.post("/v1/embeddings", content=b'{"model": NaN}', headers={**auth, "Content-Type": "application/json"})
    assert native.status_code == 422
    assert native.json()["detail"][0]["loc"] == ["body", "inputs"]  # FastAPI's own body, as before
    assert openai.status_code == 400
    assert openai.json()["error"]["param"] == "extra"
    assert oip.status_code == 400
    assert "inputs" in oip.json()["error"]
    assert nan.status_code == 400
    assert nan.json()["error"]["code"] == "invalid_json"


def test_the_schema_describes_every_route(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    documented = {f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item}
    assert documented == {
        "POST /v1/models/{name}/predict",
        "GET /v1/predictions/stream",
        "POST /v1/events",
        "POST /v1/search",
        "POST /v1/retrieve",
        "GET /v1/alerts",
        "GET /v1/alerts/stream",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /v1/models/{model}",
        "GET /v2",
        "GET /v2/health/live",
        "GET /v2/health/ready",
        "GET /v2/models/{name}",
        "GET /v2/models/{name}/versions/{version}",
        "GET /v2/models/{name}/ready",
        "GET /v2/models/{name}/versions/{version}/ready",
        "POST /v2/models/{name}/infer",
        "POST /v2/models/{name}/versions/{version}/infer",
        "GET /healthz",
        "GET /metrics",
    }
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert "requestBody" in infer
    assert {"200", "400", "401", "404", "504"} <= set(infer["responses"])
