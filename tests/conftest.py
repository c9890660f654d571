"""Fixtures every test folder shares."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferstream.serving.demo_models import build_demo_models


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, built once a session; tests copy what they change (a module may define its own)."""
    root = tmp_path_factory.mktemp("models")
    build_demo_models(root)
    return root


@pytest.fixture
def exporter() -> Iterator[Any]:
    """An in-memory span exporter installed as the process's tracer provider for the test."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from inferstream import tracing

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory
    tracing.install(None)
