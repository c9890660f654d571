"""The inference table's files: batches split by model and date, and what a crash between parts leaves."""

from __future__ import annotations

from pathlib import Path

from inferstream.config import Settings
from inferstream.monitoring.table import read_table, table_files, write_batch, written_offsets
from inferstream.schemas.records import Prediction
from inferstream.streams.table_sink import ParquetTableSink

TOPIC = "t.predictions"
MIDNIGHT = 1_735_689_600  # 2025-01-01T00:00:00Z


def _rows(first: int, count: int) -> list[tuple[int, Prediction]]:
    """Offsets first.. whose event times cross midnight halfway: two dates, so two parts."""
    return [
        (
            offset,
            Prediction(
                request_id=f"p{offset}",
                event_time=MIDNIGHT - count // 2 + (offset - first),
                model="m",
                version="1",
                inputs={"x": offset},
                outputs={"label": "a"},
                latency={"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
            ),
        )
        for offset in range(first, first + count)
    ]


def test_a_batch_over_two_dates_is_written_as_numbered_parts(tmp_path: Path) -> None:
    paths = write_batch(tmp_path, TOPIC, 0, _rows(0, 10))
    assert [p.parent.name for p in paths] == ["date=2024-12-31", "date=2025-01-01"]
    assert [(f.first, f.last, f.part, f.parts) for f in sorted(table_files(tmp_path), key=lambda f: f.part)] == [
        (0, 9, 1, 2),
        (0, 9, 2, 2),
    ]
    assert written_offsets(tmp_path, TOPIC)[0].up_to == 9
    # A batch of one model and date keeps the plain name.
    (single,) = write_batch(tmp_path, TOPIC, 1, _rows(0, 10)[:4])
    assert single.name == f"{TOPIC}+1+{0:020d}-{3:020d}.parquet"
    assert written_offsets(tmp_path, TOPIC)[1].up_to == 3
    # Batch jobs file rows under a name made of their input file's, which may hold a "+".
    write_batch(tmp_path, "job.score.a+b.csv", 0, _rows(0, 10))
    assert {(f.partition, f.last, f.part) for f in table_files(tmp_path) if f.topic == "job.score.a+b.csv"} == {
        (0, 9, 1),
        (0, 9, 2),
    }


def test_a_crash_between_parts_loses_nothing_and_writes_nothing_twice(tmp_path: Path) -> None:
    settings = Settings.load(state_dir=tmp_path)
    sink = ParquetTableSink(settings)
    sink.setup()
    batches = [_rows(0, 10), _rows(10, 10)]
    for offset, prediction in batches[0]:
        sink.add(0, offset, prediction)
    sink.flush()
    # The second batch's first part is renamed into place, then the process dies: offsets 10..19
    # are not committed, and the part with the later date (offsets 15..19) never reached the disk.
    paths = write_batch(sink.root, sink.topic, 0, batches[1])
    paths[1].unlink()

    restarted = ParquetTableSink(settings)
    restarted.setup()
    assert [o for o in range(25) if restarted.already_written(0, o)] == list(range(15))
    # The replay from the committed offset writes exactly what is missing.
    for offset, prediction in batches[1]:
        if not restarted.already_written(0, offset):
            restarted.add(0, offset, prediction)
    restarted.flush()
    ids = read_table(restarted.root).column("request_id").to_pylist()
    assert sorted(ids) == sorted(f"p{o}" for o in range(20))
    assert [o for o in range(25) if o in written_offsets(restarted.root, restarted.topic)[0]] == list(range(20))


def test_files_written_before_a_column_was_added_read_it_as_null(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from inferstream.schemas.records import Lineage

    lineage = Lineage(uri="models:/m/4", registered_model="m", registered_version="4", sha256="0" * 64)
    rows = [(o, p.model_copy(update={"lineage": lineage})) for o, p in _rows(0, 4)]
    new = write_batch(tmp_path, TOPIC, 0, rows)
    for old in write_batch(tmp_path, TOPIC, 1, _rows(0, 4)):
        pq.write_table(pq.read_table(old).drop_columns(["lineage"]), old)  # as an older release wrote it
    table = read_table(tmp_path)
    assert table.num_rows == 8
    by_partition: dict[int, list] = {0: [], 1: []}
    for partition, value in zip(table["_partition"].to_pylist(), table["lineage"].to_pylist(), strict=True):
        by_partition[partition].append(value)
    assert by_partition[1] == [None] * 4
    assert [v["registered_version"] for v in by_partition[0]] == ["4"] * 4
    assert all(path.exists() for path in new)


def test_each_row_keeps_its_records_trace_id_and_older_files_read_it_as_null(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    settings = Settings.load(state_dir=tmp_path)
    sink = ParquetTableSink(settings)
    sink.setup()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    for offset, prediction in _rows(0, 4):
        sink.add_rows(0, offset, [prediction], trace if offset % 2 == 0 else None)
    sink.flush()
    for old in write_batch(tmp_path / "table", TOPIC, 1, _rows(0, 2)):
        pq.write_table(pq.read_table(old).drop_columns(["trace_id"]), old)  # as an older release wrote it
    table = read_table(sink.root)
    by_row = {
        (partition, offset): value
        for partition, offset, value in zip(
            table["_partition"].to_pylist(), table["_offset"].to_pylist(), table["trace_id"].to_pylist(), strict=True
        )
    }
    assert by_row == {(0, 0): trace, (0, 1): None, (0, 2): trace, (0, 3): None, (1, 0): None, (1, 1): None}
