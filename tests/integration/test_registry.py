"""`inferstream models import` from a real MLflow registry (a sqlite store), then served through Kafka."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferstream import Client, Settings
from inferstream.serving.config import ModelConfig
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import cli_env, running_in_thread


@pytest.fixture
def registry(tmp_path: Path, models_dir: Path) -> tuple[str, Path]:
    """A sqlite MLflow registry holding the demo classifier as `bc` (alias champion) and a misfit."""
    import mlflow
    import mlflow.onnx
    from mlflow import MlflowClient
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("import-test", artifact_location=(tmp_path / "artifacts").as_uri())
    classifier = onnx.load(str(models_dir / TABULAR_NAME / "1" / "model.onnx"))
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    misfit = to_onnx(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), x[:1], target_opset=17)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.onnx.log_model(classifier, name="model", registered_model_name="bc", save_as_external_data=False)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.onnx.log_model(misfit, name="model", registered_model_name="four-features", save_as_external_data=False)
    MlflowClient(tracking_uri=uri).set_registered_model_alias("bc", "champion", "1")
    repository = tmp_path / "models"
    shutil.copytree(models_dir / TABULAR_NAME / "1", repository / TABULAR_NAME / "1")
    return uri, repository


def _import(settings: Settings, repository: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(settings, repository), "INFERSTREAM_REGISTRY__TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "inferstream", "models", "import", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_import_by_alias_keeps_lineage_validates_and_serves(settings: Settings, registry: tuple[str, Path]) -> None:
    uri, repository = registry
    result = _import(settings, repository, uri, "models:/bc@champion", "--name", TABULAR_NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    directory = repository / TABULAR_NAME / "2"
    source = tomllib.loads((directory / "model.toml").read_text())["source"]
    assert source["uri"] == "models:/bc@champion"
    assert (source["registered_model"], source["registered_version"], source["alias"]) == ("bc", "1", "champion")
    assert source["run_id"]
    assert source["tracking_uri"] == uri
    assert source["sha256"] == hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
    imported = ModelConfig.load(directory / "model.toml")
    first = ModelConfig.load(repository / TABULAR_NAME / "1" / "model.toml")
    assert (imported.preprocessing, imported.inputs, imported.outputs) == (
        first.preprocessing,
        first.inputs,
        first.outputs,
    )
    assert "validated" in result.stdout + result.stderr
    # The new version serves through Kafka like any other.
    settings = settings.model_copy(update={"models_dir": repository})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    version = ModelRepository(repository).get(TABULAR_NAME, "2")
    rows, target = tabular_rows()
    with running_in_thread(InferenceWorker(settings, version)), Client(settings) as client:
        prediction = client.predict(f"{TABULAR_NAME}:2", rows[0], timeout=60)
    assert prediction.outputs["label"] == ("benign" if target[0] else "malignant")
    # Every prediction of the version says where it came from (the tracking URI stays out).
    assert prediction.lineage is not None
    assert prediction.lineage.model_dump() == {
        "uri": "models:/bc@champion",
        "registered_model": "bc",
        "registered_version": "1",
        "run_id": source["run_id"],
        "sha256": source["sha256"],
    }


def test_a_model_that_does_not_fit_is_refused_and_nothing_is_left(
    settings: Settings, registry: tuple[str, Path]
) -> None:
    uri, repository = registry
    before = sorted(p.name for p in (repository / TABULAR_NAME).iterdir())
    result = _import(settings, repository, uri, "models:/four-features/1", "--name", TABULAR_NAME)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "does not fit" in output, output
    assert "Traceback" not in output, output
    assert sorted(p.name for p in (repository / TABULAR_NAME).iterdir()) == before
    missing = _import(settings, repository, uri, "models:/bc@nobody", "--name", TABULAR_NAME)
    assert missing.returncode != 0
    assert "nobody" in missing.stdout + missing.stderr
    new_name = _import(settings, repository, uri, "models:/bc/1")
    assert new_name.returncode != 0
    assert "--config" in new_name.stdout + new_name.stderr


def test_watch_imports_the_alias_shadows_it_then_routes_a_canary(
    settings: Settings, registry: tuple[str, Path]
) -> None:
    import time

    import mlflow
    from mlflow import MlflowClient

    from inferstream.config import RegistrySettings
    from inferstream.serving.registry_watch import RegistryWatch
    from inferstream.serving.routes import read_routes, set_route

    uri, repository = registry
    settings = settings.model_copy(update={"models_dir": repository, "registry": RegistrySettings(tracking_uri=uri)})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    set_route(settings, TABULAR_NAME, {"1": 100})
    rows, _ = tabular_rows()
    primary = InferenceWorker(settings, ModelRepository(repository).get(TABULAR_NAME, "1"))
    watch = RegistryWatch(
        settings, "models:/bc@champion", name=TABULAR_NAME, canary=20, shadow_predictions=30, poll_s=1
    )

    def wait_for(kind: str, count: int = 1) -> None:
        deadline = time.monotonic() + 180
        while sum(e.kind == kind for e in watch.events) < count:
            assert time.monotonic() < deadline, watch.events
            time.sleep(0.2)

    with running_in_thread(primary), running_in_thread(watch), Client(settings) as client:
        wait_for("shadowing")
        deadline = time.monotonic() + 180
        while not any(e.kind == "routed" for e in watch.events):  # routed traffic feeds the shadow
            assert time.monotonic() < deadline, watch.events
            client.predict(TABULAR_NAME, rows[0], timeout=60)
        route = read_routes(settings)[TABULAR_NAME]
        assert {v.version: v.weight for v in route.versions} == {"1": 80, "2": 20}
        assert client.predict(f"{TABULAR_NAME}:2", rows[1], timeout=60).version == "2"
        # The alias moves to a model that does not fit: refused, the route stays.
        misfit = MlflowClient(tracking_uri=uri).get_model_version("four-features", "1")
        mlflow.set_tracking_uri(uri)
        registered = mlflow.register_model(misfit.source, "bc")
        MlflowClient(tracking_uri=uri).set_registered_model_alias("bc", "champion", registered.version)
        wait_for("refused")
        assert "does not fit" in next(e.detail for e in watch.events if e.kind == "refused")
        assert {v.version: v.weight for v in read_routes(settings)[TABULAR_NAME].versions} == {"1": 80, "2": 20}
    assert [e.kind for e in watch.events] == ["imported", "shadowing", "routed", "refused"]
