"""The gateway's Open Inference Protocol v2 routes, called with tritonclient's HTTP client, against real workers."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from inferstream import Client, Settings
from inferstream.config import GatewaySettings
from inferstream.gateway import BackgroundGateway
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread

TOKEN = "oip-test-token"


def _auth() -> dict[str, str]:
    # A fresh dict each call: tritonclient adds its own headers to the one it is given.
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def platform(settings: Settings, models_dir: Path) -> Settings:
    settings = settings.model_copy(update={"models_dir": models_dir, "gateway": GatewaySettings(token=TOKEN)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    return settings


@pytest.fixture
def tabular(platform: Settings, models_dir: Path) -> Iterator[BackgroundGateway]:
    worker = InferenceWorker(platform, ModelRepository(models_dir).get(TABULAR_NAME, "1"))
    with running_in_thread(worker), BackgroundGateway(platform) as gateway:
        yield gateway


def _client(gateway: BackgroundGateway) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=gateway.url.removeprefix("http://"), network_timeout=60)


def _input(rows: np.ndarray, datatype: str = "FP32", shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("input", shape or list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=False)
    return tensor


def test_metadata_readiness_and_infer_equal_client_predict(platform: Settings, tabular: BackgroundGateway) -> None:
    rows, _ = tabular_rows()
    features = np.asarray([list(r.values()) for r in rows[:6]], dtype=np.float32)
    client = _client(tabular)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()  # the probes need no token
        metadata = client.get_model_metadata(TABULAR_NAME, headers=_auth())
        assert client.get_model_metadata(TABULAR_NAME, "1", headers=_auth()) == metadata
        # Ready once the worker's consumer has joined its group (a moment after the worker starts).
        deadline = time.monotonic() + 60
        while not client.is_model_ready(TABULAR_NAME, "1", headers=_auth()):
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.2)
        assert client.is_model_ready(TABULAR_NAME, headers=_auth())
        assert not client.is_model_ready(TABULAR_NAME, "9", headers=_auth())
        wanted = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
        pinned = client.infer(
            TABULAR_NAME, [_input(features)], model_version="1", outputs=wanted, headers=_auth(), request_id="r-1"
        )
        bare = client.infer(TABULAR_NAME, [_input(features[:2])], headers=_auth())  # no route: the highest version
        only_label = client.infer(TABULAR_NAME, [_input(features[:1])], outputs=wanted[:1], headers=_auth())
    finally:
        client.close()

    assert metadata["name"] == TABULAR_NAME
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]
    with Client(platform) as sdk:
        direct = [sdk.predict(f"{TABULAR_NAME}:1", row, timeout=30).outputs for row in rows[:6]]
    response = pinned.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (TABULAR_NAME, "1", "r-1")
    labels = pinned.as_numpy("label")
    probabilities = pinned.as_numpy("probabilities")
    assert labels.shape == (6,)
    assert probabilities.shape == (6, 2)
    assert list(labels) == [d["label"] for d in direct]
    expected = np.asarray([[d["probabilities"]["malignant"], d["probabilities"]["benign"]] for d in direct])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    assert list(bare.as_numpy("label")) == list(labels[:2])
    assert only_label.as_numpy("probabilities") is None
    assert list(only_label.as_numpy("label")) == list(labels[:1])


def test_bad_requests_get_the_protocols_errors(tabular: BackgroundGateway) -> None:
    rows, _ = tabular_rows()
    features = np.asarray([list(r.values()) for r in rows[:2]], dtype=np.float32)
    client = _client(tabular)
    try:
        with pytest.raises(InferenceServerException) as bad_shape:
            client.infer(TABULAR_NAME, [_input(features[:, :29])], model_version="1", headers=_auth())
        with pytest.raises(InferenceServerException) as bad_datatype:
            client.infer(TABULAR_NAME, [_input(features.astype(np.float64), "FP64")], headers=_auth())
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("no-such-model", headers=_auth())
        with pytest.raises(InferenceServerException) as unauthorized:
            client.get_model_metadata(TABULAR_NAME)
        binary = triton.InferInput("input", list(features.shape), "FP32")
        binary.set_data_from_numpy(features, binary_data=True)
        with pytest.raises(InferenceServerException) as not_json:
            client.infer(TABULAR_NAME, [binary], headers=_auth())
    finally:
        client.close()
    assert bad_shape.value.status() == "400"
    assert "has shape [2, 29], expected [-1, 30]" in bad_shape.value.message()
    assert bad_datatype.value.status() == "400"
    assert "is FP32, not FP64" in bad_datatype.value.message()
    assert unknown.value.status() == "404"
    assert "no-such-model" in unknown.value.message()
    assert unauthorized.value.status() == "401"
    assert not_json.value.status() == "400"
    assert "binary_data=False" in not_json.value.message()
    with httpx.Client(base_url=tabular.url, headers=_auth(), timeout=30) as http:
        url = f"/v2/models/{TABULAR_NAME}/versions/1/infer"
        ragged = http.post(
            url, json={"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": [[1.0], [2.0, 3.0]]}]}
        )
        strings = http.post(
            url, json={"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": ["1"] * 30}]}
        )
        wrong_name = http.post(
            url, json={"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}]}
        )
        not_json_at_all = http.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
        schema = http.get("/openapi.json").json()
    for response in (ragged, strings, wrong_name, not_json_at_all):
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
    assert "regular" in ragged.json()["error"]
    assert "must be numbers" in strings.json()["error"]
    assert "takes one input, 'input'" in wrong_name.json()["error"]
    paths = set(schema["paths"])
    assert {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}/infer",
    } <= paths


def test_texts_in_embeddings_out(platform: Settings, models_dir: Path) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by eight percent."]
    worker = InferenceWorker(platform, ModelRepository(models_dir).get(EMBEDDER_NAME, "1"))
    with running_in_thread(worker), BackgroundGateway(platform) as gateway:
        client = _client(gateway)
        try:
            metadata = client.get_model_metadata(EMBEDDER_NAME, headers=_auth())
            tensor = triton.InferInput("text", [2], "BYTES")
            tensor.set_data_from_numpy(np.asarray(texts, dtype=object), binary_data=False)
            wanted = [triton.InferRequestedOutput("embedding", binary_data=False)]
            result = client.infer(EMBEDDER_NAME, [tensor], model_version="1", outputs=wanted, headers=_auth())
        finally:
            client.close()
        with Client(platform) as sdk:
            direct = np.stack([sdk.embed(f"{EMBEDDER_NAME}:1", t, timeout=30).vector for t in texts])
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    np.testing.assert_array_equal(result.as_numpy("embedding"), direct)
