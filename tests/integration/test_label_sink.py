"""Labels against the real broker: produced by the SDK and the CLI, archived beside the table, joined on read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from inferstream import Client, Settings
from inferstream.monitoring.label_join import decode_label
from inferstream.monitoring.label_table import label_files, read_labels
from inferstream.monitoring.table import read_table, table_dir
from inferstream.streams.label_sink import LabelTableSink
from inferstream.streams.table_sink import InferenceTableSink

# What the sinks' threads raised: a sink that died fails the wait at once, with its error.
_ERRORS: list[BaseException] = []


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and not _ERRORS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ERRORS, _ERRORS
    assert condition()


def _run(sink: InferenceTableSink | LabelTableSink) -> None:
    try:
        sink.run()
    except BaseException as exc:
        _ERRORS.append(exc)
        raise


def _start(sink: InferenceTableSink | LabelTableSink) -> threading.Thread:
    thread = threading.Thread(target=_run, args=(sink,), daemon=True)
    thread.start()
    assert sink.ready.wait(60)
    return thread


def _stop(sink: InferenceTableSink | LabelTableSink, thread: threading.Thread) -> None:
    sink.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert not _ERRORS, _ERRORS


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "inferstream", *args], capture_output=True, timeout=120, env=env, check=False
    )


def _prediction(i: int) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "event_time": "2026-01-01T00:00:00Z",
        "model": "m",
        "version": "1",
        "inputs": {"x": i},
        "outputs": {"label": "a"},
        "latency": {"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
        "source_event_id": f"e{i}",
    }


def test_labels_late_twice_or_never_are_joined_on_read(settings: Settings, tmp_path: Path) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    table = InferenceTableSink(settings, max_rows=1000, max_delay_s=0.3)
    labels = LabelTableSink(settings, max_rows=1000, max_delay_s=0.3, sweep_s=3600)  # one sweep, at the start
    table_thread, labels_thread = _start(table), _start(labels)
    with Client(settings) as client:
        # r10's label comes before its prediction; "ghost" (labelled long ago) and r11 (now) name none.
        early = [
            {"id": "r10", "label": "z", "label_time": "2026-01-01T00:30:00Z"},
            {"id": "ghost", "label": "g", "label_time": "2026-01-01T00:00:00Z"},
            {"id": "r11", "label": "w"},
        ]
        assert client.produce_labels(early, source="sdk").produced == 3
        assert client.produce("predictions", [_prediction(i) for i in range(11)]).produced == 11
        first = [{"id": f"r{i}", "label": "a", "label_time": "2026-01-01T01:00:00Z"} for i in range(4)]
        assert client.produce_labels(first, source="sdk").produced == 4
        client.producer.produce(client.topic("labels"), b"not a label", b"junk")
        client.producer.flush()
        _wait(lambda: table.stats.written == 11 and labels.stats.written == 7 and labels.stats.dead_letters == 1)
    _stop(labels, labels_thread)  # the label sink restarts below: nothing is lost or written twice

    # Hours later, from a file: r0 relabelled, r5 labelled by its event id.
    late = tmp_path / "late.jsonl"
    late.write_text(
        json.dumps({"id": "r0", "label": "b", "label_time": "2026-01-01T05:00:00Z", "source": "audit"})
        + "\n"
        + json.dumps({"id": "e5", "id_type": "event", "label": "c", "label_time": "2026-01-01T06:00:00Z"})
        + "\n"
    )
    produced = _cli(settings, "produce", "labels", str(late))
    assert produced.returncode == 0, produced.stderr.decode()
    # A bad line is refused with its line and field; with --on-error=dlq it is dead-lettered and the rest goes on.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r7", "label": "a"}\n{"id": "r8"}\n')
    failed = _cli(settings, "produce", "labels", str(bad))
    assert failed.returncode == 1
    assert "line 2" in failed.stderr.decode()
    assert "label: required field is missing" in failed.stderr.decode()
    dead = _cli(settings, "produce", "labels", str(bad), "--on-error", "dlq")
    assert dead.returncode == 0, dead.stderr.decode()  # r7 once more (the same label twice), r8 dead-lettered

    # Restarted with a horizon of an hour: the ghost's label is dead-lettered, r11's waits.
    again = LabelTableSink(settings, max_rows=1000, max_delay_s=0.3, horizon_s=3600, sweep_s=0.2)
    again_thread = _start(again)
    _wait(lambda: again.stats.written == 4 and again.expired == 1)
    _stop(again, again_thread)
    _stop(table, table_thread)
    assert again.stats.consumed == again.stats.written + again.stats.dead_letters + again.stats.skipped
    assert again.stats.consumed == 4  # resumed after what the first sink committed

    root = table_dir(settings)
    assert read_labels(root).num_rows == 11  # every valid label once, repeats kept as sent
    rows = {row["request_id"]: row for row in read_table(root).to_pylist()}
    assert len(rows) == 11
    joined = {rid: (decode_label(row["label"]), row["label_source"]) for rid, row in rows.items()}
    assert joined["r0"] == ("b", "audit")  # twice: the later label wins
    assert joined["r1"] == ("a", "sdk")
    assert joined["r5"] == ("c", None)  # by event id
    assert joined["r7"] == ("a", None)
    assert joined["r10"] == ("z", "sdk")  # came before its prediction
    assert joined["r9"] == (None, None)  # never labelled
    assert rows["r0"]["label_time"].isoformat() == "2026-01-01T05:00:00+00:00"

    counts = _cli(settings, "table", "labels")
    assert counts.returncode == 0, counts.stderr.decode()
    # labels = joined + dead-lettered (ghost) + waiting (r11)
    assert re.search(r"│ *11 *│ *9 *│ *1 *│ *1 *│", counts.stderr.decode()), counts.stderr.decode()
    with Client(settings) as client:
        (letter,) = client.dead_letters(source_topic="labels", reason="LabelHorizonError")
    assert letter.original_key == b"ghost"
    assert "no prediction with request id 'ghost'" in letter.error_message
    exported = tmp_path / "out.jsonl"
    assert _cli(settings, "table", "export", str(exported)).returncode == 0
    by_id = {r["request_id"]: r for r in map(json.loads, exported.read_text().splitlines())}
    assert (by_id["r0"]["label"], by_id["r9"]["label"]) == ("b", None)


def test_a_replay_after_a_crash_writes_no_label_twice_and_loses_none(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        assert client.produce_labels([{"id": f"r{i}", "label": i % 2} for i in range(60)]).produced == 60
    first = LabelTableSink(settings, max_rows=25, max_delay_s=0.2, group_id="crash-1")
    thread = _start(first)
    _wait(lambda: first.stats.written == 60)
    _stop(first, thread)
    root = table_dir(settings)
    # A crash after the renames, before the commit: a new group replays everything, writes nothing.
    replay = LabelTableSink(settings, max_rows=25, max_delay_s=0.2, group_id="crash-2")
    thread = _start(replay)
    _wait(lambda: replay.stats.consumed == 60)
    _stop(replay, thread)
    assert (replay.stats.skipped, replay.stats.written) == (60, 0)
    # A crash before the last rename: that file's labels are written again, the rest skipped.
    last = max(label_files(root), key=lambda p: p.stat().st_mtime_ns)
    lost = pq.read_metadata(last).num_rows
    last.unlink()
    again = LabelTableSink(settings, max_rows=25, max_delay_s=0.2, group_id="crash-3")
    thread = _start(again)
    _wait(lambda: again.stats.consumed == 60)
    _stop(again, thread)
    assert (again.stats.written, again.stats.skipped) == (lost, 60 - lost)
    written = read_labels(root)
    assert sorted(written.column("id").to_pylist()) == sorted(f"r{i}" for i in range(60))
