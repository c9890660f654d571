import base64
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from inferstream.config import Settings
from inferstream.errors import ModelError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import InferenceRequest, Prediction
from inferstream.serving.chain import validate_chain
from inferstream.serving.chain_link import chain_links
from inferstream.serving.config import ModelConfig
from inferstream.serving.demo_models import (
    CHAIN_NAME,
    EMBEDDER_NAME,
    TABULAR_NAME,
    TOPIC_NAME,
    build_demo_models,
)
from inferstream.serving.preprocess import VectorPreprocessor
from inferstream.serving.repository import ModelRepository

CHAIN = """name = "{name}"
version = "1"
kind = "chain"

[[steps]]
model = "minilm"
version = "1"
{first_inputs}
[[steps]]
model = "{second}"
version = "1"
inputs = {inputs}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("models")
    build_demo_models(root)
    return ModelRepository(root)


def _repository(demo: ModelRepository, tmp_path: Path, chain: str, topic_toml: tuple[str, str] | None = None) -> Path:
    """Model configs of the demo (no ONNX files: loading a chain reads TOML only) and one chain.toml."""
    for name in (EMBEDDER_NAME, TOPIC_NAME, TABULAR_NAME):
        target = tmp_path / name / "1"
        target.mkdir(parents=True)
        text = (demo.get(name).directory / "model.toml").read_text()
        if name == TOPIC_NAME and topic_toml is not None:
            assert topic_toml[0] in text
            text = text.replace(*topic_toml)
        (target / "model.toml").write_text(text)
    directory = tmp_path / "my-chain" / "1"
    directory.mkdir(parents=True)
    (directory / "chain.toml").write_text(chain)
    return tmp_path


def _chain(second: str = TOPIC_NAME, inputs: str = '{ embedding = "embedding" }', first_inputs: str = "") -> str:
    return CHAIN.format(name="my-chain", second=second, inputs=inputs, first_inputs=first_inputs)


def test_demo_chain_is_listed_and_its_steps_fit(demo: ModelRepository) -> None:
    assert demo.chain_names() == [CHAIN_NAME]
    assert CHAIN_NAME not in demo.names()  # a chain is not a model
    assert demo.is_chain(f"{CHAIN_NAME}:1")
    assert not demo.is_chain(EMBEDDER_NAME)
    chain = demo.resolve_chain(CHAIN_NAME)
    assert [s.config.ref for s in chain.steps] == [f"{EMBEDDER_NAME}:1", f"{TOPIC_NAME}:1"]
    validate_chain(chain)  # loads both ONNX models, runs a dummy batch each, measures the vector width


def test_links_name_each_steps_topic_and_group(demo: ModelRepository) -> None:
    settings = Settings(topics={"prefix": "p."})
    first, second = chain_links(settings, demo.resolve_chain(CHAIN_NAME))
    # The chain's own request topic first, so Client.predict and routes work as for a model.
    assert first.input_topic == settings.topics.request_topic(CHAIN_NAME, "1")
    assert first.next_topic == second.input_topic == f"p.requests.{CHAIN_NAME}.1.step2"
    assert (first.group_id, second.group_id) == (f"p.serve-{CHAIN_NAME}-1-step1", f"p.serve-{CHAIN_NAME}-1-step2")
    assert second.last
    assert second.next_topic is None
    assert dict(first.next_inputs) == {"embedding": "embedding"}


def test_outputs_carry_the_request_through_and_list_the_steps(demo: ModelRepository) -> None:
    first, second = chain_links(Settings(), demo.resolve_chain(CHAIN_NAME))
    start = datetime.now(UTC) - timedelta(milliseconds=50)
    request = InferenceRequest(
        request_id="r1",
        event_time=start,
        model=CHAIN_NAME,
        version="1",
        inputs={"text": "rain tomorrow"},
        reply_to="p.replies.c1",
        deadline=start + timedelta(seconds=10),
        source_event_id="e1",
        attributes={"tenant": "a"},
    )
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    middle = codec_for(InferenceRequest).decode(
        first.output(request, {"embedding": vector}, 1.0, 2.0, start + timedelta(milliseconds=20), LINEAGE)
    )
    assert (middle.request_id, middle.reply_to, middle.deadline) == ("r1", "p.replies.c1", request.deadline)
    assert (middle.source_event_id, middle.attributes, middle.model) == ("e1", {"tenant": "a"}, CHAIN_NAME)
    assert middle.inputs["text"] == "rain tomorrow"
    assert isinstance(middle.inputs["embedding"], str)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(middle.inputs["embedding"]), "<f4"), vector)
    assert [(s.model, s.version) for s in middle.chain] == [(EMBEDDER_NAME, "1")]
    assert middle.chain[0].latency_ms == pytest.approx(20.0)  # from the event time to its output

    outputs = {"label": "weather", "probabilities": {"weather": 0.9, "sports": 0.1}}
    prediction = codec_for(Prediction).decode(
        second.output(middle, outputs, 1.0, 2.0, start + timedelta(milliseconds=50))
    )
    assert (prediction.model, prediction.version, prediction.outputs["label"]) == (CHAIN_NAME, "1", "weather")
    assert prediction.inputs == {"text": "rain tomorrow"}  # the chain's inputs, not the vector added on the way
    assert [(s.model, s.version) for s in prediction.chain] == [(EMBEDDER_NAME, "1"), (TOPIC_NAME, "1")]
    assert sum(s.latency_ms for s in prediction.chain) == pytest.approx(prediction.latency.total_ms)
    assert prediction.attributes == {"tenant": "a"}
    # An imported step's lineage stays with its step to the end; the chain's own version has none.
    assert [s.lineage and s.lineage.registered_version for s in prediction.chain] == ["7", None]
    assert prediction.lineage is None


LINEAGE = {"uri": "models:/minilm/7", "registered_model": "minilm", "registered_version": "7", "sha256": "f" * 64}


@pytest.mark.parametrize(
    ("chain", "topic_toml", "message"),
    [
        (_chain(second="nope"), None, r"chain.toml: steps.1 \(nope:1\): no model 'nope'"),
        (
            _chain(),
            ("384", "128"),
            r"steps.1 \(text-topic:1\): input 'embedding' takes a 128-d vector, but minilm:1's 'embedding' is a 384-d",
        ),
        (_chain(inputs='{ embedding = "vector" }'), None, r"fed from 'vector', which minilm:1 does not give"),
        (_chain(inputs="{}"), None, r"reads embedding, which nothing feeds: add inputs = \{ embedding = \"embedding\""),
        (_chain(inputs='{ x = "embedding" }'), None, r"has no input 'x' \(it reads embedding\)"),
        (
            _chain(second=TABULAR_NAME, inputs='{ mean_radius = "embedding" }'),
            None,
            r"'mean_radius' takes a number, but",
        ),
        (_chain(second=EMBEDDER_NAME, inputs='{ text = "embedding" }'), None, r"takes a text, but"),
        (_chain(first_inputs='inputs = { text = "x" }'), None, r"steps.0.inputs: the first step takes"),
        (_chain().replace('"my-chain"', '"other"'), None, r"says other:1, but lies in my-chain/1"),
    ],
    ids=["missing-step", "dims", "unknown-output", "unfed-input", "unknown-input", "tabular", "kinds", "first", "name"],
)
def test_chain_config_errors_name_the_file_the_step_and_the_fix(
    demo: ModelRepository, tmp_path: Path, chain: str, topic_toml: tuple[str, str] | None, message: str
) -> None:
    root = _repository(demo, tmp_path, chain, topic_toml)
    with pytest.raises(ModelError, match=message):
        ModelRepository(root).get_chain("my-chain")


def test_a_chain_must_end_in_a_predictor(demo: ModelRepository, tmp_path: Path) -> None:
    chain = 'name = "my-chain"\nversion = "1"\n[[steps]]\nmodel = "minilm"\nversion = "1"\n'
    with pytest.raises(ModelError, match="the last step minilm:1 is an embedder"):
        ModelRepository(_repository(demo, tmp_path, chain)).get_chain("my-chain")


def test_validate_measures_the_real_vector_width(demo: ModelRepository, tmp_path: Path) -> None:
    # minilm's model.toml no longer declares its width: only the dummy batch shows 384 ≠ 128.
    root = tmp_path / "models"
    shutil.copytree(demo.root, root)
    embedder = root / EMBEDDER_NAME / "1" / "model.toml"
    embedder.write_text(embedder.read_text().replace("dims = 384\n", ""))
    topic = root / TOPIC_NAME / "1" / "model.toml"
    topic.write_text(topic.read_text().replace("dims = 384", "dims = 128").replace("[-1, 384]", "[-1, 128]"))
    chain = ModelRepository(root).get_chain(CHAIN_NAME)  # nothing declared contradicts
    with pytest.raises(ModelError, match=r"steps\.1 \(text-topic:1\) input 'embedding' takes a 128-d vector"):
        validate_chain(chain)


def test_vector_preprocessing_feeds_vectors_and_refuses_the_rest(demo: ModelRepository) -> None:
    config: ModelConfig = demo.get(TOPIC_NAME).config
    vector = np.arange(384, dtype=np.float32)
    inputs = [
        {"embedding": base64.b64encode(vector.astype("<f4").tobytes()).decode()},
        {"embedding": vector.tolist()},
        {},
        {"embedding": [1.0, 2.0]},
        {"embedding": "not base64!"},
        {"embedding": [float("nan")] * 384},
        {"embedding": {"a": 1}},
    ]
    # Built without validation: the JSON policy keeps NaN off topics, the preprocessor refuses it anyway.
    requests = [
        InferenceRequest.model_construct(request_id=str(i), model="m", version="1", inputs=x)
        for i, x in enumerate(inputs)
    ]
    prepared = VectorPreprocessor(config).prepare(requests)
    assert prepared.positions == [0, 1]
    np.testing.assert_array_equal(prepared.feeds["embedding"], np.stack([vector, vector]))
    assert prepared.errors == {
        2: "input 'embedding': is missing",
        3: "input 'embedding': has 2 values, not 384",
        4: "input 'embedding': is not base64 of little-endian float32 values",
        5: "input 'embedding' holds NaN or infinite values (allow_nan is off)",
        6: "input 'embedding': is dict, not a vector (base64 float32 or a list of numbers)",
    }


def test_models_cli_lists_shows_and_validates_chains(demo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from inferstream.cli import app

    monkeypatch.setenv("INFERSTREAM_MODELS_DIR", str(demo.root))
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"{CHAIN_NAME}:1" in listed.output
    assert f"{EMBEDDER_NAME}:1 → {TOPIC_NAME}:1" in listed.output
    shown = runner.invoke(app, ["models", "show", CHAIN_NAME])
    assert shown.exit_code == 0, shown.output
    assert '"kind": "chain"' in shown.stdout
    validated = runner.invoke(app, ["models", "validate", f"{CHAIN_NAME}:1"])
    assert validated.exit_code == 0, validated.output
    assert f"ok {CHAIN_NAME}:1 (chain)" in validated.output
