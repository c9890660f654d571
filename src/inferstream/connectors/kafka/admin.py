"""Create, list and describe the platform's topics, idempotently."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import confluent_kafka
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from inferstream.config import Settings, replication_for
from inferstream.connectors.kafka._util import error_of
from inferstream.errors import KafkaError, TopicError

_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition: who leads it, where its replicas are, and its offsets."""

    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    low: int
    high: int

    @property
    def messages(self) -> int:
        """Records currently retained (high − low watermark)."""
        return max(self.high - self.low, 0)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic's partitions and (when described) its non-default configuration."""

    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        """Records retained across all partitions."""
        return sum(p.messages for p in self.partitions)


def platform_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Full topic name → topic config for every fixed platform topic."""
    topics = settings.topics
    names = topics.platform_topics()
    keep = {"cleanup.policy": "delete", "retention.ms": str(topics.retention_ms)}
    return {
        names["events"]: keep,
        names["predictions"]: keep,
        names["predictions-shadow"]: keep,
        # Keyed by document id with tombstones for deletes: compaction keeps the latest
        # vector of every document, so the index can be rebuilt from the topic.
        names["embeddings"]: {"cleanup.policy": "compact"},
        names["control"]: {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"},
        names["drift-alerts"]: keep,
        # Labels are kept as long as predictions: the label table sink may be behind.
        names["labels"]: keep,
        names["dead-letters"]: {"cleanup.policy": "delete", "retention.ms": str(topics.dead_letter_retention_ms)},
    }


class TopicAdmin:
    """Topic administration against the configured cluster."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = AdminClient(dict(settings.kafka.base_config()))

    def create(
        self,
        name: str,
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> bool:
        """Create a topic; True if created, False if it existed already."""
        return self.create_many(
            {name: dict(config or {})}, partitions=partitions, replication_factor=replication_factor
        )[name]

    def create_many(
        self,
        topics: Mapping[str, Mapping[str, str]],
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
    ) -> dict[str, bool]:
        """Create several topics (name → config); name → True if created, False if it existed.

        The replication factor is ``replication_factor``, else ``topics.replication_factor``,
        else picked from the cluster's size (:func:`inferstream.config.replication_for`: every
        broker up to three, ``min.insync.replicas`` 2 from three copies up; a config given
        here wins), so a three-broker cluster gets topics that survive a lost broker with
        no setting edited.
        """
        defaults = self._settings.topics
        if not topics:
            return {}
        replication = replication_factor or defaults.replication_factor
        extra: dict[str, str] = {}
        if replication is None:
            replication, extra = replication_for(len(self._metadata(None).brokers))
        new = [
            NewTopic(
                name,
                num_partitions=partitions or defaults.partitions,
                replication_factor=replication,
                config={**extra, **config},
            )
            for name, config in topics.items()
        ]
        result: dict[str, bool] = {}
        for name, future in self._admin.create_topics(new, request_timeout=_TIMEOUT_S).items():
            try:
                future.result()
                result[name] = True
            except confluent_kafka.KafkaException as exc:
                error = error_of(exc)
                if error.code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = False
                else:
                    raise TopicError(f"cannot create topic {name}: {error.str()}") from exc
        self._wait_visible([name for name, created in result.items() if created])
        return result

    def _wait_visible(self, names: list[str], timeout: float = _TIMEOUT_S) -> None:
        # A created topic takes a moment to reach every broker's metadata; producers
        # that look it up right away would otherwise be told it does not exist.
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            topics = self._metadata(None).topics
            pending = {n for n in pending if n not in topics or topics[n].error is not None or not topics[n].partitions}
            if pending:
                time.sleep(0.1)

    def ensure_platform_topics(self) -> dict[str, bool]:
        """Create every fixed platform topic that is missing (idempotent)."""
        return self.create_many(platform_topic_configs(self._settings))

    def ensure_request_topic(self, model: str, version: str) -> str:
        """Create the request topic of a model version if missing; returns its name."""
        name = self._settings.topics.request_topic(model, version)
        self.create(name, config={"retention.ms": str(self._settings.topics.retention_ms)})
        return name

    def ensure_reply_topic(self, client_id: str) -> str:
        """Create a client's reply topic (one partition, short retention) if missing."""
        name = self._settings.topics.reply_topic(client_id)
        self.create(name, partitions=1, config={"retention.ms": str(3600 * 1000)})
        return name

    def exists(self, name: str) -> bool:
        """True when the topic exists."""
        metadata = self._metadata(name).topics.get(name)
        return metadata is not None and metadata.error is None

    def list(self, *, include_internal: bool = False, timeout: float = _TIMEOUT_S) -> list[str]:
        """Names of the topics in the cluster, sorted."""
        names = self._metadata(None, timeout=timeout).topics
        return sorted(n for n in names if include_internal or not n.startswith("__"))

    def describe(self, name: str, *, with_config: bool = True) -> TopicInfo:
        """Partitions (leader, replicas, ISR, watermarks) and non-default config of a topic."""
        metadata = self._metadata(name).topics.get(name)
        if metadata is None or metadata.error is not None:
            raise TopicError(f"topic {name} does not exist (list topics with `inferstream topics list`)")
        consumer = confluent_kafka.Consumer({**self._settings.kafka.base_config(), "group.id": "inferstream-admin"})
        try:
            partitions = []
            for pid, part in sorted(metadata.partitions.items()):
                low, high = consumer.get_watermark_offsets(TopicPartition(name, pid), timeout=_TIMEOUT_S)
                partitions.append(PartitionInfo(pid, part.leader, list(part.replicas), list(part.isrs), low, high))
        finally:
            consumer.close()
        config: dict[str, str] = {}
        if with_config:
            resource = ConfigResource(ConfigResource.Type.TOPIC, name)
            entries = self._admin.describe_configs([resource], request_timeout=_TIMEOUT_S)[resource].result()
            config = {k: str(v.value) for k, v in entries.items() if not v.is_default}
        return TopicInfo(name=name, partitions=partitions, config=config)

    def config_value(self, name: str, key: str) -> str | None:
        """The value a topic config takes now (its own or the broker's default); None if unknown."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            entries = self._admin.describe_configs([resource], request_timeout=_TIMEOUT_S)[resource].result()
        except confluent_kafka.KafkaException as exc:
            error = error_of(exc)
            if error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicError(f"topic {name} does not exist (create it with `inferstream topics create`)") from exc
            raise TopicError(f"cannot read the config of topic {name}: {error.str()}") from exc
        entry = entries.get(key)
        return None if entry is None or entry.value is None else str(entry.value)

    def delete(self, *names: str) -> None:
        """Delete topics (missing ones are ignored)."""
        if not names:
            return
        for name, future in self._admin.delete_topics(list(names), request_timeout=_TIMEOUT_S).items():
            try:
                future.result()
            except confluent_kafka.KafkaException as exc:
                error = error_of(exc)
                if error.code() != confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise TopicError(f"cannot delete topic {name}: {error.str()}") from exc

    def _metadata(self, topic: str | None, *, timeout: float = _TIMEOUT_S) -> confluent_kafka.admin.ClusterMetadata:
        try:
            return self._admin.list_topics(topic=topic, timeout=timeout)
        except confluent_kafka.KafkaException as exc:
            raise KafkaError(
                f"cannot reach Kafka at {self._settings.kafka.bootstrap_servers}: {error_of(exc).str()} "
                "(start a local broker with `inferstream up`, or set INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS)"
            ) from exc
