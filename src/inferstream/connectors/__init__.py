"""Connectors to the systems around the platform: Kafka, files, (later) Elasticsearch."""
