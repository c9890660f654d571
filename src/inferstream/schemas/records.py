"""The typed contract of every topic.

Each contract names itself (``schema_name``), carries a ``schema_version`` that
goes into the ``inferstream-schema`` header of every record, and says which field
is the Kafka key (``key_field``). Bump ``schema_version`` for any change that a
reader of the old records could not follow (a removed or renamed field, a new
required field, a narrower type); ``tests/unit/test_contract_compat.py`` fails
until you do.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, Strict, field_validator, model_validator

from inferstream.schemas._types import (
    Id,
    Name,
    Part,
    Record,
    Scalar,
    Timestamp,
    Vector,
    new_id,
    utcnow,
)


class Contract(Record):
    """A record that travels on a topic."""

    schema_name: ClassVar[str]
    schema_version: ClassVar[int]
    key_field: ClassVar[str]
    # The field that is this record's time (watermarks, windows, Parquet partitions).
    time_field: ClassVar[str] = "event_time"

    def key(self) -> bytes:
        """The Kafka key of this record (its id, UTF-8)."""
        value: str = getattr(self, self.key_field)
        return value.encode()


class Event(Contract):
    """Something that happened, produced by users to ``events``: a text, features, or both."""

    schema_name: ClassVar[str] = "event"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "id"

    id: Id = Field(description="Event id; the document id of its embedding and the Kafka key.")
    type: Name = Field(description="Event type; routing rules map types to models.")
    event_time: Timestamp = Field(default_factory=utcnow, description="When it happened (UTC).")
    source: str | None = Field(default=None, max_length=256, description="Where it came from.")
    text: str | None = Field(default=None, description="Text to embed and index.")
    features: dict[str, Scalar] | None = Field(default=None, description="Tabular features to score.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Free-form metadata, carried through.")

    @model_validator(mode="after")
    def _has_payload(self) -> Event:
        if self.text is None and not self.features:
            raise ValueError("an event needs `text` or `features` (or both)")
        return self


class Latency(Part):
    """Where a request's time went, in milliseconds."""

    queue_ms: float = Field(ge=0, description="Waiting in the worker's batch queue.")
    compute_ms: float = Field(ge=0, description="Running the model on the batch.")
    total_ms: float = Field(ge=0, description="From the request's event time to the output.")


class _Request(Contract):
    key_field: ClassVar[str] = "request_id"

    request_id: Id = Field(description="Request id; the Kafka key of the request and of its output.")
    event_time: Timestamp = Field(default_factory=utcnow, description="When the request was made (UTC).")
    model: Name = Field(description="Model name.")
    version: Name = Field(description="Model version the request was routed to.")
    reply_to: str | None = Field(default=None, description="Topic to send the output to as well (request/reply).")
    deadline: Timestamp | None = Field(default=None, description="Past this time the request is dead-lettered.")
    source_event_id: str | None = Field(default=None, description="The event this request was made from.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Carried through to the output.")


class InferenceRequest(_Request):
    """A request to score inputs with one model version (``requests.<model>.<version>``)."""

    schema_name: ClassVar[str] = "inference-request"
    schema_version: ClassVar[int] = 1

    inputs: dict[str, JsonValue] = Field(description="Model inputs by name (features, text, ...).")
    chain: list[ChainStep] = Field(
        default_factory=list, description="Inside a model chain: the steps already taken, first to last."
    )


class EmbeddingRequest(_Request):
    """A request to embed one text with an embedder version (``requests.<embedder>.<version>``)."""

    schema_name: ClassVar[str] = "embedding-request"
    schema_version: ClassVar[int] = 1

    document_id: Id = Field(description="Id of the document the embedding indexes (the event id).")
    text: str = Field(min_length=1, description="Text to embed.")
    index: bool = Field(
        default=True,
        description="False: the embedding answers the caller (reply_to) only; nothing goes to the embeddings "
        "topic, so nothing is indexed (a query, an OpenAI embeddings call).",
    )

    @model_validator(mode="after")
    def _answered_somewhere(self) -> EmbeddingRequest:
        if not self.index and not self.reply_to:
            raise ValueError("index = false needs reply_to: the embedding would go nowhere")
        return self


class Lineage(Part):
    """Where a model version came from: the registry entry ``inferstream models import`` took it from."""

    uri: str = Field(description="The registry URI it was imported by (models:/name/version or models:/name@alias).")
    registered_model: str = Field(description="The registered model's name in the registry.")
    registered_version: str = Field(description="The registered model version imported.")
    run_id: str = Field(default="", description="The run that logged it.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the ONNX file as imported.")


class ChainStep(Part):
    """One step of a model chain that produced a prediction."""

    model: Name
    version: Name
    latency_ms: float = Field(ge=0)
    lineage: Lineage | None = Field(default=None, description="The step's version's registry lineage, if imported.")


