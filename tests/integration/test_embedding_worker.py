"""The embedder served from its request topic: texts in, unit vectors on `embeddings`."""

import threading
from pathlib import Path

import numpy as np

from inferstream import Client, Settings
from inferstream.demo import sample_texts
from inferstream.schemas import Embedding
from inferstream.serving.demo_models import EMBEDDER_NAME, build_demo_models
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker


def test_texts_become_embeddings_and_bad_texts_dead_letters(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_demo_models(models)
    settings = settings.model_copy(update={"models_dir": models})
    version = ModelRepository(models).resolve(EMBEDDER_NAME)
    worker = InferenceWorker(settings, version)
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(60)
    texts = [
        *sample_texts()[:60],
        "The cat sat on the mat.",
        "A cat was sitting on the mat.",
        "Quarterly revenue grew by eight percent.",
    ]
    requests = [
        {"request_id": f"q{i}", "model": EMBEDDER_NAME, "version": "1", "document_id": f"doc-{i}", "text": text}
        for i, text in enumerate(texts)
    ]
    bad = [
        {"request_id": "long", "model": EMBEDDER_NAME, "version": "1", "document_id": "long", "text": "word " * 400},
        {"request_id": "blank", "model": EMBEDDER_NAME, "version": "1", "document_id": "blank", "text": "   "},
    ]
    try:
        with Client(settings) as client:
            topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
            assert client.produce(topic, requests[:30] + bad + requests[30:], schema="embedding-request").produced == 65
            received = [
                m.record
                for m in client.subscribe("embeddings", from_beginning=True, max_records=len(texts), idle_timeout=90)
                if isinstance(m.record, Embedding)
            ]
            letters = {letter.original_key: letter for letter in client.dead_letters()}
    finally:
        worker.stop()
        thread.join(60)
    by_id = {e.id: e for e in received}
    assert sorted(by_id) == sorted(f"doc-{i}" for i in range(len(texts)))
    vectors = np.stack([by_id[f"doc-{i}"].vector for i in range(len(texts))])
    assert vectors.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    cat, cat2, revenue = vectors[-3], vectors[-2], vectors[-1]
    assert float(cat @ cat2) > 0.6 > 0.25 > float(cat @ revenue)
    sample = by_id["doc-0"]
    assert (sample.model, sample.version, sample.text, sample.request_id) == (EMBEDDER_NAME, "1", texts[0], "q0")
    assert set(letters) == {b"long", b"blank"}
    assert "tokens" in letters[b"long"].error_message
    assert worker.stats.predictions + worker.stats.dead_letters == worker.stats.requests == 65


def test_embed_round_trip(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_demo_models(models)
    settings = settings.model_copy(update={"models_dir": models})
    worker = InferenceWorker(settings, ModelRepository(models).resolve(EMBEDDER_NAME))
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(60)
    try:
        with Client(settings) as client:
            first = client.embed(f"{EMBEDDER_NAME}:1", "The cat sat on the mat.", document_id="cat", timeout=30)
            second = client.embed(EMBEDDER_NAME, "A cat was sitting on the mat.", version="1", timeout=30)
            indexed = [
                m.record.id
                for m in client.subscribe("embeddings", from_beginning=True, max_records=2, idle_timeout=20)
                if isinstance(m.record, Embedding)
            ]
    finally:
        worker.stop()
        thread.join(60)
    assert first.id == "cat"
    assert first.dims == 384
    assert float(first.vector @ second.vector) > 0.6
    assert sorted(indexed) == sorted([first.id, second.id])
