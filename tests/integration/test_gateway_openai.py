"""The gateway's OpenAI-compatible embeddings, called with the official ``openai`` package, against a real embedder."""

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from inferstream import Client, Settings
from inferstream.config import GatewaySettings
from inferstream.gateway import BackgroundGateway
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import set_route
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread

TOKEN = "openai-test-token"
TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by eight percent.",
    "Kafka keeps every record of a partition in order.",
]


@pytest.fixture
def models(models_dir: Path, tmp_path: Path) -> Path:
    """The demo models plus a minilm version 2 that nobody serves (the repository's highest)."""
    root = tmp_path / "models"
    shutil.copytree(models_dir, root, symlinks=True)
    second = root / EMBEDDER_NAME / "2"
    shutil.copytree(root / EMBEDDER_NAME / "1", second)
    toml = second / "model.toml"
    toml.write_text(toml.read_text().replace('version = "1"', 'version = "2"', 1))
    return root


@pytest.fixture
def served(settings: Settings, models: Path) -> Iterator[tuple[Settings, BackgroundGateway]]:
    settings = settings.model_copy(update={"models_dir": models, "gateway": GatewaySettings(token=TOKEN)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    embedder = InferenceWorker(settings, ModelRepository(models).get(EMBEDDER_NAME, "1"))
    with running_in_thread(embedder), BackgroundGateway(settings) as gateway:
        yield settings, gateway


@pytest.fixture
def closing() -> Iterator[ExitStack]:
    """Closes the openai clients a test opens (each holds a connection pool)."""
    with ExitStack() as stack:
        yield stack


def _openai(gateway: BackgroundGateway, key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=60)


def _cosine(a: object, b: object) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_embeddings_through_the_openai_client_equal_client_embed(
    served: tuple[Settings, BackgroundGateway], models: Path, closing: ExitStack
) -> None:
    settings, gateway = served
    client = closing.enter_context(_openai(gateway))
    as_base64 = client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=TEXTS)  # the client asks for base64
    as_floats = client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=TEXTS, encoding_format="float")
    one = client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=TEXTS[0], dimensions=384)
    with Client(settings) as sdk:
        direct = [sdk.embed(f"{EMBEDDER_NAME}:1", text, timeout=30).vector for text in TEXTS]
        # OpenAI calls answer the caller only: the embeddings topic (the index's input) has the SDK's three.
        topic = settings.topics.platform_topics()["embeddings"]
        written = list(sdk.subscribe(topic, from_beginning=True, idle_timeout=3))
    assert len(written) == len(TEXTS)

    for answer in (as_base64, as_floats):
        assert answer.model == f"{EMBEDDER_NAME}:1"
        assert [d.index for d in answer.data] == [0, 1, 2]
        for data, vector in zip(answer.data, direct, strict=True):
            assert len(data.embedding) == 384
            assert _cosine(data.embedding, vector) >= 0.9999
    assert _cosine(one.data[0].embedding, direct[0]) >= 0.9999
    # base64 carries the float32 bits themselves.
    np.testing.assert_array_equal(np.asarray(as_base64.data[1].embedding, dtype=np.float32), direct[1])

    tokenizer = Tokenizer.from_file(str(models / EMBEDDER_NAME / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokens = [len(tokenizer.encode(text).ids) for text in TEXTS]
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens == sum(tokens)
    assert one.usage.prompt_tokens == tokens[0]

    listed = {m.id: m for m in client.models.list()}
    assert {EMBEDDER_NAME, f"{EMBEDDER_NAME}:1", f"{EMBEDDER_NAME}:2", TABULAR_NAME, f"{TABULAR_NAME}:1"} <= set(listed)
    assert listed[f"{EMBEDDER_NAME}:1"].object == "model"
    assert listed[f"{EMBEDDER_NAME}:1"].owned_by == "inferstream"
    assert listed[f"{EMBEDDER_NAME}:1"].created > 1_600_000_000
    assert client.models.retrieve(f"{EMBEDDER_NAME}:2").id == f"{EMBEDDER_NAME}:2"


def test_a_bare_name_goes_by_its_route_else_to_the_highest_version(
    served: tuple[Settings, BackgroundGateway], closing: ExitStack
) -> None:
    settings, gateway = served
    client = closing.enter_context(_openai(gateway))
    # No route: the highest version in the repository, 2, which nobody serves (no request topic).
    with pytest.raises(openai.NotFoundError) as unserved:
        client.embeddings.create(model=EMBEDDER_NAME, input="hello")
    assert unserved.value.code == "model_not_found"
    assert f"no model {EMBEDDER_NAME}:2" in unserved.value.message
    set_route(settings, EMBEDDER_NAME, {"1": 100.0})
    routes = gateway.app.state.gateway.client.routes
    assert routes.wait_for(EMBEDDER_NAME, lambda route: route is not None, timeout=30) is not None
    routed = client.embeddings.create(model=EMBEDDER_NAME, input="hello")
    assert routed.model == f"{EMBEDDER_NAME}:1"


def test_errors_take_openais_shape(served: tuple[Settings, BackgroundGateway], closing: ExitStack) -> None:
    _settings, gateway = served
    client = closing.enter_context(_openai(gateway))
    with pytest.raises(openai.BadRequestError) as dimensions:
        client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input="hello", dimensions=128)
    assert dimensions.value.param == "dimensions"
    assert "384 dimensions" in dimensions.value.message
    body = dimensions.value.body
    assert isinstance(body, dict)
    assert body == {
        "message": f"{EMBEDDER_NAME}:1 gives vectors of 384 dimensions; it cannot shorten them to 128 "
        "(leave out `dimensions`, or give the model's own)",
        "type": "invalid_request_error",
        "param": "dimensions",
        "code": "invalid_value",
    }
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        closing.enter_context(_openai(gateway, "wrong")).models.list()
    assert unauthorized.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError, match="not an embedder"):
        client.embeddings.create(model=f"{TABULAR_NAME}:1", input="hello")
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]: text is \d+ tokens long, over max_length 256"):
        client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=["fine", "word " * 400])
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model=f"{EMBEDDER_NAME}:1", input=[[101, 2023, 102]])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="hello")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        missing_key = http.post("/v1/embeddings", json={"model": EMBEDDER_NAME, "input": "x"})
        invalid = http.post(
            "/v1/embeddings",
            json={"model": EMBEDDER_NAME, "input": "x", "encoding_format": "int8"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        schema = http.get("/openapi.json").json()
    assert missing_key.status_code == 401
    assert missing_key.json()["error"]["type"] == "authentication_error"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "encoding_format"
    assert {"/v1/embeddings", "/v1/models", "/v1/models/{model}"} <= set(schema["paths"])
