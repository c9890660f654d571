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
    # No outputs named: tritonclient asks for bytes, and BYTES come back as bytes (as from Triton).
    assert [label.decode() for label in bare.as_numpy("label")] == list(labels[:2])
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
    finally:
        client.close()
    assert bad_shape.value.status() == "400"
    assert "has shape [2, 29], expected [-1, 30]" in bad_shape.value.message()
    assert bad_datatype.value.status() == "400"
    assert "is FP32, not FP64" in bad_datatype.value.message()
    assert unknown.value.status() == "404"
    assert "no-such-model" in unknown.value.message()
    assert unauthorized.value.status() == "401"
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


def test_binary_tensors_and_compressed_bodies_as_tritonclient_sends_them(tabular: BackgroundGateway) -> None:
    rows, _ = tabular_rows()
    features = np.asarray([list(r.values()) for r in rows[:5]], dtype=np.float32)
    client = _client(tabular)
    try:
        json_out = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
        as_json = client.infer(TABULAR_NAME, [_input(features)], model_version="1", outputs=json_out, headers=_auth())
        binary = triton.InferInput("input", list(features.shape), "FP32")
        binary.set_data_from_numpy(features)  # tritonclient's default: the tensor's bytes after the JSON
        # No outputs named: tritonclient asks for every output as bytes (binary_data_output).
        as_bytes = client.infer(TABULAR_NAME, [binary], model_version="1", headers=_auth())
        mixed = client.infer(
            TABULAR_NAME,
            [binary],
            outputs=[
                triton.InferRequestedOutput("label", binary_data=False),
                triton.InferRequestedOutput("probabilities", binary_data=True),
            ],
            headers=_auth(),
            request_compression_algorithm="gzip",
        )
        deflated = client.infer(TABULAR_NAME, [binary], headers=_auth(), request_compression_algorithm="deflate")
    finally:
        client.close()
    labels = list(as_json.as_numpy("label"))
    assert list(mixed.as_numpy("label")) == labels  # asked for as JSON: str
    for result in (as_bytes, deflated):  # as bytes: BYTES elements come back as bytes
        assert [label.decode() for label in result.as_numpy("label")] == labels
    for result in (as_bytes, mixed, deflated):
        np.testing.assert_array_equal(result.as_numpy("probabilities"), as_json.as_numpy("probabilities"))
    outputs = {o["name"]: o for o in as_bytes.get_response()["outputs"]}
    assert outputs["probabilities"]["parameters"] == {"binary_data_size": 5 * 2 * 4}
    assert "data" not in outputs["probabilities"]
    mixed_outputs = {o["name"]: o for o in mixed.get_response()["outputs"]}
    assert "data" in mixed_outputs["label"]
    assert "data" not in mixed_outputs["probabilities"]

    url = f"{tabular.url}/v2/models/{TABULAR_NAME}/versions/1/infer"
    head = b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","parameters":{"binary_data_size":120}}]}'
    with httpx.Client(headers=_auth(), timeout=30) as http:
        short = http.post(url, content=head + bytes(100), headers={"Inference-Header-Content-Length": str(len(head))})
        past = http.post(url, content=head + bytes(120), headers={"Inference-Header-Content-Length": "99999"})
        not_gzip = http.post(url, content=b"{}", headers={"Content-Encoding": "gzip"})
        brotli = http.post(url, content=b"{}", headers={"Content-Encoding": "br"})
        no_token = httpx.post(url, content=head + bytes(120), headers={"Inference-Header-Content-Length": "1"})
    for response in (short, past, not_gzip, brotli):
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
    assert "binary_data_size 120, but 100 bytes follow" in short.json()["error"]
    assert "Inference-Header-Content-Length is '99999'" in past.json()["error"]
    assert "not valid gzip" in not_gzip.json()["error"]
    assert "'br' is not served" in brotli.json()["error"]
    assert no_token.status_code == 401  # the key is checked before the body is judged


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
            as_bytes = triton.InferInput("text", [2], "BYTES")
            as_bytes.set_data_from_numpy(np.asarray(texts, dtype=object))  # length-prefixed elements
            binary = client.infer(EMBEDDER_NAME, [as_bytes], model_version="1", headers=_auth())
        finally:
            client.close()
        with Client(platform) as sdk:
            direct = np.stack([sdk.embed(f"{EMBEDDER_NAME}:1", t, timeout=30).vector for t in texts])
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    np.testing.assert_array_equal(result.as_numpy("embedding"), direct)
    np.testing.assert_array_equal(binary.as_numpy("embedding"), direct)
