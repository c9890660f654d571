"""One frozen settings object for every inferstream process.

Values come from, in order of precedence: keyword arguments, environment
variables prefixed ``INFERSTREAM_`` (nested with ``__``, e.g.
``INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS``), an optional TOML file
(``INFERSTREAM_CONFIG`` or ``Settings.load(path)``), then defaults. Nothing is
read at import time. Secrets are ``SecretStr``: they never show in reprs or logs.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from inferstream.errors import ConfigError
from inferstream.monitoring.spec import MonitorSpec, load_monitors

# librdkafka accepts strings, numbers and booleans for its properties.
ClientValue = str | int | float | bool

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("inferstream_config_file", default=None)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSecurity(_Frozen):
    """How clients authenticate and encrypt; mapped onto librdkafka's properties."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

    def librdkafka(self) -> dict[str, ClientValue]:
        """The librdkafka properties for this security setup (secrets revealed only here)."""
        conf: dict[str, ClientValue] = {"security.protocol": self.protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


class KafkaSettings(_Frozen):
    """Where the brokers are and how every client talks to them."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "inferstream"
    security: KafkaSecurity = KafkaSecurity()
    # Passed through to librdkafka for every client, then per client kind (these win).
    client_overrides: dict[str, ClientValue] = Field(default_factory=dict)
    producer_overrides: dict[str, ClientValue] = Field(default_factory=dict)
    consumer_overrides: dict[str, ClientValue] = Field(default_factory=dict)
    # Producer defaults: idempotent, batched, compressed.
    linger_ms: int = 5
    batch_size: int = 1_000_000
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    acks: Literal["all", "1", "0"] = "all"
    idempotence: bool = True
    delivery_timeout_ms: int = 120_000
    # Consumer defaults.
    # A member that dies (kill -9, a lost machine) leaves its group after this, and its
    # partitions go on with another member or its successor (Kafka's default is 45 s).
    # Heartbeats come from the clients' own threads, so a busy stage keeps its membership.
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000

    @field_validator("bootstrap_servers")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("bootstrap_servers must name at least one host:port")
        return value.strip()

    def base_config(self) -> dict[str, Any]:
        """Properties shared by producers, consumers and admin clients.

        librdkafka's own log lines go to the ``inferstream.kafka`` Python logger.
        """
        return {
            "logger": logging.getLogger("inferstream.kafka"),
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            **self.security.librdkafka(),
            **self.client_overrides,
        }

    def producer_config(self) -> dict[str, Any]:
        """Producer properties: idempotent, batched and compressed unless overridden."""
        return {
            **self.base_config(),
            "enable.idempotence": self.idempotence,
            "acks": self.acks,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size,
            "compression.type": self.compression,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            **self.producer_overrides,
        }

    def consumer_config(self, group_id: str) -> dict[str, Any]:
        """Consumer properties: manual commits of stored offsets, never automatic."""
        return {
            **self.base_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            # Outputs of exactly-once workers are visible once their transaction commits.
            "isolation.level": "read_committed",
            # librdkafka's default (1 s) stalls a fast consumer whenever its local queue fills.
            "fetch.queue.backoff.ms": 10,
            **self.consumer_overrides,
        }


def min_insync_for(replication: int) -> int:
    """``min.insync.replicas`` for a replication factor: 2 from three replicas up, else 1.

    With three copies, two must hold a write before it is acknowledged (acks=all), so
    losing one broker loses nothing acknowledged and writes go on; with two copies both
    would have to be up to write at all, so one is enough there.
    """
    return 2 if replication >= 3 else 1


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and topic config for a topic created on a cluster of ``brokers`` brokers.

    Every broker holds a copy, up to three; from three copies up, ``min.insync.replicas``
    is 2 (see :func:`min_insync_for`). One broker: factor 1 and no extra config.
    """
    replication = max(1, min(brokers, 3))
    min_insync = min_insync_for(replication)
    return replication, ({"min.insync.replicas": str(min_insync)} if min_insync > 1 else {})


class TopicSettings(_Frozen):
    """Names of the platform's topics and how they are created."""

    prefix: str = "inferstream."
    events: str = "events"
    predictions: str = "predictions"
    predictions_shadow: str = "predictions-shadow"
    embeddings: str = "embeddings"
    control: str = "control"
    drift_alerts: str = "drift-alerts"
    labels: str = "labels"
    dead_letters: str = "dead-letters"
    requests_prefix: str = "requests"
    replies_prefix: str = "replies"
    partitions: int = Field(default=3, ge=1)
    #: None: picked from the cluster when a topic is created (:func:`replication_for`).
    replication_factor: int | None = Field(default=None, ge=1)
    retention_ms: int = 7 * 24 * 3600 * 1000
    dead_letter_retention_ms: int = 30 * 24 * 3600 * 1000

    def name(self, logical: str) -> str:
        """The full topic name for a logical name (``events`` → ``inferstream.events``).

        A name that already carries the prefix is returned as it is.
        """
        if logical.startswith(self.prefix):
            return logical
        return f"{self.prefix}{logical}"

    def logical(self, full: str) -> str:
        """The logical name of a full topic name (the reverse of :meth:`name`)."""
        return full[len(self.prefix) :] if self.prefix and full.startswith(self.prefix) else full

    def request_topic(self, model: str, version: str) -> str:
        """The request topic of one model version."""
        return self.name(f"{self.requests_prefix}.{model}.{version}")

    def group(self, name: str) -> str:
        """A platform consumer group's name under the prefix: deployments sharing a cluster stay apart."""
        return f"{self.prefix}{name}"

    def worker_group(self, model: str, version: str, *, shadow: bool = False) -> str:
        """The consumer group of one model version's workers (under the prefix: deployments stay apart)."""
        return self.group(f"{'shadow' if shadow else 'serve'}-{model}-{version}")

    def reply_topic(self, client_id: str) -> str:
        """The reply topic owned by one client."""
        return self.name(f"{self.replies_prefix}.{client_id}")

    def platform_topics(self) -> dict[str, str]:
        """Logical name → full name of every fixed platform topic."""
        logical = {
            "events": self.events,
            "predictions": self.predictions,
            "predictions-shadow": self.predictions_shadow,
            "embeddings": self.embeddings,
            "control": self.control,
            "drift-alerts": self.drift_alerts,
            "labels": self.labels,
            "dead-letters": self.dead_letters,
        }
        return {key: self.name(value) for key, value in logical.items()}


class DeadLetterSettings(_Frozen):
    """How records that cannot be processed are kept."""

    # Payloads above this size are truncated to it on the dead-letter topic (the full
    # bytes go to spill_dir when set). Keep it under the broker's message.max.bytes.
    max_payload_bytes: int = Field(default=512 * 1024, ge=1024)
    spill_dir: Path | None = None
    max_attempts: int = Field(default=3, ge=1)


class MetricsSettings(_Frozen):
    """Where long-running processes export Prometheus metrics (loopback by default)."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0: do not export
    namespace: str = "inferstream"


class TracingSettings(_Frozen):
    """OpenTelemetry spans over OTLP (off by default; ``traceparent`` headers travel either way)."""

    #: Record spans (gateway request, worker batches) and export them over OTLP/HTTP.
    enabled: bool = False
    #: The collector's OTLP/HTTP traces URL; None: the exporter's own default
    #: (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or http://localhost:4318/v1/traces).
    otlp_endpoint: str | None = None
    #: ``service.name`` of this process's spans (the command names it when unset).
    service_name: str | None = None
    #: The share of new traces that are sampled (a request's own sampled flag decides for it).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


#: The local broker's JIT by default: the quick compiler alone (``stack.kafka_jvm_options``).
QUICK_JIT = ("-XX:TieredStopAtLevel=1",)


class StackSettings(_Frozen):
    """The local stack started by ``inferstream up``."""

    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    controller_port: int = 9093
    kafka_heap: str = "512m"
    #: The heap of each broker of ``inferstream up --brokers N`` (three brokers: ~1.5 GB resident in all).
    cluster_kafka_heap: str = "320m"
    #: More JVM options for the local broker. The default compiles with the quick JIT
    #: alone (C1): on a small machine the optimising compiler's own CPU outweighs what it
    #: saves in any run shorter than hours (measured: a request/reply costs the broker 2.8
    #: ms of CPU in its first minutes with it, 1.2 ms without). ``[]`` gives the JVM's default.
    kafka_jvm_options: tuple[str, ...] = QUICK_JIT
    java_home: Path | None = None


class MonitoringSettings(_Frozen):
    """Drift monitors, the inference table and where their files go (default: under ``state_dir``)."""

    table_dir: Path | None = None
    references_dir: Path | None = None
    reports_dir: Path | None = None
    monitors_file: Path | None = None
    monitors: list[MonitorSpec] = Field(default_factory=list)
    #: Seconds after its label_time a label may wait for a prediction with its id; then it is dead-lettered.
    label_horizon_s: float = Field(default=24 * 3600, gt=0)
    #: How often the label table sink looks for labels past the horizon (each look reads the table's ids).
    label_sweep_s: float = Field(default=60.0, gt=0)

    def all_monitors(self) -> list[MonitorSpec]:
        """The monitors declared here and in ``monitors_file``."""
        from_file = load_monitors(self.monitors_file) if self.monitors_file is not None else []
        return [*self.monitors, *from_file]

    def monitor(self, name: str) -> MonitorSpec:
        """The monitor called ``name``; ConfigError naming the known ones otherwise."""
        monitors = self.all_monitors()
        for spec in monitors:
            if spec.name == name:
                return spec
        known = ", ".join(sorted(m.name for m in monitors)) or "none"
        raise ConfigError(
            f"no monitor named {name!r} (declared: {known}); "
            "add it to monitoring.monitors_file or [[monitoring.monitors]]"
        )


Scope = Literal["produce", "predict", "read", "admin"]


class ApiKey(_Frozen):
    """One named key of the gateway: what it may do, and how often.

    ``secret`` is the key itself, or ``sha256`` its hex digest (so that a keys file need
    not hold the key). Scopes: ``produce`` (events), ``predict`` (predictions, embeddings,
    the Open Inference Protocol), ``read`` (streams, alerts, search, models, metrics) and
    ``admin`` (all of them). ``rate_per_s`` limits its requests (a bucket of ``burst``).
    """

    name: str = Field(min_length=1, max_length=128)
    secret: SecretStr | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["admin"]), min_length=1)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKey:
        if (self.secret is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r} needs one of `secret` or `sha256`")
        return self


class GatewaySettings(_Frozen):
    """The HTTP gateway (``inferstream gateway``): where it listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token every /v1 and /metrics call must carry; none: no authentication, which
    # the gateway accepts on a loopback address only, unless allow_insecure says otherwise.
    token: SecretStr | None = None
    # The token read from this file instead (a container secret: /run/secrets/...); its
    # surrounding whitespace is dropped. Setting both is refused.
    token_file: Path | None = None
    # Named keys with scopes and rate limits (beside or instead of the token), here or in a
    # TOML file of [[keys]] tables that is read again when it changes (rotation without a restart).
    keys: list[ApiKey] = Field(default_factory=list)
    keys_file: Path | None = None
    allow_insecure: bool = False
    # HTTPS when both are set (PEM files).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Larger request bodies are refused with 413 before they are read in full.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Predictions waiting for one SSE client; a client whose queue stays full for
    # sse_drop_after_s is dropped (the others wait that long for it at most).
    sse_queue_size: int = Field(default=1000, ge=1)
    sse_drop_after_s: float = Field(default=5.0, gt=0)
    # Default and upper bound of a predict call's wait for its answer.
    predict_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("token_file") in (None, ""):
            return data
        path = Path(data["token_file"])
        if data.get("token") is not None:
            raise ValueError(f"gateway.token and gateway.token_file ({path}) are both set: keep one")
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"gateway.token_file {path} cannot be read: {exc.strerror}") from None
        if not token:
            raise ValueError(f"gateway.token_file {path} is empty")
        return {**data, "token": token}


