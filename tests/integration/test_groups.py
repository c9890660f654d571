"""Consumer groups through the real broker: lag per partition, and offset resets planned and executed.

Committed offsets are read back with confluent-kafka's own AdminClient, not the code under test.
"""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import confluent_kafka
from confluent_kafka.admin import AdminClient

from inferstream import Client, Settings
from inferstream.connectors.kafka.groups import ResetTarget
from inferstream.stack.testing import cli_env


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferstream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(settings),
        check=False,
    )


def _topic(client: Client, name: str, partitions: int = 2) -> str:
    full = client.settings.topics.name(name)
    client.topics.create(full, partitions=partitions)
    return full


def _produce(settings: Settings, topic: str, timestamps: dict[int, list[int]]) -> None:
    """Records on chosen partitions, with chosen timestamps (ms), one list per partition."""
    producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for partition, stamps in timestamps.items():
        for number, stamp in enumerate(stamps):
            producer.produce(topic, f"p{partition}-{number}".encode(), partition=partition, timestamp=stamp)
    assert producer.flush(30) == 0


def _now_ms(count: int, step_s: float = 1.0, start: datetime | None = None) -> list[int]:
    base = start or datetime.now(UTC) - timedelta(hours=1)
    return [int((base.timestamp() + i * step_s) * 1000) for i in range(count)]


