"""Fixtures every test folder shares."""

from pathlib import Path

import pytest

from inferstream.serving.demo_models import build_demo_models


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, built once a session; tests copy what they change (a module may define its own)."""
    root = tmp_path_factory.mktemp("models")
    build_demo_models(root)
    return root
