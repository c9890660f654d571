"""The CLI as users run it: a subprocess against the real broker."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from inferstream import Client, Settings


def _cli(
    settings: Settings, *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "inferstream", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=_env(settings),
        check=False,
    )


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "COLUMNS": "200",
    }


def _ids(settings: Settings) -> list[str]:
    with Client(settings) as client:
        return sorted(m.record.id for m in client.subscribe("events", from_beginning=True, idle_timeout=5) if m.record)


def test_topics_create_list_describe(settings: Settings) -> None:
    created = _cli(settings, "topics", "create", "--platform")
    assert created.returncode == 0, created.stderr.decode()
    assert f"created {settings.topics.name('events')}" in created.stderr.decode()
    again = _cli(settings, "topics", "create", "--platform")
    assert "exists" in again.stderr.decode()
    listed = _cli(settings, "topics", "list").stdout.decode().split()
    assert set(settings.topics.platform_topics().values()) <= set(listed)
    described = _cli(settings, "topics", "describe", "control")
    text = described.stderr.decode()
    assert "3 partitions" in text
    assert "cleanup.policy=compact" in text
    missing = _cli(settings, "topics", "describe", "nope")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr.decode()


def test_produce_jsonl_csv_parquet_and_stdin(settings: Settings, tmp_path: Path) -> None:
    assert _cli(settings, "topics", "create", "--platform").returncode == 0
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"j{i}", "type": "review", "text": f"t{i}"}) + "\n" for i in range(5)))
    csv = tmp_path / "b.csv"
    csv.write_text("id,type,features.amount,features.country\nc1,txn,12.5,FR\nc2,txn,3,DE\n")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2"], "type": ["doc", "doc"], "text": ["hello", "world"]}), parquet)
    for path in (jsonl, csv, parquet):
        result = _cli(settings, "produce", "events", str(path))
        assert result.returncode == 0, result.stderr.decode()
    piped = _cli(settings, "produce", "events", "-", stdin=b'{"id": "s1", "type": "review", "text": "piped"}\n')
    assert piped.returncode == 0, piped.stderr.decode()
    assert _ids(settings) == ["c1", "c2", "j0", "j1", "j2", "j3", "j4", "p1", "p2", "s1"]
    with Client(settings) as client:
        by_id = {
            m.record.id: m.record for m in client.subscribe("events", from_beginning=True, idle_timeout=5) if m.record
        }
    assert by_id["c1"].features == {"amount": 12.5, "country": "FR"}
    assert by_id["c2"].features == {"amount": 3, "country": "DE"}


def test_produce_bad_input_names_line_and_field(settings: Settings, tmp_path: Path) -> None:
    assert _cli(settings, "topics", "create", "--platform").returncode == 0
    path = tmp_path / "bad.csv"
    path.write_text("id,type,text\nk1,review,fine\nk2,,missing type\nk3,review,also fine\n")
    failed = _cli(settings, "produce", "events", str(path))
    assert failed.returncode == 1
    error = failed.stderr.decode()
    assert "line 3" in error
    assert "type: required field is missing" in error
    assert _ids(settings) == ["k1"]
    skipped = _cli(settings, "produce", "events", str(path), "--on-error=skip")
    assert skipped.returncode == 0
    summary = skipped.stderr.decode()
    assert "rejected line 3: type: required field is missing" in summary
    assert "│    3 │        2 │        1 │             0 │" in summary
    dead = _cli(settings, "produce", "events", str(path), "--on-error", "dlq")
    assert dead.returncode == 0
    listed = _cli(settings, "dlq", "list", "--payload")
    text = listed.stderr.decode()
    assert "1 dead letters" in text
    assert "k2,,missing type" in text  # the original CSV line


def test_subscribe_prints_json_lines_and_resumes_with_a_group(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", [{"id": f"e{i}", "type": "review", "text": "x"} for i in range(6)])
    first = _cli(settings, "subscribe", "events", "--from-beginning", "--max", "4", "--group", "g1")
    assert first.returncode == 0, first.stderr.decode()
    lines = [json.loads(line) for line in first.stdout.decode().splitlines()]
    assert len(lines) == 4
    assert all(line["type"] == "review" for line in lines)
    # Committed offsets win; --from-beginning covers partitions the first run never reached.
    rest = _cli(settings, "subscribe", "events", "--group", "g1", "--from-beginning", "--timeout", "5", "--envelope")
    envelopes = [json.loads(line) for line in rest.stdout.decode().splitlines()]
    assert len(envelopes) == 2
    assert {e["value"]["id"] for e in envelopes} | {line["id"] for line in lines} == {f"e{i}" for i in range(6)}
    assert envelopes[0]["headers"]["inferstream-schema"] == "event/1"
    assert envelopes[0]["key"] == envelopes[0]["value"]["id"]


def test_subscribe_stops_cleanly_on_sigint_and_sigterm(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", [{"id": f"e{i}", "type": "review", "text": "x"} for i in range(3)])
    for sig in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen(
            [sys.executable, "-m", "inferstream", "subscribe", "events", "--from-beginning", "--group", f"sig{sig}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(settings),
        )
        assert process.stdout is not None
        received = [process.stdout.readline() for _ in range(3)]
        assert all(b'"type":"review"' in line for line in received)
        time.sleep(0.5)
        process.send_signal(sig)
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        assert b"3 records" in err
        # The offsets were committed on the way out: the group has nothing left to read.
        again = _cli(settings, "subscribe", "events", "--group", f"sig{sig}", "--timeout", "4")
        assert again.stdout == b""


def test_produce_to_a_missing_topic_names_the_closest_one_at_once(settings: Settings, tmp_path: Path) -> None:
    assert _cli(settings, "topics", "create", "--platform").returncode == 0
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "e1", "type": "review", "text": "t"}) + "\n")
    events = settings.topics.name("events")
    for typed, full in ((settings.topics.name("event"), settings.topics.name("event")), ("evnets", "evnets")):
        started = time.monotonic()
        result = _cli(settings, "produce", typed, str(path), timeout=60)
        assert time.monotonic() - started < 30  # at once, not after a delivery timeout
        assert result.returncode == 1
        error = result.stderr.decode()
        assert f"error: topic {full} does not exist; did you mean {events}?" in error, error
        assert f"(create it with `inferstream topics create {full}`)" in error
        assert "Traceback" not in error
    # Nothing like any topic: no guess, only how to create it.
    unlike = _cli(settings, "produce", "zzzz-qqqq", str(path), "--schema", "event")
    assert unlike.returncode == 1
    assert "topic zzzz-qqqq does not exist: create it with `inferstream topics create zzzz-qqqq`" in (
        unlike.stderr.decode()
    )
    assert _ids(settings) == []


def test_a_failed_produce_says_how_many_records_were_produced(settings: Settings, tmp_path: Path) -> None:
    assert _cli(settings, "topics", "create", "--platform").returncode == 0
    events = settings.topics.name("events")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,type,text\nk1,review,fine\nk2,review,fine too\nk3,,missing type\nk4,review,never sent\n")
    failed = _cli(settings, "produce", "events", str(bad))
    assert failed.returncode == 1
    error = failed.stderr.decode()
    assert "line 4" in error
    assert f"2 records were produced to {events} before the failure" in error, error
    assert _ids(settings) == ["k1", "k2"]
    # The broker refuses one record (over the topic's max.message.bytes): a delivery failure.
    small = settings.topics.name("small-messages")
    created = _cli(settings, "topics", "create", small, "-p", "1", "--config", "max.message.bytes=2048")
    assert created.returncode == 0, created.stderr.decode()
    noise = os.urandom(3000).hex()  # does not compress under the limit
    rows = [{"id": "s1", "type": "review", "text": "fits"}, {"id": "s2", "type": "review", "text": noise}]
    too_large = tmp_path / "large.jsonl"
    too_large.write_text("".join(json.dumps(row) + "\n" for row in rows))
    refused = _cli(settings, "produce", small, str(too_large), "--schema", "event")
    assert refused.returncode == 1
    error = refused.stderr.decode()
    assert "MSG_SIZE_TOO_LARGE" in error or "too large" in error, error
    assert f"1 record was produced to {small} before the failure" in error, error


def test_subscribe_from_beginning_max_stops_at_the_end_unless_follow(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", [{"id": f"e{i}", "type": "review", "text": "x"} for i in range(3)])
    started = time.monotonic()
    bounded = _cli(settings, "subscribe", "events", "--from-beginning", "--max", "10", timeout=60)
    assert bounded.returncode == 0, bounded.stderr.decode()
    assert time.monotonic() - started < 45
    assert sorted(json.loads(line)["id"] for line in bounded.stdout.decode().splitlines()) == ["e0", "e1", "e2"]
    events = settings.topics.name("events")
    assert f"read 3 records from {events}: the end of the topic as it was at the start" in bounded.stderr.decode()

    # With a group: the next bounded read starts where the last stopped, and stops at the new end.
    with Client(settings) as client:
        client.produce("events", [{"id": "e3", "type": "review", "text": "x"}])
    first = _cli(settings, "subscribe", "events", "--from-beginning", "--max", "2", "--group", "g")
    assert len(first.stdout.decode().splitlines()) == 2
    assert "read 2 records" in first.stderr.decode()
    assert "the end of the topic" not in first.stderr.decode()  # it stopped at --max
    rest = _cli(settings, "subscribe", "events", "--from-beginning", "--max", "10", "--group", "g")
    assert len(rest.stdout.decode().splitlines()) == 2
    assert "read 2 records" in rest.stderr.decode()

    # --follow waits for new records until N (or, here, until the idle timeout).
    follower = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "subscribe", "events", "--from-beginning", "--max", "6", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(settings),
    )
    assert follower.stdout is not None
    received = [follower.stdout.readline() for _ in range(4)]  # what was there
    assert all(b'"type":"review"' in line for line in received)
    time.sleep(1.0)
    assert follower.poll() is None  # still waiting, where a bounded read would have stopped
    with Client(settings) as client:
        client.produce("events", [{"id": f"n{i}", "type": "review", "text": "x"} for i in range(2)])
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err.decode()
    assert sorted(json.loads(line)["id"] for line in out.decode().splitlines()) == ["n0", "n1"]
    assert b"read 6 records" in err

    idle = _cli(settings, "subscribe", "events", "--max", "5", "--timeout", "3")
    assert idle.returncode == 0
    assert idle.stdout == b""
    assert "read 0 records" in idle.stderr.decode()


def test_subscribe_to_a_missing_topic_names_the_closest_one(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    missing = settings.topics.name("predictons")
    result = _cli(settings, "subscribe", missing, "--from-beginning", "--max", "1", timeout=60)
    assert result.returncode == 1
    assert f"topic {missing} does not exist; did you mean {settings.topics.name('predictions')}?" in (
        result.stderr.decode()
    )
    # Following a topic: the consumer's own error, at once.
    followed = _cli(settings, "subscribe", missing, timeout=60)
    assert followed.returncode == 1
    assert f"{missing}: Broker: Unknown topic or partition" in followed.stderr.decode()