class Prediction(Contract):
    """A model's answer to one request, on ``predictions`` (and the request's reply-to)."""

    schema_name: ClassVar[str] = "prediction"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "request_id"

    request_id: Id = Field(description="The request's id.")
    event_time: Timestamp = Field(description="The request's event time (UTC).")
    model: Name
    version: Name
    inputs: dict[str, JsonValue] = Field(description="The request's inputs, for monitors and tables.")
    outputs: dict[str, JsonValue] = Field(description="Model outputs by name (label, probabilities, ...).")
    latency: Latency
    predicted_at: Timestamp = Field(default_factory=utcnow, description="When the output was produced (UTC).")
    shadow: bool = Field(default=False, description="True when from a shadow version (never shown to users).")
    chain: list[ChainStep] = Field(default_factory=list, description="Steps of a chain, first to last.")
    source_event_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage | None = Field(
        default=None, description="The version's registry lineage (run, registered version, sha256), if imported."
    )


#: The most rows one columnar request may carry (bulk scoring: split larger tables).
MAX_BATCH_ROWS = 65_536

#: A column of a columnar record: one scalar per row.
Column = list[Scalar]


class BatchRequestHead(_Request):
    """The fields of a columnar request besides its columns (the Arrow form's schema metadata)."""


class InferenceBatchRequest(BatchRequestHead):
    """Many rows to score with one model version as one batch (``requests.<model>.<version>``, bulk scoring).

    Two forms, told apart by the ``content-type`` header: JSON (this contract as it
    reads, ``columns`` an object of equal-length arrays keyed by the model's feature
    names) or Arrow (``application/vnd.apache.arrow.stream``: an IPC stream of one
    record batch whose columns are the features, every other field JSON text in the
    schema's ``inferstream`` metadata). The answer is one ``prediction-batch`` record,
    in the form asked.
    """

    schema_name: ClassVar[str] = "inference-batch-request"
    schema_version: ClassVar[int] = 1

    columns: dict[str, Column] = Field(
        description=f"Model inputs as columns: feature name -> one value per row (1 to {MAX_BATCH_ROWS} rows, "
        "every column the same length)."
    )

    @field_validator("columns")
    @classmethod
    def _rectangular(cls, columns: dict[str, Column]) -> dict[str, Column]:
        problem = columns_problem({name: len(values) for name, values in columns.items()})
        if problem is not None:
            raise ValueError(problem)
        return columns


def columns_problem(lengths: dict[str, int]) -> str | None:
    """What is wrong with columns of these lengths (by name), or None: not empty, not ragged, not oversized."""
    if not lengths:
        return "no columns: give at least one column of one or more values"
    first, rows = next(iter(lengths.items()))
    for name, length in lengths.items():
        if length != rows:
            return (
                f"column {name!r} has {length} values where column {first!r} has {rows}: "
                "every column needs one value per row"
            )
    if rows == 0:
        return "the columns hold no rows"
    if rows > MAX_BATCH_ROWS:
        return f"{rows} rows is more than {MAX_BATCH_ROWS} in one request: split the table"
    return None


class PredictionBatch(Contract):
    """A model's answer to one columnar request, on ``predictions`` (and the request's reply-to).

    Inputs and outputs are columns, one value per row, in the request's row order; in
    the Arrow form (the request's) they are the record batch's ``inputs.<name>`` and
    ``outputs.<name>`` columns and every other field is JSON text in its schema's
    ``inferstream`` metadata. Readers that take rows (the inference table, drift
    monitors) expand it with :func:`inferstream.schemas.columnar.prediction_rows`.
    """

    schema_name: ClassVar[str] = "prediction-batch"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "request_id"

    request_id: Id = Field(description="The request's id.")
    event_time: Timestamp = Field(description="The request's event time (UTC).")
    model: Name
    version: Name
    rows: int = Field(ge=1, le=MAX_BATCH_ROWS, description="Rows scored: the length of every column.")
    inputs: dict[str, Column] = Field(description="The request's columns, for monitors and tables.")
    outputs: dict[str, JsonValue] = Field(
        description="Model outputs by name, each a column (one value per row) or an object of columns "
        "(probabilities by label)."
    )
    latency: Latency
    predicted_at: Timestamp = Field(default_factory=utcnow, description="When the output was produced (UTC).")
    shadow: bool = Field(default=False, description="True when from a shadow version (never shown to users).")
    source_event_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage | None = Field(
        default=None, description="The version's registry lineage (run, registered version, sha256), if imported."
    )


