from pathlib import Path

import pytest

from inferstream.config import Settings
from inferstream.errors import ConfigError


def test_defaults_are_loopback_and_idempotent() -> None:
    settings = Settings.load()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    producer = settings.kafka.producer_config()
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    consumer = settings.kafka.consumer_config("g")
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert settings.metrics.host == "127.0.0.1"


def test_environment_overrides_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("INFERSTREAM_TOPICS__PREFIX", "prod.")
    monkeypatch.setenv("INFERSTREAM_TOPICS__PARTITIONS", "12")
    settings = Settings.load()
    assert settings.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert settings.topics.name("events") == "prod.events"
    assert settings.topics.partitions == 12


def test_toml_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "inferstream.toml"
    config.write_text(
        """
[kafka]
bootstrap_servers = "from-file:9092"
client_overrides = { "socket.keepalive.enable" = true }

[kafka.security]
protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "svc"
sasl_password = "file-secret"
ssl_ca_location = "/etc/ca.pem"

[topics]
prefix = "staging."
"""
    )
    settings = Settings.load(config)
    assert settings.kafka.bootstrap_servers == "from-file:9092"
    conf = settings.kafka.producer_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "file-secret"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["socket.keepalive.enable"] is True
    # The environment beats the file; keyword arguments beat both.
    monkeypatch.setenv("INFERSTREAM_TOPICS__PREFIX", "env.")
    assert Settings.load(config).topics.prefix == "env."
    assert Settings.load(config, topics={"prefix": "kw."}).topics.prefix == "kw."
    monkeypatch.setenv("INFERSTREAM_CONFIG", str(config))
    assert Settings.load().kafka.bootstrap_servers == "from-file:9092"


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSTREAM_KAFKA__SECURITY__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("INFERSTREAM_KAFKA__SECURITY__SSL_KEY_PASSWORD", "keypass")
    settings = Settings.load()
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert "hunter2" not in text
        assert "keypass" not in text
    assert settings.kafka.security.librdkafka()["sasl.password"] == "hunter2"


def test_frozen() -> None:
    settings = Settings.load()
    with pytest.raises(ValueError, match="frozen"):
        settings.state_dir = Path("/elsewhere")  # type: ignore[misc]


def test_client_overrides_win_per_client_kind() -> None:
    settings = Settings.load(
        kafka={
            "client_overrides": {"linger.ms": 1, "client.id": "svc"},
            "producer_overrides": {"linger.ms": 50},
            "consumer_overrides": {"fetch.min.bytes": 1024},
        }
    )
    assert settings.kafka.producer_config()["linger.ms"] == 50
    assert settings.kafka.producer_config()["client.id"] == "svc"
    assert settings.kafka.consumer_config("g")["fetch.min.bytes"] == 1024


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\nbootstrap_servers = "  "\n')
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        Settings.load(bad)
    with pytest.raises(ConfigError, match="partitions"):
        Settings.load(topics={"partitions": 0})


def test_topic_names() -> None:
    topics = Settings.load().topics
    assert topics.name("events") == "inferstream.events"
    assert topics.name("inferstream.events") == "inferstream.events"
    assert topics.logical("inferstream.events") == "events"
    assert topics.request_topic("iris", "2") == "inferstream.requests.iris.2"
    assert topics.reply_topic("c1") == "inferstream.replies.c1"
    assert set(topics.platform_topics()) == {
        "events",
        "predictions",
        "predictions-shadow",
        "embeddings",
        "control",
        "drift-alerts",
        "labels",
        "dead-letters",
    }


def test_the_gateway_token_comes_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "gateway_token"
    secret.write_text("s3cret-token\n")
    monkeypatch.setenv("INFERSTREAM_GATEWAY__TOKEN_FILE", str(secret))
    token = Settings.load().gateway.token
    assert token is not None
    assert token.get_secret_value() == "s3cret-token"  # a container secret's trailing newline is dropped
    monkeypatch.setenv("INFERSTREAM_GATEWAY__TOKEN", "another")
    with pytest.raises(ConfigError, match="both set"):
        Settings.load()
    monkeypatch.delenv("INFERSTREAM_GATEWAY__TOKEN")
    monkeypatch.setenv("INFERSTREAM_GATEWAY__TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.load()
    secret.write_text("\n")
    monkeypatch.setenv("INFERSTREAM_GATEWAY__TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError, match="is empty"):
        Settings.load()
