"""Topic contracts: one typed record per topic, with JSON Schema and Arrow forms.

>>> from inferstream.schemas import Event, codec_for
>>> codec_for(Event).validate({"id": "e1", "type": "review", "text": "great"}).id
'e1'
"""

from inferstream.schemas.codec import SCHEMA_HEADER, BatchResult, Codec, codec_for, parse_schema_header
from inferstream.schemas.records import (
    CONTRACTS,
    ChainStep,
    ColumnDrift,
    Contract,
    DeadLetter,
    DriftAlert,
    Embedding,
    EmbeddingRequest,
    Event,
    InferenceRequest,
    Label,
    Latency,
    Lineage,
    Prediction,
    RequestError,
    Route,
    RouteVersion,
    contract_named,
)

__all__ = [
    "CONTRACTS",
    "SCHEMA_HEADER",
    "BatchResult",
    "ChainStep",
    "Codec",
    "ColumnDrift",
    "Contract",
    "DeadLetter",
    "DriftAlert",
    "Embedding",
    "EmbeddingRequest",
    "Event",
    "InferenceRequest",
    "Label",
    "Latency",
    "Lineage",
    "Prediction",
    "RequestError",
    "Route",
    "RouteVersion",
    "codec_for",
    "contract_named",
    "parse_schema_header",
]
