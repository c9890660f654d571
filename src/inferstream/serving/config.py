"""``model.toml``: how a model version in the repository is fed, run and read.

::

    models/<name>/<version>/model.onnx
    models/<name>/<version>/model.toml
    models/<name>/<version>/tokenizer.json      (text models)
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferstream.errors import ModelError

T = TypeVar("T", bound=BaseModel)

#: ONNX Runtime's names for the providers the platform knows about, GPU first.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"

Dtype = Literal["float32", "float64", "int64", "int32"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TabularPreprocessing(_Part):
    """A feature vector from named fields of the request's inputs, in this order."""

    type: Literal["tabular"] = "tabular"
    features: list[str] = Field(min_length=1)
    allow_nan: bool = Field(default=False, description="Accept NaN feature values (else: dead letter).")


class TextPreprocessing(_Part):
    """Token ids from one text field, with a Hugging Face ``tokenizer.json``."""

    type: Literal["text"] = "text"
    field: str = "text"
    tokenizer: str = "tokenizer.json"
    max_length: int = Field(default=256, ge=1)
    truncate: bool = Field(default=False, description="Cut longer texts (else: dead letter).")


class VectorPreprocessing(_Part):
    """One float vector from one field (base64 of little-endian float32, or a list of numbers).

    What a chain's classifier over embeddings takes: the previous step's vector.
    """

    type: Literal["vector"] = "vector"
    field: str = "embedding"
    dims: int = Field(ge=1, description="Length of the vector.")
    allow_nan: bool = Field(default=False, description="Accept NaN values (else: dead letter).")


class InputSpec(_Part):
    """One ONNX graph input and what feeds it."""

    name: str
    source: Literal["features", "input_ids", "attention_mask", "token_type_ids"]
    dtype: Dtype = "float32"
    shape: list[int] = Field(description="-1 for a dynamic axis (the batch, the sequence).")


class OutputSpec(_Part):
    """Which ONNX outputs become which prediction outputs."""

    label: str | None = Field(default=None, description="Graph output holding the predicted class.")
    probabilities: str | None = Field(default=None, description="Graph output holding class probabilities.")
    labels: list[str] | None = Field(default=None, description="Class names, by index.")
    score: str | None = Field(default=None, description="Graph output of a regressor.")
    embedding: str | None = Field(default=None, description="Graph output of an embedder.")
    pooling: Literal["none", "mean", "cls"] = Field(default="none", description="How token states become one vector.")
    normalize: bool = Field(default=False, description="L2-normalise embeddings.")
    dims: int | None = Field(default=None, ge=1, description="Embedding dimensions.")

    def graph_outputs(self) -> list[str]:
        """The graph outputs the worker reads."""
        return [n for n in (self.label, self.probabilities, self.score, self.embedding) if n]


class Batching(_Part):
    """When a worker closes a batch: at ``max_batch_size``, or when the oldest waited ``max_queue_delay_ms``.

    With no delay (the default, as Triton's dynamic batcher) a batch is what is queued
    when the model is free: a lone request runs at once, and under load batches grow
    by themselves while the model runs the one before. A delay trades latency for
    fuller batches (a GPU serving a trickle).
    """

    max_batch_size: int = Field(default=64, ge=1)
    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    queue_size: int = Field(default=4096, ge=1, description="Requests held in memory before consuming pauses.")
    length_buckets: int = Field(
        default=16,
        ge=1,
        description="Text models: up to this many model batches are taken together and regrouped by token length.",
    )
    max_batch_tokens: int = Field(
        default=0,
        ge=0,
        description="Text models: at most this many padded tokens in a model batch (rows x its longest text), "
        "so long texts go in smaller batches: far less memory, and on CPUs often faster. 0: no limit.",
    )


class Runtime(_Part):
    """Execution providers in order of preference, and whether CPU may stand in."""

    providers: list[str] = Field(default_factory=lambda: [CPU_PROVIDER], min_length=1)
    allow_cpu_fallback: bool = False
    intra_op_threads: int = Field(default=0, ge=0, description="0: ONNX Runtime decides.")
    inter_op_threads: int = Field(default=0, ge=0)

    @property
    def wants_gpu(self) -> bool:
        """True when a GPU provider comes before the CPU in the preference list."""
        return any(p in GPU_PROVIDERS for p in self.providers)


