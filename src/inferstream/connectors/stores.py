"""Opening the configured vector index: Elasticsearch when ``elasticsearch.url`` is set, else the embedded store.

The factory lives apart from the contract (:mod:`inferstream.connectors.vectors`): both
stores implement that contract, so a factory beside it would make the contract import
its own implementations, and each of them import it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.connectors.vectors import VectorStore


def open_store(settings: Settings) -> VectorStore:
    """The configured vector index: Elasticsearch at ``elasticsearch.url``, else the embedded store."""
    config = settings.elasticsearch
    # Imported on use: each store pulls in its own client library (elasticsearch, lancedb).
    if config.url:
        from inferstream.connectors.elasticsearch import ElasticsearchStore

        return ElasticsearchStore(config)
    from inferstream.connectors.embedded import EmbeddedStore

    return EmbeddedStore(config.embedded_dir or settings.state_dir / "vectors", config)