class RequestError(Contract):
    """A worker's refusal of a request, sent to the request's reply-to instead of an answer.

    The request itself goes to the dead-letter topic as well; this record lets the caller
    (``Client.predict()``, the gateway) fail at once with the reason instead of waiting
    for its timeout.
    """

    schema_name: ClassVar[str] = "request-error"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "request_id"

    request_id: Id = Field(description="The refused request's id.")
    event_time: Timestamp = Field(default_factory=utcnow, description="When it was refused (UTC).")
    model: str = Field(max_length=256, description="The model the request named (or the topic's).")
    version: str = Field(max_length=256, description="The version the request named (or the topic's).")
    stage: str = Field(description="Step that refused it (serve, ...).")
    error_class: str = Field(description="Error class name.")
    error_message: str = Field(description="What was wrong, with the field at fault.")
    source_topic: str = Field(description="The request topic it was read from.")
    source_partition: int | None = None
    source_offset: int | None = None


class Embedding(Contract):
    """A text's vector, on ``embeddings`` keyed by document id; a null value deletes the document."""

    schema_name: ClassVar[str] = "embedding"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "id"

    id: Id = Field(description="Document id (the event id): the index's document id.")
    event_time: Timestamp = Field(description="The source event's time (UTC).")
    model: Name
    version: Name
    vector: Vector = Field(description="The embedding, base64 of little-endian float32.")
    text: str | None = Field(default=None, description="The source text, indexed for BM25.")
    request_id: str | None = None
    latency: Latency | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage | None = Field(default=None, description="The embedder version's registry lineage, if imported.")

    @property
    def dims(self) -> int:
        """Number of dimensions of the vector."""
        return int(self.vector.shape[0])


class ColumnDrift(Part):
    """Drift of one column in one window."""

    column: str
    kind: Literal["numerical", "categorical", "text", "embedding", "prediction"]
    method: str = Field(description="Statistic used (psi, wasserstein, jensenshannon, ks, chisquare, ...).")
    score: float
    threshold: float
    drifted: bool


class QualityMetric(Part):
    """One quality metric of a window: realised on its labels, estimated before them, and the rule it is held to."""

    metric: str = Field(description="accuracy, f1_macro, roc_auc, log_loss, ece, precision[C], ...; mae, rmse, r2.")
    value: float | None = Field(default=None, description="Realised on the window's labels (null: too few).")
    estimated: float | None = Field(default=None, description="Estimated from the probabilities alone (CBPE).")
    reference: float | None = Field(default=None, description="The reference window's value, when declared.")
    limit: float | None = Field(default=None, description="The value past which the window is degraded.")
    breached: bool = False


class LabelsSeen(Part):
    """The labels an evaluation saw: a window re-evaluated on new labels says so by these."""

    count: int = Field(ge=0, description="Predictions of the window with a label.")
    latest_label_time: Timestamp | None = Field(default=None, description="The newest label_time among them.")
    digest: str = Field(description="sha256 prefix of the (request id, label, label time) seen.")


class QualityVerdict(Part):
    """A quality monitor's evaluation of one window."""

    task: Literal["classification", "regression"]
    evaluation: int = Field(ge=1, description="How many times this window has been evaluated (late labels).")
    labels: LabelsSeen
    metrics: list[QualityMetric] = Field(default_factory=list)


class DriftAlert(Contract):
    """A monitor's verdict on a window, on ``drift-alerts`` keyed by monitor name.

    Version 2 adds quality monitors' alerts: ``kind = "quality"``, status ``degraded``
    (or ``resolved``) and the window's ``quality`` verdict; their ``dataset_drift`` is
    false, ``drift_share`` 0 and ``columns`` empty.
    """

    schema_name: ClassVar[str] = "drift-alert"
    schema_version: ClassVar[int] = 2
    key_field: ClassVar[str] = "monitor"

    id: Id = Field(default_factory=new_id, description="Alert id (monitor + window makes it unique).")
    event_time: Timestamp = Field(default_factory=utcnow, description="When the alert was raised (UTC).")
    kind: Literal["drift", "quality"] = Field(default="drift", description="Which kind of monitor raised it.")
    monitor: Name
    model: Name
    version: Name
    window_start: Timestamp
    window_end: Timestamp
    window_count: int = Field(ge=0, description="Predictions in the window.")
    status: Literal["drift", "degraded", "resolved"]
    dataset_drift: bool
    drift_share: float = Field(ge=0, le=1, description="Share of columns that drifted.")
    severity: Literal["info", "warning", "critical"]
    columns: list[ColumnDrift] = Field(default_factory=list)
    quality: QualityVerdict | None = Field(default=None, description="A quality monitor's evaluation of the window.")
    report_path: str | None = Field(default=None, description="HTML report of the window.")


