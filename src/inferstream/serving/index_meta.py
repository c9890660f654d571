"""What the configured vector index holds: ``elasticsearch.model``'s vectors, their dims from its model.toml.

The index sink (a stream processor) and the backfill job (a batch job) both set up the
index for the same embedder; the answer lives here, below both, in the serving layer
that owns the model repository.
"""

from __future__ import annotations

from inferstream.config import Settings
from inferstream.connectors.vectors import IndexMeta
from inferstream.errors import ModelError
from inferstream.serving.repository import ModelRepository


def index_meta(settings: Settings) -> IndexMeta:
    """What the configured index holds: ``elasticsearch.model``'s vectors, dims from its model.toml."""
    config = settings.elasticsearch
    name, _, version = config.model.partition(":")
    if not name or not version:
        raise ModelError(f"elasticsearch.model must be name:version (e.g. minilm:1), not {config.model!r}")
    dims = config.dims
    if dims is None:
        model = ModelRepository(settings.models_dir).get(name, version)
        dims = model.config.outputs.dims
        if dims is None:
            raise ModelError(
                f"{model.directory / 'model.toml'} does not say outputs.dims; set it, or elasticsearch.dims"
            )
    return IndexMeta(model=name, version=version, dims=dims, similarity=config.similarity)
