"""Beam jobs against Kafka and Elasticsearch: export, replay, dead letters, backfill into the index."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from inferstream.config import ElasticsearchSettings, Settings
from inferstream.connectors.kafka import reader
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.dlq import from_message
from inferstream.connectors.kafka.groups import GroupAdmin
from inferstream.connectors.kafka.producer import Producer
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.demo import sample_texts
from inferstream.jobs import topics
from inferstream.jobs.backfill import backfill
from inferstream.jobs.topics import export_topic, replay
from inferstream.search import Searcher
from inferstream.serving.demo_models import build_embedder
from inferstream.stack.testing import SearchServer

_BASE = datetime(2025, 3, 1, tzinfo=UTC)


# The records carry timestamps from 2025: a topic with the default retention (7 days) loses them
# at the broker's next retention check, minutes into the run.
_KEEP = {"retention.ms": "-1"}


def _fill(settings: Settings, topic: str, count: int) -> None:
    TopicAdmin(settings).create(topic, partitions=3, config=_KEEP)
    with Producer(settings) as producer:
        for i in range(count):
            stamp = _BASE + timedelta(seconds=i)
            producer.produce(
                topic,
                f"value-{i}".encode(),
                f"key-{i}".encode(),
                [("n", str(i).encode())],
                partition=i % 3,
                timestamp_ms=int(stamp.timestamp() * 1000),
            )
        producer.flush()


def _records(settings: Settings, topic: str) -> dict[bytes, tuple[bytes, int, list[tuple[str, bytes]]]]:
    return {
        m.key(): (m.value(), m.timestamp()[1], list(m.headers() or []))
        for m in read_bounded(settings, topic, idle_timeout=20)
    }


def test_export_then_replay_keeps_keys_timestamps_and_headers(settings: Settings, tmp_path: Path) -> None:
    source = settings.topics.name("job-source")
    _fill(settings, source, 300)
    out = tmp_path / "export.parquet"

    exported = export_topic(settings, source, out)

    assert (exported.rows_in, exported.rows_out) == (300, 300)
    table = pq.read_table(out)
    assert table.num_rows == 300
    rows = {r["key"]: r for r in table.to_pylist()}
    assert rows[b"key-7"]["value"] == b"value-7"
    assert rows[b"key-7"]["partition"] == 1
    assert rows[b"key-7"]["timestamp"] == _BASE + timedelta(seconds=7)
    assert rows[b"key-7"]["headers"] == [{"key": "n", "value": b"7"}]
    assert sorted(table.column("offset").to_pylist()) == sorted(list(range(100)) * 3)

    target = settings.topics.name("job-target")
    TopicAdmin(settings).create(target, partitions=3, config=_KEEP)
    groups = GroupAdmin(settings)
    progress = groups.list(all_groups=True, match="inferstream-replay-")
    replayed = replay(settings, [out], target, rate=2000, keep_partitions=True)

    assert (replayed.rows_in, replayed.rows_out) == (300, 300)
    assert replayed.warnings == []
    assert _records(settings, target) == _records(settings, source)
    # The file went in transactions with its progress (a consumer group), deleted when the job ended.
    assert groups.list(all_groups=True, match="inferstream-replay-") == progress

    # Into a topic that keeps records a week, the user is told the broker will delete them.
    aged = settings.topics.name("job-aged")
    TopicAdmin(settings).create(aged, partitions=1)
    (warning,) = replay(settings, [out], aged).warnings
    assert "300 replayed records are older than the retention" in warning
    assert "retention.ms=-1" in warning


def test_a_replayed_file_the_broker_refuses_a_record_of_is_not_half_visible(settings: Settings, tmp_path: Path) -> None:
    source = settings.topics.name("job-refused-source")
    _fill(settings, source, 30)
    out = tmp_path / "export.parquet"
    export_topic(settings, source, out)
    table = pq.read_table(out)
    values = table.column("value").to_pylist()
    values[20] = os.urandom(4096)  # past the target's max.message.bytes, compressed or not
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value", pa.array(values)), out)
    target = settings.topics.name("job-refused-target")
    TopicAdmin(settings).create(target, partitions=3, config={**_KEEP, "max.message.bytes": "1024"})

    with pytest.raises(Exception, match="larger than the broker or producer accepts"):
        replay(settings, [out], target)

    # The file's transaction was aborted: a read_committed reader sees none of its records, which
    # the broker had taken (a read_uncommitted reader sees those).
    assert list(read_bounded(settings, target, idle_timeout=10)) == []
    uncommitted = settings.kafka.model_copy(update={"consumer_overrides": {"isolation.level": "read_uncommitted"}})
    seen = list(read_bounded(settings.model_copy(update={"kafka": uncommitted}), target, idle_timeout=10))
    assert seen


def _delete_records(settings: Settings, topic: str, partition: int, before: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, partition, before)]).values():
        future.result()


def test_records_the_broker_deletes_before_a_read_are_reported_not_skipped_in_silence(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = settings.topics.name("job-gaps")
    _fill(settings, source, 90)  # 30 a partition
    _delete_records(settings, source, 0, 10)

    # A start below the log start.
    gaps: list[tuple[int, int, int]] = []
    read = list(read_bounded(settings, source, start_offsets={0: 0}, on_gap=lambda *gap: gaps.append(gap)))
    assert (len(read), gaps) == (80, [(0, 0, 10)])

    # The log start passes the reader after it took its start offsets: an offset out of range,
    # reported, and the read goes on from the new log start.
    real = reader.partition_bounds

    def then_delete(consumer: Any, topic: str, timeout: float) -> dict[int, tuple[int, int]] | None:
        bounds = real(consumer, topic, timeout)
        _delete_records(settings, source, 1, 25)
        return bounds

    monkeypatch.setattr(reader, "partition_bounds", then_delete)
    gaps.clear()
    read = list(read_bounded(settings, source, on_gap=lambda *gap: gaps.append(gap)))
    assert (len(read), gaps) == (20 + 5 + 30, [(1, 0, 25)])
    monkeypatch.undo()

    # An export counts what the broker deleted between the job's start and the read.
    real_bounds = topics.log_bounds

    def bounds_then_delete(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
        bounds = real_bounds(settings, topic)
        _delete_records(settings, source, 2, 12)
        return bounds

    monkeypatch.setattr(topics, "log_bounds", bounds_then_delete)
    exported = export_topic(settings, source, tmp_path / "gaps.parquet")
    assert (exported.rows_in, exported.expired) == (20 + 5 + 18, 12)
    assert pq.read_table(tmp_path / "gaps.parquet").num_rows == 43


def test_export_a_range_from_offsets_or_a_time(settings: Settings, tmp_path: Path) -> None:
    source = settings.topics.name("job-range")
    _fill(settings, source, 60)

    by_offset = export_topic(settings, source, tmp_path / "a.parquet", start_offsets={0: 15, 1: 20})
    # Partition 0 from offset 15 (5 left), partition 1 from 20 (none), partition 2 whole (20).
    assert by_offset.rows_out == 25
    table = pq.read_table(tmp_path / "a.parquet")
    assert sorted(table.column("partition").to_pylist()) == [0] * 5 + [2] * 20

    by_time = export_topic(settings, source, tmp_path / "b.parquet", since=_BASE + timedelta(seconds=45))
    assert by_time.rows_out == 15
    keys = sorted(pq.read_table(tmp_path / "b.parquet").column("key").to_pylist())
    assert keys == sorted(f"key-{i}".encode() for i in range(45, 60))


def test_cli_export_passes_beam_options_through(settings: Settings, tmp_path: Path) -> None:
    source = settings.topics.name("job-cli")
    _fill(settings, source, 30)
    out = tmp_path / "cli.parquet"
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "inferstream", "job", "export", source, "--out", str(out), "--offset", "0=5",
         "--job_name", "export-test"],
        capture_output=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert "export: read 25, written 25, rejected 0" in done.stderr.decode()
    assert pq.read_table(out).num_rows == 25
    missing = subprocess.run(
        [sys.executable, "-m", "inferstream", "job", "export", "nope", "--out", str(tmp_path / "x.parquet")],
        capture_output=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr.decode()


def test_backfill_sends_rejected_rows_to_the_dead_letter_topic(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_embedder(models)
    settings = settings.model_copy(update={"models_dir": models})
    TopicAdmin(settings).ensure_platform_topics()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "a passage about lists"}\nnot json\n{"id": "b", "text": ""}\n')

    result = backfill(settings, [corpus], tmp_path / "e.parquet", dead_letters=True)

    assert (result.rows_in, result.rows_out, result.rejected) == (3, 1, 2)
    dead_letters_topic = settings.topics.platform_topics()["dead-letters"]
    letters = sorted(
        (from_message(m) for m in read_bounded(settings, dead_letters_topic, idle_timeout=20)),
        key=lambda letter: letter.source_offset or 0,
    )
    assert [(d.source_topic, d.source_offset, d.stage, d.payload) for d in letters] == [
        (str(corpus), 2, "backfill", b"not json"),
        (str(corpus), 3, "backfill", b'{"id":"b","text":""}'),
    ]
    assert letters[1].error_message == "text is empty"


def test_backfill_to_elasticsearch_indexes_every_passage_once(
    settings: Settings, elasticsearch: SearchServer, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    build_embedder(models)
    index = f"{settings.topics.prefix}backfill"
    settings = settings.model_copy(
        update={"models_dir": models, "elasticsearch": ElasticsearchSettings(url=elasticsearch.url, index=index)}
    )
    texts = sample_texts()[:40]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)))

    first = backfill(settings, [corpus], tmp_path / "e.parquet", to="index")
    again = backfill(settings, [corpus], tmp_path / "e.parquet", to="index")  # same ids: replaced

    assert first.indexed == again.indexed == first.rows_out == len(texts) - first.rejected
    client = Elasticsearch(elasticsearch.url)
    try:
        client.indices.refresh(index=index)
        assert client.count(index=index)["count"] == first.indexed
    finally:
        client.close()
    with Searcher(settings) as searcher:
        assert searcher.search(texts[5], k=3).hits[0].id == "p5"
