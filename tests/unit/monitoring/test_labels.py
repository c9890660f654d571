"""The label table and the join on read, without a broker: files, last label wins, late or missing labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from inferstream.config import Settings
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.errors import RecordValidationError
from inferstream.monitoring.label_expiry import label_counts, overdue, read_expired, write_expired
from inferstream.monitoring.label_join import LABEL_COLUMNS, decode_label
from inferstream.monitoring.label_table import (
    label_files,
    labels_dir,
    read_labels,
    remove_temporary_labels,
    write_labels,
    written_label_offsets,
)
from inferstream.monitoring.table import export, read_table, records, table_files, write_batch
from inferstream.schemas import codec_for
from inferstream.schemas.records import Label, Prediction
from inferstream.streams.file_sink import SinkBackpressureError
from inferstream.streams.label_sink import LabelBuffer, LabelTableSink

LABELS = "t.labels"
PREDICTIONS = "t.predictions"


def _at(hour: int) -> datetime:
    return datetime(2026, 1, 1, hour, tzinfo=UTC)


def _label(id: str, value: object, hour: int, **fields: object) -> Label:
    return codec_for(Label).validate({"id": id, "label": value, "label_time": _at(hour), **fields})


def _prediction(i: int, event: str | None = None) -> Prediction:
    return Prediction(
        request_id=f"r{i}",
        event_time=_at(0),
        model="m",
        version="1",
        inputs={"x": i},
        outputs={"label": "a"},
        latency={"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
        source_event_id=event,
    )


def _table(root: Path, n: int = 4) -> None:
    write_batch(root, PREDICTIONS, 0, [(i, _prediction(i, f"e{i}")) for i in range(n)])


def test_the_label_contract() -> None:
    codec = codec_for(Label)
    label = codec.decode(b'{"id": "r1", "label": "spam"}')
    assert (label.id_type, label.label, label.source, label.key()) == ("request", "spam", None, b"r1")
    assert label.label_time.tzinfo is not None  # defaults to now, in UTC
    for value in (1, 0.25, True):
        assert codec.validate({"id": "r1", "label": value}).label == value
    with pytest.raises(RecordValidationError, match="label"):
        codec.decode(b'{"id": "r1"}')
    with pytest.raises(RecordValidationError, match="label"):
        codec.decode(b'{"id": "r1", "label": null}')
    with pytest.raises(RecordValidationError, match="id_type"):
        codec.decode(b'{"id": "r1", "label": 1, "id_type": "user"}')
    with pytest.raises(RecordValidationError, match="id"):
        codec.decode(b'{"id": "", "label": 1}')


def test_label_files_are_named_by_offsets_and_read_back(tmp_path: Path) -> None:
    path = write_labels(tmp_path, LABELS, 2, [(5, _label("r1", "a", 1)), (6, _label("r2", 3, 2, source="s"))])
    assert path is not None
    assert path.parent == labels_dir(tmp_path)
    assert label_files(tmp_path) == [path]
    assert written_label_offsets(tmp_path, LABELS)[2].up_to == 6
    assert written_label_offsets(tmp_path, "other") == {}
    back = read_labels(tmp_path).to_pylist()
    assert [(r["id"], decode_label(r["label"]), r["source"], r["_offset"]) for r in back] == [
        ("r1", "a", None, 5),
        ("r2", 3, "s", 6),
    ]
    (labels_dir(tmp_path) / "half.parquet.tmp").write_bytes(b"x")
    assert remove_temporary_labels(tmp_path) == 1
    # The inference table's readers never take label files for prediction files.
    assert table_files(tmp_path) == []


def test_a_second_read_takes_the_files_that_came_since_and_a_rewritten_one_again(tmp_path: Path) -> None:
    def ids() -> list[str]:
        return sorted(read_labels(tmp_path).column("id").to_pylist())

    write_labels(tmp_path, LABELS, 0, [(0, _label("r0", "a", 1))])
    assert ids() == ["r0"]
    assert ids() == ["r0"]  # nothing new: the same rows, not read twice
    write_labels(tmp_path, LABELS, 1, [(0, _label("r1", "b", 1))])
    assert ids() == ["r0", "r1"]
    # A file rewritten in place (not what the sink does) is read again, with everything else.
    first = write_labels(tmp_path, LABELS, 0, [(0, _label("r9", "a longer label", 1))])
    assert first is not None
    assert ids() == ["r1", "r9"]


def test_the_last_label_wins_late_labels_join_and_missing_ones_stay_null(tmp_path: Path) -> None:
    _table(tmp_path)
    before = {f.path: f.path.read_bytes() for f in table_files(tmp_path)}
    write_labels(tmp_path, LABELS, 0, [(0, _label("r0", "a", 1)), (1, _label("r1", "b", 1))])
    # Later: r0 relabelled (the later label_time wins even from an older batch's view), r2 late.
    write_labels(tmp_path, LABELS, 0, [(2, _label("r0", "c", 5, source="review")), (3, _label("r2", 7.5, 9))])
    # A relabel with an older label time loses to the newer one, whatever its offset.
    write_labels(tmp_path, LABELS, 1, [(0, _label("r0", "old", 2))])
    rows = {r["request_id"]: r for r in read_table(tmp_path).to_pylist()}
    assert {k: (decode_label(r["label"]), r["label_source"]) for k, r in rows.items()} == {
        "r0": ("c", "review"),
        "r1": ("b", None),
        "r2": (7.5, None),
        "r3": (None, None),  # never labelled
    }
    assert rows["r0"]["label_time"] == _at(5)
    # The inference table's files are untouched.
    assert {f.path: f.path.read_bytes() for f in table_files(tmp_path)} == before


def test_a_tie_in_label_time_goes_to_the_later_record(tmp_path: Path) -> None:
    _table(tmp_path, 1)
    write_labels(tmp_path, LABELS, 0, [(0, _label("r0", "first", 1)), (1, _label("r0", "second", 1))])
    assert decode_label(read_table(tmp_path).column("label")[0].as_py()) == "second"


def test_labels_by_event_id_and_the_request_id_first(tmp_path: Path) -> None:
    _table(tmp_path, 3)
    write_labels(
        tmp_path,
        LABELS,
        0,
        [
            (0, _label("e1", 1, 1, id_type="event")),
            (1, _label("e2", 1, 1, id_type="event")),
            (2, _label("r2", 0, 1)),  # r2 is e2's request: its own label is taken
            (3, _label("e0", 5, 1)),  # an id_type of request: names no request "e0"
        ],
    )
    labels = [decode_label(v) for v in read_table(tmp_path).column("label").to_pylist()]
    assert labels == [None, 1, 0]


def test_columns_exports_and_records_carry_the_labels(tmp_path: Path) -> None:
    _table(tmp_path, 2)
    write_labels(tmp_path, LABELS, 0, [(0, _label("r1", True, 1, source="s"))])
    only = read_table(tmp_path, columns=["model", "label"])
    assert only.column_names == ["model", "label"]
    assert only.column("label").to_pylist() == [None, "true"]
    assert read_table(tmp_path, columns=["request_id"]).column_names == ["request_id"]
    assert not set(LABEL_COLUMNS) & set(read_table(tmp_path, labels=False).column_names)
    assert [r["label"] for r in records(read_table(tmp_path))] == [None, True]
    out = export(read_table(tmp_path), tmp_path / "out" / "x.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["label"], r["label_source"]) for r in lines] == [(None, None), (True, "s")]


def test_an_empty_table_has_the_label_columns(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    table = read_table(tmp_path)
    assert table.num_rows == 0
    assert set(LABEL_COLUMNS) <= set(table.column_names)


def test_labels_past_the_horizon_are_dead_lettered_and_counts_reconcile(tmp_path: Path) -> None:
    _table(tmp_path, 2)
    write_labels(
        tmp_path,
        LABELS,
        0,
        [
            (0, _label("r0", 1, 1)),
            (1, _label("r0", 0, 2)),  # twice: both records joined
            (2, _label("e1", 1, 1, id_type="event")),
            (3, _label("rX", 1, 1)),  # no prediction, labelled at 01:00
            (4, _label("rY", 1, 5)),  # no prediction, labelled at 05:00
            (5, _label("rX", 2, 3)),  # rX again at 03:00
        ],
    )
    predictions = read_table(tmp_path, labels=False)
    nothing = read_expired(tmp_path)
    assert label_counts(predictions, read_labels(tmp_path), nothing) == {
        "labels": 6,
        "joined": 3,
        "dead_lettered": 0,
        "waiting": 3,
    }
    # At 06:00 with a horizon of two hours: rX's two records are overdue, rY's is not yet.
    due = overdue(read_labels(tmp_path), nothing, predictions, _at(6), 2 * 3600)
    assert sorted(due.column("_offset").to_pylist()) == [3, 5]
    write_expired(tmp_path, due, _at(6))
    expired = read_expired(tmp_path)
    assert label_counts(predictions, read_labels(tmp_path), expired) == {
        "labels": 6,
        "joined": 3,
        "dead_lettered": 2,
        "waiting": 1,
    }
    assert overdue(read_labels(tmp_path), expired, predictions, _at(6), 2 * 3600).num_rows == 0  # once
    assert [
        r["_offset"] for r in overdue(read_labels(tmp_path), expired, predictions, _at(8), 2 * 3600).to_pylist()
    ] == [4]
    # A dead-lettered label joins nothing, even when its prediction comes after all.
    write_batch(tmp_path, PREDICTIONS, 1, [(0, _prediction(99).model_copy(update={"request_id": "rX"}))])
    rows = {r["request_id"]: r["label"] for r in read_table(tmp_path).to_pylist()}
    assert rows["rX"] is None
    assert rows["r0"] == "0"


def test_the_buffer_writes_per_partition_and_skips_what_a_restart_finds_written(tmp_path: Path) -> None:
    settings = Settings.load(state_dir=tmp_path)
    buffer = LabelBuffer(settings, max_rows=3, max_delay_s=60)
    buffer.setup()
    buffer.add(0, 0, _label("r0", 1, 1))
    buffer.add(1, 0, _label("r1", 1, 1))
    buffer.add(0, 1, _label("r2", 1, 1))
    assert buffer.due()
    with pytest.raises(SinkBackpressureError):
        buffer.add(0, 2, _label("r3", 1, 1))
    assert len(buffer.flush()) == 2
    assert buffer.labels_written == 3
    again = LabelBuffer(settings, max_rows=3, max_delay_s=60)
    again.setup()
    assert again.already_written(0, 1)
    assert again.already_written(1, 0)
    assert not again.already_written(0, 2)
    assert not again.already_written(2, 0)
    assert not again.due()
    assert again.flush() == []


class _Letters:
    """Stands in for the dead-letter writer: keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def send(self, **letter: object) -> None:
        self.sent.append(letter)

    def flush(self) -> None:
        pass


def test_the_sink_sweeps_overdue_labels_once_and_none_without_a_table(tmp_path: Path) -> None:
    settings = Settings.load(state_dir=tmp_path)
    sink = LabelTableSink(settings, horizon_s=3600)
    root = sink.buffer.root
    write_labels(root, sink.buffer.topic, 0, [(0, _label("ghost", "g", 1)), (1, _label("r0", "a", 1))])
    letters = _Letters()
    sink._sweep(cast(DeadLetterWriter, letters))
    assert letters.sent == []  # no inference table (yet, or elsewhere): nothing is judged missing
    _table(root, 1)
    sink._sweep(cast(DeadLetterWriter, letters))
    sink._sweep(cast(DeadLetterWriter, letters))
    (letter,) = letters.sent
    assert (letter["key"], letter["error_class"], letter["offset"]) == (b"ghost", "LabelHorizonError", 0)
    assert "no prediction with request id 'ghost'" in str(letter["error"])
    assert sink.expired == 1
    assert json.loads(cast(bytes, letter["payload"]))["label"] == "g"
