"""Gateway access: named API keys with scopes and rate limits, rotated from a file without a restart, and TLS."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from inferstream import Client, Settings
from inferstream.config import ApiKey, GatewaySettings
from inferstream.gateway import BackgroundGateway

EVENT = {"id": "e1", "type": "review", "text": "fine"}


@pytest.fixture
def platform(settings: Settings) -> Settings:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    return settings


def _with(settings: Settings, **options: object) -> Settings:
    return settings.model_copy(update={"gateway": GatewaySettings.model_validate(options)})


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_have_scopes_and_rate_limits(platform: Settings) -> None:
    keys = [
        ApiKey.model_validate({"name": "dashboard", "secret": "read-key", "scopes": ["read"]}),
        ApiKey.model_validate(
            {"name": "ingest", "secret": "produce-key", "scopes": ["produce"], "rate_per_s": 0.5, "burst": 2}
        ),
        ApiKey.model_validate({"name": "ops", "secret": "admin-key", "scopes": ["admin"]}),
        ApiKey.model_validate(
            {"name": "scorer", "secret": "predict-key", "scopes": ["predict"], "rate_per_s": 0.5, "burst": 2}
        ),
    ]
    settings = _with(platform, keys=keys)
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.get("/v1/alerts").status_code == 401
        assert http.get("/v1/alerts", headers=_auth("wrong")).status_code == 401
        assert http.get("/v1/alerts", headers=_auth("read-key")).status_code == 200
        refused = http.post("/v1/events", json=EVENT, headers=_auth("read-key"))
        assert refused.status_code == 403, refused.text
        assert "'dashboard' may not produce" in refused.json()["detail"]
        assert http.get("/v1/alerts", headers=_auth("produce-key")).status_code == 403
        # A bucket of 2 at half a request a second: the third at once is refused, with when to retry.
        answers = [http.post("/v1/events", json=EVENT, headers=_auth("produce-key")) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert "rate" in answers[2].json()["detail"]
        assert http.get("/metrics", headers=_auth("admin-key")).status_code == 200
        assert http.post("/v1/events", json=EVENT, headers=_auth("admin-key")).status_code == 200
        assert http.get("/healthz").status_code == 200  # probes stay open
        # Predict and infer (answered past FastAPI's routing) take the same keys, scopes and rates:
        # one token spent a request, whether the body is taken directly or left to FastAPI.
        predict, infer = "/v1/models/nope:1/predict", "/v2/models/nope/versions/1/infer"
        assert http.post(predict, json={"inputs": {}}).status_code == 401
        forbidden = http.post(infer, json={"inputs": []}, headers=_auth("read-key"))
        assert forbidden.status_code == 403, forbidden.text
        assert set(forbidden.json()) == {"error"}
        scored = [
            http.post(predict, json={"inputs": "not an object"}, headers=_auth("predict-key")),
            http.post(predict, json={"inputs": {}}, headers=_auth("predict-key")),
            http.post(infer, json={"inputs": []}, headers=_auth("predict-key")),
        ]
        assert [a.status_code for a in scored] == [422, 404, 429], [a.text for a in scored]
        assert set(scored[2].json()) == {"error"}
        assert int(scored[2].headers["Retry-After"]) >= 1


def test_keys_rotate_from_a_file_without_a_restart(platform: Settings, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('[[keys]]\nname = "old"\nsecret = "first-key"\nscopes = ["read"]\n')
    settings = _with(platform, keys_file=keys_file)
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.get("/v1/alerts", headers=_auth("first-key")).status_code == 200
        digest = hashlib.sha256(b"second-key").hexdigest()  # the file may hold a key's digest only
        keys_file.write_text(f'[[keys]]\nname = "new"\nsha256 = "{digest}"\nscopes = ["read"]\n')
        deadline = time.monotonic() + 30
        while http.get("/v1/alerts", headers=_auth("first-key")).status_code != 401:
            assert time.monotonic() < deadline, "the old key still works"
            time.sleep(0.2)
        assert http.get("/v1/alerts", headers=_auth("second-key")).status_code == 200
        keys_file.write_text("[[keys]]\nname = 'broken'\n")  # no secret: refused, the keys in use stay
        time.sleep(1.5)
        assert http.get("/v1/alerts", headers=_auth("second-key")).status_code == 200


def test_https_when_a_certificate_is_configured(platform: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    settings = _with(platform, tls_certfile=cert, tls_keyfile=key, token="secret-token")
    with BackgroundGateway(settings) as gateway:
        assert gateway.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=gateway.url, timeout=30, verify=trusted) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/alerts", headers=_auth("secret-token")).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(gateway.url.replace("https://", "http://") + "/healthz", timeout=5)