def _committed(settings: Settings, group: str, topic: str, partitions: int = 2) -> dict[int, int | None]:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    request = confluent_kafka.ConsumerGroupTopicPartitions(
        group, [confluent_kafka.TopicPartition(topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result()
    return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in result.topic_partitions}


def _consume_all(client: Client, topic: str, group: str, count: int) -> None:
    with client.subscribe(topic, group=group, from_beginning=True, max_records=count, decode=False) as stream:
        assert sum(1 for _ in stream) == count


def test_a_group_that_read_part_of_a_topic_shows_its_lag(settings: Settings) -> None:
    group = settings.topics.group("lagging")
    with Client(settings) as client:
        topic = _topic(client, "lag-source")
        _produce(settings, topic, {0: _now_ms(10), 1: _now_ms(6)})
        _consume_all(client, topic, group, 16)
        _produce(settings, topic, {0: _now_ms(3), 1: _now_ms(2)})
        # A group outside the topic prefix: only --all shows it.
        outsider = f"outside-{settings.topics.prefix}seeded"
        client.groups.reset(outsider, topic, ResetTarget.to_earliest(), execute=True)

        info = client.groups.describe(group)
        assert (info.state, info.members, info.lag) == ("Empty", 0, 5)
        rows = [(p.topic, p.partition, p.committed, p.log_end, p.lag, p.member_id) for p in info.partitions]
        assert rows == [(topic, 0, 10, 13, 3, None), (topic, 1, 6, 8, 2, None)]
        assert client.groups.list() == [group]
        assert outsider in client.groups.list(all_groups=True)

    listed = _cli(settings, "groups", "--json")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert json.loads(line) == {
        "group": group,
        "state": "Empty",
        "members": 0,
        "lag": 5,
        "partitions": [
            {"topic": topic, "partition": 0, "committed": 10, "log_end": 13, "lag": 3}
            | {"member_id": None, "client_id": None, "host": None},
            {"topic": topic, "partition": 1, "committed": 6, "log_end": 8, "lag": 2}
            | {"member_id": None, "client_id": None, "host": None},
        ],
    }
    every = _cli(settings, "groups", "--all", "--match", settings.topics.prefix, "--json")
    assert sorted(json.loads(line)["group"] for line in every.stdout.splitlines()) == sorted([group, outsider])
    table = _cli(settings, "groups", group)
    assert table.returncode == 0, table.stderr
    assert f"{group}  (Empty, 0 members, lag 5)" in table.stderr
    assert topic in table.stderr
    missing = _cli(settings, "groups", settings.topics.group("never-ran"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


def test_reset_is_a_dry_run_until_execute_and_moves_the_committed_offsets(settings: Settings) -> None:
    group = settings.topics.group("replayer")
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    with Client(settings) as client:
        topic = _topic(client, "reset-source")
        # Partition 0: a record a second; partition 1: one every two seconds.
        _produce(settings, topic, {0: _now_ms(10, 1, start), 1: _now_ms(6, 2, start)})
        client.groups.reset(group, topic, ResetTarget.to_latest(), execute=True)
    assert _committed(settings, group, topic) == {0: 10, 1: 6}

    def reset(*args: str) -> str:
        result = _cli(settings, "groups", "reset", group, "--topic", topic, *args)
        assert result.returncode == 0, result.stderr
        return result.stderr

    dry = reset("--to-earliest")
    assert "dry run" in dry
    assert _committed(settings, group, topic) == {0: 10, 1: 6}

    assert "moved" in reset("--to-earliest", "--execute")
    assert _committed(settings, group, topic) == {0: 0, 1: 0}
    reset("--to-offset", "4", "--execute")
    assert _committed(settings, group, topic) == {0: 4, 1: 4}
    clamped = reset("--to-offset", "8", "--execute")
    assert "clamped to the log end 6 (asked 8)" in clamped
    assert _committed(settings, group, topic) == {0: 8, 1: 6}
    reset("--shift-by", "-3", "--execute")
    assert _committed(settings, group, topic) == {0: 5, 1: 3}
    assert "clamped to the log start 0" in reset("--shift-by", "-10", "--partition", "1", "--execute")
    assert _committed(settings, group, topic) == {0: 5, 1: 0}
    reset("--to-latest", "--execute")
    assert _committed(settings, group, topic) == {0: 10, 1: 6}
    at = (start + timedelta(seconds=3.5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reset("--to-datetime", at, "--execute")
    assert _committed(settings, group, topic) == {0: 4, 1: 2}

    planned = _cli(settings, "groups", "reset", group, "-t", topic, "--shift-by", "2", "--json")
    assert json.loads(planned.stdout) == {
        "group": group,
        "target": "shift by +2",
        "executed": False,
        "moves": [
            {"topic": topic, "partition": 0, "current": 4, "new": 6, "note": None},
            {"topic": topic, "partition": 1, "current": 2, "new": 4, "note": None},
        ],
    }
    assert _committed(settings, group, topic) == {0: 4, 1: 2}
    unclear = _cli(settings, "groups", "reset", group, "-t", topic, "--to-latest", "--to-earliest")
    assert unclear.returncode == 2
    assert "choose one of" in unclear.stderr


def test_reset_refuses_a_group_whose_consumers_run(settings: Settings) -> None:
    group = settings.topics.group("busy")
    with Client(settings) as client:
        topic = _topic(client, "busy-source")
        _produce(settings, topic, {0: _now_ms(3), 1: _now_ms(3)})
        with client.subscribe(topic, group=group, from_beginning=True, decode=False) as stream:
            next(stream)  # joined, and holds both partitions
            info = client.groups.describe(group)
            assert (info.state, info.members) == ("Stable", 1)
            assert {p.partition for p in info.partitions if p.member_id and p.client_id} == {0, 1}
            refused = _cli(settings, "groups", "reset", group, "--topic", topic, "--to-earliest", "--execute")
            assert refused.returncode == 1
            assert "has 1 active member" in refused.stderr
            assert "stop the group's consumers first" in refused.stderr
        committed = _committed(settings, group, topic)
        assert sum(offset or 0 for offset in committed.values()) >= 1
        # Stopped: now it moves.
        deadline = time.monotonic() + 30
        while client.groups.describe(group).members and time.monotonic() < deadline:
            time.sleep(0.2)
        client.groups.reset(group, topic, ResetTarget.to_earliest(), execute=True)
    assert _committed(settings, group, topic) == {0: 0, 1: 0}