class IngestRule(_Frozen):
    """Events of one type go to one model version: their text to an embedder, or their features to a model."""

    type: str = Field(min_length=1, description="Event type this rule applies to.")
    model: str = Field(min_length=1)
    version: str | None = Field(
        default=None, min_length=1, description="None: the version the model's route picks for each request."
    )
    input: Literal["text", "features", "inputs"] = Field(
        description=(
            "`text`: an embedding request of the event's text; `features`: an inference request of its "
            "features; `inputs`: an inference request of its features and its text (as `text`), for a "
            "chain that starts with an embedder or a model that reads both."
        )
    )


class RegistrySettings(_Frozen):
    """The MLflow model registry ``inferstream models import`` reads (MLflow's own environment when unset)."""

    tracking_uri: str | None = None
    registry_uri: str | None = None


class IngestSettings(_Frozen):
    """The ingest processor (``inferstream stream ingest``): routing rules and its consumer group."""

    # As TOML: [[ingest.rules]] tables; as env: INFERSTREAM_INGEST__RULES='[{"type": ...}, ...]'.
    rules: list[IngestRule] = Field(default_factory=list)
    group: str = Field(default="inferstream-ingest", min_length=1)
    # Events whose outputs are awaited together before their offsets may be committed.
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)
    # How often acknowledged events are committed; a stop loses at most this much
    # progress (replayed after a restart, with the same request ids).
    commit_interval_s: float = Field(default=1.0, gt=0)