class RouteVersion(Part):
    """A version of a model alias with its share of traffic."""

    version: Name
    weight: float = Field(ge=0)


class Route(Contract):
    """Routes of a model alias, on the compacted ``control`` topic keyed by model name."""

    schema_name: ClassVar[str] = "route"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "model"

    model: Name
    event_time: Timestamp = Field(default_factory=utcnow, description="When the route was set (UTC).")
    versions: list[RouteVersion] = Field(min_length=1)
    shadow: list[Name] = Field(default_factory=list)
    previous: list[RouteVersion] | None = Field(default=None, description="The route before this one (rollback).")

    @model_validator(mode="after")
    def _weights(self) -> Route:
        if sum(v.weight for v in self.versions) <= 0:
            raise ValueError("route weights must add up to more than 0")
        return self


#: A label's value: a class (string, integer, boolean) or a target value (number).
LabelValue = float | int | Annotated[str, Strict()] | bool


class Label(Contract):
    """Ground truth for a prediction, on ``labels`` keyed by id; it may come late, more than once, or never.

    ``id`` is the prediction's request id, or (``id_type = "event"``) the id of the event
    its request was made from. When one id is labelled more than once, the latest
    ``label_time`` wins (the later record when two times tie).
    """

    schema_name: ClassVar[str] = "label"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "id"
    time_field: ClassVar[str] = "label_time"

    id: Id = Field(description="The labelled prediction's request id, or its source event id (see id_type).")
    id_type: Literal["request", "event"] = Field(
        default="request", description="What `id` names: the request id or the source event id of a prediction."
    )
    label: LabelValue = Field(description="The ground truth: a class (string, integer, boolean) or a target value.")
    label_time: Timestamp = Field(default_factory=utcnow, description="When the truth became known (UTC).")
    source: str | None = Field(default=None, max_length=256, description="Where the label came from.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Free-form metadata, carried through.")


class DeadLetter(Contract):
    """A record that could not be processed, on ``dead-letters`` keyed by its original key.

    On the wire the value is the original bytes (a prefix when truncated) and the
    fields here travel as ``dlq.*`` headers beside the original headers: see
    :mod:`inferstream.connectors.kafka.dlq`. This model is the decoded view.
    """

    schema_name: ClassVar[str] = "dead-letter"
    schema_version: ClassVar[int] = 1
    key_field: ClassVar[str] = "id"

    id: Id = Field(default_factory=new_id)
    event_time: Timestamp = Field(default_factory=utcnow, description="When it was dead-lettered (UTC).")
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    stage: str = Field(description="Step that failed (produce, ingest, serve, index, ...).")
    error_class: str
    error_message: str
    attempt: int = Field(default=1, ge=1)
    original_key: bytes | None = None
    original_headers: list[tuple[str, bytes | None]] = Field(
        default_factory=list, description="The original headers in order, their bytes as they were (null: no value)."
    )
    payload: bytes = Field(description="The original bytes, or their prefix when truncated.")
    original_size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    truncated: bool = False
    spill_path: str | None = Field(default=None, description="Where the full payload was kept when truncated.")

    def key(self) -> bytes:
        """The original record's key (empty when it had none)."""
        return self.original_key or b""


# ChainStep comes after the requests that name it: complete them now, not at their first use.
InferenceRequest.model_rebuild()

#: Every contract, by schema name.
CONTRACTS: dict[str, type[Contract]] = {
    c.schema_name: c
    for c in (
        Event,
        InferenceRequest,
        InferenceBatchRequest,
        EmbeddingRequest,
        Prediction,
        PredictionBatch,
        RequestError,
        Embedding,
        DriftAlert,
        Route,
        Label,
        DeadLetter,
    )
}


def contract_named(name: str) -> type[Contract]:
    """The contract class for a schema name (``event``, ``prediction``, ...)."""
    try:
        return CONTRACTS[name]
    except KeyError:
        known = ", ".join(sorted(CONTRACTS))
        from inferstream.errors import ContractError

        raise ContractError(f"unknown schema {name!r}; known schemas: {known}") from None


__all__ = [
    "CONTRACTS",
    "MAX_BATCH_ROWS",
    "BatchRequestHead",
    "ChainStep",
    "ColumnDrift",
    "Contract",
    "DeadLetter",
    "DriftAlert",
    "Embedding",
    "EmbeddingRequest",
    "Event",
    "InferenceBatchRequest",
    "InferenceRequest",
    "Label",
    "LabelValue",
    "LabelsSeen",
    "Latency",
    "Prediction",
    "PredictionBatch",
    "QualityMetric",
    "QualityVerdict",
    "RequestError",
    "Route",
    "RouteVersion",
    "columns_problem",
    "contract_named",
]
