"""Deterministic contract records for the benchmarks, sized by their encoded JSON."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import numpy as np

from inferstream.schemas import Event, codec_for

_SEED = 20260101


def _corpus(rng: random.Random, chars: int) -> str:
    # Text that compresses like prose (a few thousand distinct words), not like one repeated string.
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    vocabulary = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(4000)]
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(vocabulary)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _timestamp(index: int) -> str:
    # Fixed width so every record's JSON overhead is the same: microseconds never 0 (pydantic
    # leaves out a zero fraction), always Z.
    seconds, micros = divmod(index * 1_000 + 123, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"2026-01-01T{hour % 24:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"


def events(count: int, size: int) -> list[dict[str, Any]]:
    """``count`` Event dicts (id, type, event_time, source, text) whose encoded value is ``size`` bytes."""
    rng = random.Random(_SEED + size)
    codec = codec_for(Event)
    template = {"id": "e000000000", "type": "review", "event_time": _timestamp(0), "source": "bench", "text": ""}
    overhead = len(codec.encode(codec.validate(template)))
    text_len = size - overhead
    if text_len < 1:
        raise ValueError(f"an event's JSON is at least {overhead + 1} bytes; {size} is too small")
    corpus = _corpus(rng, max(4 * 1024 * 1024, 64 * text_len))
    last = len(corpus) - text_len
    return [
        {
            "id": f"e{i:09d}",
            "type": "review",
            "event_time": _timestamp(i),
            "source": "bench",
            "text": corpus[(start := rng.randrange(last)) : start + text_len],
        }
        for i in range(count)
    ]


def predictions(count: int) -> list[dict[str, Any]]:
    """``count`` Prediction dicts of a tabular classifier (features in, label and probabilities out)."""
    rng = random.Random(_SEED + 1)
    records = []
    for i in range(count):
        p = rng.random()
        records.append(
            {
                "request_id": f"r{i:09d}",
                "event_time": _timestamp(i),
                "model": "fraud",
                "version": "v3",
                "inputs": {
                    "amount": round(rng.uniform(1, 5000), 2),
                    "country": rng.choice(["DE", "FR", "US", "JP", "BR"]),
                    "card_age_days": rng.randrange(3000),
                    "is_online": rng.random() < 0.5,
                },
                "outputs": {"label": "fraud" if p > 0.9 else "ok", "probabilities": [round(1 - p, 6), round(p, 6)]},
                "latency": {"queue_ms": rng.uniform(0, 5), "compute_ms": rng.uniform(0.1, 3), "total_ms": 12.5},
                "predicted_at": _timestamp(i + 7),
                "source_event_id": f"e{i:09d}",
            }
        )
    return records


def embeddings(count: int, dims: int = 384) -> list[dict[str, Any]]:
    """``count`` Embedding dicts with a ``dims``-dimensional float32 vector as base64 (the wire form)."""
    generator = np.random.default_rng(_SEED + dims)
    vectors = generator.standard_normal((count, dims), dtype=np.float32)
    return [
        {
            "id": f"e{i:09d}",
            "event_time": _timestamp(i),
            "model": "minilm",
            "version": "v1",
            "vector": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode("ascii"),
            "text": "a short review text that was embedded",
        }
        for i in range(count)
    ]


def fitting_texts(texts: list[str], embedder: Path, count: int) -> list[str]:
    """The first ``count`` texts the embedder takes whole (the demo corpus has a few over its max_length).

    A longer text is refused by the worker (dead-lettered, with the reason), so neither
    side of a comparison would embed it.
    """
    from tokenizers import Tokenizer

    from inferstream.serving.config import ModelConfig

    tokenizer = Tokenizer.from_file(str(embedder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    limit = ModelConfig.load(embedder / "model.toml").preprocessing.max_length  # type: ignore[union-attr]
    return [text for text in texts if len(tokenizer.encode(text).ids) <= limit][:count]
