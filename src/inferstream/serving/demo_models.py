"""Demo models built locally and reproducibly, with no model hub.

``breast-cancer`` v1: a scaled logistic regression on scikit-learn's bundled
breast cancer data set, converted with skl2onnx. Same inputs, same bytes: a
second build gives files with the same sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from inferstream.errors import ModelError

TABULAR_NAME = "breast-cancer"
TABULAR_VERSION = "1"
_OPSET = 17


@dataclass(frozen=True, slots=True)
class BuiltFile:
    """A file a build wrote, with its sha256."""

    path: Path
    sha256: str
    size: int


def _write(path: Path, data: bytes) -> BuiltFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
    return BuiltFile(path, hashlib.sha256(data).hexdigest(), len(data))


def feature_name(raw: str) -> str:
    """A data set column name as a record field (``mean radius`` → ``mean_radius``)."""
    return raw.strip().replace(" ", "_")


def build_tabular(root: Path) -> list[BuiltFile]:
    """Train and convert the tabular classifier into ``root/breast-cancer/1``."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.datasets import load_breast_cancer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise ModelError(
            f"building the demo models needs the `models` extra (pip install 'inferstream[models]'): {exc}"
        ) from None

    data = load_breast_cancer()
    features = [feature_name(n) for n in data.feature_names]
    x = data.data.astype("float32")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipeline.fit(x, data.target)
    onnx_model = to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=_OPSET,
    )
    _rename_outputs(onnx_model, {"output_label": "label", "output_probability": "probabilities"})
    onnx_model.producer_name = "inferstream build-demo"
    onnx_model.producer_version = ""
    onnx_model.doc_string = ""
    directory = root / TABULAR_NAME / TABULAR_VERSION
    labels = [str(n) for n in data.target_names]
    toml = f'''# Built by `inferstream models build-demo`: a scaled logistic regression on
# scikit-learn's breast cancer data set, converted with skl2onnx (opset {_OPSET}).
name = "{TABULAR_NAME}"
version = "{TABULAR_VERSION}"
kind = "classifier"
description = "Breast cancer diagnosis (malignant/benign) from 30 cell nucleus measurements"
output_topic = "predictions"

[preprocessing]
type = "tabular"
features = {json.dumps(features)}
allow_nan = false

[[inputs]]
name = "input"
source = "features"
dtype = "float32"
shape = [-1, {len(features)}]

[outputs]
label = "label"
probabilities = "probabilities"
labels = {json.dumps(labels)}

[batching]
max_batch_size = 256
max_queue_delay_ms = 5

[runtime]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
allow_cpu_fallback = true
'''
    return [
        _write(directory / "model.onnx", onnx_model.SerializeToString()),
        _write(directory / "model.toml", toml.encode()),
    ]


def _rename_outputs(model: object, names: dict[str, str]) -> None:
    graph = model.graph  # type: ignore[attr-defined]
    for output in graph.output:
        if output.name in names:
            old, new = output.name, names[output.name]
            output.name = new
            for node in graph.node:
                node.output[:] = [new if o == old else o for o in node.output]


def build_demo_models(root: Path) -> list[BuiltFile]:
    """Build every demo model into ``root``; returns the files with their sha256."""
    return build_tabular(root)