class LocalElasticsearchSettings(_Frozen):
    """The local Elasticsearch started by ``inferstream up --with-elasticsearch`` (and the tests)."""

    # The minimal distribution on Maven Central (integ-test-zip); 9.3.0 is not published there.
    version: str = "9.3.2"
    port: int = Field(default=9200, ge=1, le=65535)
    transport_port: int = Field(default=9300, ge=1, le=65535)
    heap: str = "512m"
    # Elasticsearch 9 needs Java 21+; None: look for one (JAVA_HOME, /usr/lib/jvm, PATH).
    java_home: Path | None = None
    # Elasticsearch refuses to run as root: as root it runs as this system user (created if absent).
    user: str = "inferstream-es"


class ElasticsearchSettings(_Frozen):
    """The vector index: a real Elasticsearch at ``url``, or (``url`` None) the embedded store.

    The embedded store (LanceDB) lives under ``embedded_dir`` (default
    ``<state_dir>/vectors``) and has the same upsert/delete/search behaviour.
    """

    #: One URL, or several nodes' URLs comma-separated.
    url: str | None = None
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout_s: float = Field(default=30.0, gt=0)
    index: str = Field(default="inferstream-documents", pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    # The embedder whose vectors the index holds: its dims come from the model repository.
    model: str = "minilm:1"
    dims: int | None = Field(default=None, ge=1, description="Vector dims when the model is not in the repository.")
    similarity: Literal["cosine", "dot_product", "l2_norm", "max_inner_product"] = "cosine"
    # Recent servers default 384+ dims to bbq_hnsw (1-bit); int8 keeps recall high at 4x less memory.
    index_type: Literal["hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat"] = "int8_hnsw"
    hnsw_m: int = Field(default=16, ge=2)
    hnsw_ef_construction: int = Field(default=100, ge=2)
    num_candidates: int = Field(default=100, ge=1)
    # Quantized index types lose recall to rounding (int8: ~0.88 recall@10 on clustered 384-dim
    # vectors); re-scoring oversample x k candidates with the float vectors brings it back (~0.97).
    rescore_oversample: float = Field(default=2.0, ge=0, description="0: no rescoring.")
    refresh_interval: str = "1s"
    shards: int = Field(default=1, ge=1)
    #: None: one replica when the cluster has two data nodes or more, else none (picked at setup).
    replicas: int | None = Field(default=None, ge=0)
    # The index sink writes when it holds this many records, or its oldest waited this long,
    # or no record came for flush_idle_ms (the topic is drained: no reason to wait longer).
    flush_max_records: int = Field(default=2000, ge=1)
    flush_interval_ms: int = Field(default=200, ge=0)
    flush_idle_ms: int = Field(default=20, ge=0)
    # Backoff while the index is unreachable or overloaded: doubles from min to max.
    retry_backoff_min_ms: int = Field(default=200, ge=1)
    retry_backoff_max_ms: int = Field(default=5000, ge=1)
    group_id: str | None = Field(default=None, description="Consumer group of the index sink (default per index).")
    embedded_dir: Path | None = None
    # The embedded store's IVF index: partitions searched per query (more: better recall, slower).
    embedded_nprobes: int = Field(default=32, ge=1)
    local: LocalElasticsearchSettings = LocalElasticsearchSettings()

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``elasticsearch.Elasticsearch`` (secrets revealed only here)."""
        options: dict[str, Any] = {
            # Several nodes, comma-separated: the client spreads requests and skips a node that is down.
            "hosts": [host.strip() for host in (self.url or "").split(",") if host.strip()],
            "request_timeout": self.request_timeout_s,
            "verify_certs": self.verify_certs,
        }
        if self.api_key is not None:
            options["api_key"] = self.api_key.get_secret_value()
        elif self.username is not None:
            password = self.password.get_secret_value() if self.password is not None else ""
            options["basic_auth"] = (self.username, password)
        if self.ca_certs is not None:
            options["ca_certs"] = str(self.ca_certs)
        return options


class Settings(BaseSettings):
    """Everything an inferstream process needs to know, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    stack: StackSettings = StackSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    gateway: GatewaySettings = GatewaySettings()
    ingest: IngestSettings = IngestSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    registry: RegistrySettings = RegistrySettings()
    state_dir: Path = Path(".inferstream")
    models_dir: Path = Path("models")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the TOML file, then defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _CONFIG_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build settings from ``config_file`` (or ``$INFERSTREAM_CONFIG``), the env and overrides."""
        path_value = config_file or os.environ.get("INFERSTREAM_CONFIG")
        path = Path(path_value) if path_value else None
        if path is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist; check INFERSTREAM_CONFIG or --config")
        token = _CONFIG_FILE.set(path)
        try:
            return cls(**overrides)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            where = f" (from {path})" if path else ""
            raise ConfigError(f"invalid settings{where}: {exc}") from exc
        finally:
            _CONFIG_FILE.reset(token)
