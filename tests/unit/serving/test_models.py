import hashlib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from inferstream.errors import ModelError, ProviderUnavailableError
from inferstream.serving.config import ModelConfig
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, TOPIC_NAME, build_demo_models
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("models")
    build_demo_models(root)
    return ModelRepository(root)


def _edit_toml(repository: ModelRepository, tmp_path: Path, old: str, new: str) -> ModelRepository:
    source = repository.get(TABULAR_NAME).directory
    target = tmp_path / TABULAR_NAME / "1"
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes((source / "model.onnx").read_bytes())
    text = (source / "model.toml").read_text()
    assert old in text
    (target / "model.toml").write_text(text.replace(old, new))
    return ModelRepository(tmp_path)


def test_build_demo_is_reproducible(tmp_path: Path) -> None:
    first = build_demo_models(tmp_path / "a")
    second = build_demo_models(tmp_path / "b")
    assert [f.sha256 for f in first] == [f.sha256 for f in second]
    for built in first:
        assert hashlib.sha256(built.path.read_bytes()).hexdigest() == built.sha256


def test_repository_lists_and_resolves(repository: ModelRepository) -> None:
    assert repository.names() == [TABULAR_NAME, EMBEDDER_NAME, TOPIC_NAME]
    assert repository.versions(TABULAR_NAME) == ["1"]
    version = repository.resolve(f"{TABULAR_NAME}:1")
    assert version.config.kind == "classifier"
    assert repository.resolve(TABULAR_NAME).directory == version.directory
    with pytest.raises(ModelError, match="no model 'nope'"):
        repository.resolve("nope")
    with pytest.raises(ModelError, match="has no version '7'"):
        repository.resolve(f"{TABULAR_NAME}:7")


def test_validate_runs_a_dummy_batch_on_the_cpu(repository: ModelRepository) -> None:
    report = OnnxModel(repository.get(TABULAR_NAME)).validate(batch_size=3)
    assert report.providers == ["CPUExecutionProvider"]  # CUDA preferred, CPU fallback allowed
    assert report.output_shapes == {"label": (3,), "probabilities": (3, 2)}


def test_demo_classifier_is_a_real_model(repository: ModelRepository) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    model = OnnxModel(repository.get(TABULAR_NAME)).load()
    outputs = model.run({"input": data.data.astype(np.float32)})
    accuracy = float((outputs["label"] == data.target).mean())
    assert accuracy > 0.95
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_gpu_model_refuses_to_run_on_this_cpu_machine(repository: ModelRepository, tmp_path: Path) -> None:
    gpu_only = _edit_toml(repository, tmp_path, "allow_cpu_fallback = true", "allow_cpu_fallback = false")
    with pytest.raises(ProviderUnavailableError, match=r"configured for CUDAExecutionProvider.*allow_cpu_fallback"):
        OnnxModel(gpu_only.get(TABULAR_NAME)).load()


def test_silent_cpu_fallback_is_caught(
    repository: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # onnxruntime-gpu lists CUDA even where it cannot start, then quietly runs on the CPU.
    gpu_only = _edit_toml(repository, tmp_path, "allow_cpu_fallback = true", "allow_cpu_fallback = false")
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(ProviderUnavailableError, match="the session started with CPUExecutionProvider"):
        OnnxModel(gpu_only.get(TABULAR_NAME)).load()


def test_declared_inputs_are_checked_against_the_graph(repository: ModelRepository, tmp_path: Path) -> None:
    wrong = _edit_toml(repository, tmp_path, "shape = [-1, 30]", "shape = [-1, 31]")
    with pytest.raises(ModelError, match=r"axis 1 is 30 in the graph, not 31"):
        OnnxModel(wrong.get(TABULAR_NAME)).load()


def test_missing_and_corrupt_model_files(repository: ModelRepository, tmp_path: Path) -> None:
    copy = _edit_toml(repository, tmp_path, 'kind = "classifier"', 'kind = "classifier"')
    version = copy.get(TABULAR_NAME)
    version.onnx_path.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=r"cannot load .*model\.onnx"):
        OnnxModel(version).load()
    version.onnx_path.unlink()
    with pytest.raises(ModelError, match=r"model\.onnx does not exist"):
        OnnxModel(version).load()


def test_model_toml_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text(
        'name = "m"\nversion = "1"\nkind = "embedder"\n[preprocessing]\ntype = "text"\n'
        '[[inputs]]\nname = "ids"\nsource = "input_ids"\ndtype = "int64"\nshape = [-1, -1]\n[outputs]\n'
    )
    with pytest.raises(ModelError, match=r"an embedder needs outputs\.embedding"):
        ModelConfig.load(path)
    path.write_text("name = [")
    with pytest.raises(ModelError, match="not valid TOML"):
        ModelConfig.load(path)


def test_one_session_per_model_file_and_runtime(repository: ModelRepository, tmp_path: Path) -> None:
    import os

    version = repository.get(TABULAR_NAME)
    first, second = OnnxModel(version).load(), OnnxModel(repository.get(TABULAR_NAME, "1")).load()
    assert first._session is second._session  # the query embedder beside its worker: one copy of the weights
    features = np.zeros((2, 30), dtype=np.float32)
    np.testing.assert_array_equal(first.run({"input": features})["label"], second.run({"input": features})["label"])
    threaded = _edit_toml(
        repository, tmp_path / "a", "allow_cpu_fallback = true", "allow_cpu_fallback = true\nintra_op_threads = 1"
    )
    assert OnnxModel(threaded.get(TABULAR_NAME)).load()._session is not first._session  # other settings
    copy = _edit_toml(repository, tmp_path / "b", "allow_cpu_fallback = true", "allow_cpu_fallback = true")
    model = OnnxModel(copy.get(TABULAR_NAME)).load()
    assert model._session is not first._session  # another file
    stat = model.version.onnx_path.stat()
    os.utime(model.version.onnx_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert OnnxModel(copy.get(TABULAR_NAME)).load()._session is not model._session  # replaced in place: afresh