class ModelSource(_Part):
    """Where an imported version came from (``inferstream models import``): its lineage."""

    uri: str = Field(description="The registry URI it was imported by (models:/name/version or models:/name@alias).")
    tracking_uri: str = Field(description="The MLflow tracking server or store.")
    registered_model: str
    registered_version: str
    alias: str | None = None
    run_id: str = Field(default="", description="The MLflow run that logged it.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of model.onnx as imported.")
    imported_at: datetime


class TrainingLineage(_Part):
    """How a retrained version was made (``inferstream models retrain``): its lineage."""

    source_version: str = Field(description="The version it was retrained from (its interface and estimator kind).")
    estimator: str = Field(description="The scikit-learn estimator family (logistic_regression, ...).")
    seed: int
    table: str = Field(description="The inference table it was trained from.")
    since: datetime | None = Field(default=None, description="The training window asked for: from (inclusive).")
    until: datetime | None = Field(default=None, description="... to (exclusive).")
    first_event_time: datetime = Field(description="The earliest prediction among the labelled rows used.")
    last_event_time: datetime = Field(description="The latest one.")
    rows: int = Field(ge=1, description="Labelled rows used (training + held out).")
    train_rows: int = Field(ge=1)
    holdout_rows: int = Field(ge=1)
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the features and labels, in the order used.")
    metrics: dict[str, float] = Field(description="On the held-out split.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of model.onnx as written.")
    trained_at: datetime


class ModelConfig(_Part):
    """Everything ``model.toml`` says about one model version."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    kind: Literal["classifier", "regressor", "embedder"]
    description: str = ""
    output_topic: Literal["predictions", "embeddings"] = "predictions"
    preprocessing: Annotated[
        TabularPreprocessing | TextPreprocessing | VectorPreprocessing, Field(discriminator="type")
    ]
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: OutputSpec
    batching: Batching = Batching()
    runtime: Runtime = Runtime()
    source: ModelSource | None = Field(default=None, description="Lineage of a version imported from a registry.")
    training: TrainingLineage | None = Field(default=None, description="Lineage of a retrained version.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.kind == "embedder":
            if self.outputs.embedding is None:
                raise ValueError("an embedder needs outputs.embedding")
            if self.output_topic != "embeddings":
                raise ValueError('an embedder writes to output_topic = "embeddings"')
        if self.kind == "classifier" and not (self.outputs.label or self.outputs.probabilities):
            raise ValueError("a classifier needs outputs.label or outputs.probabilities")
        if self.kind == "regressor" and self.outputs.score is None:
            raise ValueError("a regressor needs outputs.score")
        sources = {i.source for i in self.inputs}
        if isinstance(self.preprocessing, TabularPreprocessing) and sources != {"features"}:
            raise ValueError('tabular preprocessing feeds inputs with source = "features" only')
        if isinstance(self.preprocessing, TextPreprocessing) and "input_ids" not in sources:
            raise ValueError('text preprocessing needs an input with source = "input_ids"')
        if isinstance(self.preprocessing, VectorPreprocessing):
            if sources != {"features"} or len(self.inputs) != 1:
                raise ValueError('vector preprocessing feeds one input with source = "features"')
            if self.inputs[0].shape[-1] not in (-1, self.preprocessing.dims):
                raise ValueError(
                    f"input {self.inputs[0].name!r} has shape {self.inputs[0].shape}, "
                    f"but preprocessing.dims is {self.preprocessing.dims}"
                )
        return self

    @property
    def lineage(self) -> dict[str, str] | None:
        """What every output of this version says of where it came from (the contracts' ``lineage``).

        The registry entry, run and file hash of an imported version; None for one
        put in the repository by hand. The tracking URI stays out: it may hold credentials.
        """
        if self.source is None:
            return None
        source = self.source
        return {
            "uri": source.uri,
            "registered_model": source.registered_model,
            "registered_version": source.registered_version,
            "run_id": source.run_id,
            "sha256": source.sha256,
        }

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read and check a ``model.toml``; errors name the file and the field."""
        return load_toml(cls, path)


def load_toml(kind: type[T], path: Path) -> T:
    """A TOML file read into a pydantic model; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{path}: not valid TOML: {exc}") from None
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<file>'}: {e['msg']}" for e in exc.errors())
        raise ModelError(f"{path}: {problems}") from None
