"""The label table: every label from the ``labels`` topic in Parquet, beside the inference table.

Layout: ``<table dir>/_labels/<topic>+<partition>+<first offset>-<last offset>.parquet``, one
file per flushed batch of one Kafka partition, renamed into place before the sink commits
(the inference table's files are never touched: labels are joined to them on read, see
:mod:`inferstream.monitoring.label_join`). The inference table's readers do not look
into ``_labels``: its files sit under ``model=*/date=*``.

Columns: the ``label`` contract's fields (``label`` as JSON text, so a class and a number
share one column, as inputs and outputs do) plus ``_topic``, ``_partition`` and ``_offset``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from inferstream.monitoring._files import FILE, TMP_SUFFIX, Written, file_name, write_in_place
from inferstream.schemas.records import Label

LABELS_DIR = "_labels"
_TIMESTAMP = pa.timestamp("ms", tz="UTC")

_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("id_type", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("label_time", _TIMESTAMP, nullable=False),
        pa.field("source", pa.string()),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("_topic", pa.string()),
        pa.field("_partition", pa.int32()),
        pa.field("_offset", pa.int64()),
    ]
)


def labels_dir(table_root: Path) -> Path:
    """Where the label table of the inference table at ``table_root`` lives."""
    return table_root / LABELS_DIR


def label_schema() -> pa.Schema:
    """The Arrow schema of the label table's files."""
    return _SCHEMA


def label_files(table_root: Path) -> list[Path]:
    """Every complete file of the label table, in name order."""
    return sorted(p for p in labels_dir(table_root).glob("*.parquet") if FILE.match(p.name))


def written_label_offsets(table_root: Path, topic: str) -> dict[int, Written]:
    """Per partition of ``topic``, every offset up to which the label files hold (or dead-lettered) records.

    A batch is one file, and batches are written one after another, so the highest last
    offset of a partition's files covers everything before it.
    """
    up_to: dict[int, int] = {}
    for path in label_files(table_root):
        match = FILE.match(path.name)
        if match and match["topic"] == topic:
            partition = int(match["partition"])
            up_to[partition] = max(int(match["last"]), up_to.get(partition, -1))
    return {partition: Written(last) for partition, last in up_to.items()}


def remove_temporary_labels(table_root: Path) -> int:
    """Delete label files a crashed writer left half-written; how many."""
    count = 0
    for path in labels_dir(table_root).glob(f"*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        count += 1
    return count


def write_labels(table_root: Path, topic: str, partition: int, rows: Sequence[tuple[int, Label]]) -> Path | None:
    """Write one partition's batch of (offset, label) as one file named by its offset range; its path."""
    if not rows:
        return None
    directory = labels_dir(table_root)
    directory.mkdir(parents=True, exist_ok=True)
    labels = [label for _, label in rows]
    table = pa.Table.from_arrays(
        [
            pa.array([label.id for label in labels], pa.string()),
            pa.array([label.id_type for label in labels], pa.string()),
            pa.array([json.dumps(label.label) for label in labels], pa.string()),
            pa.array([label.label_time for label in labels], _TIMESTAMP),
            pa.array([label.source for label in labels], pa.string()),
            pa.array([list(label.attributes.items()) for label in labels], _SCHEMA.field("attributes").type),
            pa.array([topic] * len(rows), pa.string()),
            pa.array([partition] * len(rows), pa.int32()),
            pa.array([offset for offset, _ in rows], pa.int64()),
        ],
        schema=_SCHEMA,
    )
    return write_in_place(table, directory / file_name(topic, partition, rows[0][0], rows[-1][0]))


def read_labels(table_root: Path) -> pa.Table:
    """Every label in the label table, as written (repeats included, in no particular order; empty when none).

    The files are immutable once in place, so a reader that asks again (a quality monitor
    each round, the label sink at each sweep) reads only the files that came since: what
    was read is kept per table, by file name, size and modification time.
    """
    root = str(Path(table_root).absolute())
    files = {str(path): _stamp(path) for path in label_files(table_root)}
    if not files:
        return _SCHEMA.empty_table()
    seen, table = _READ.get(root, ({}, _SCHEMA.empty_table()))
    if any(files.get(path) != stamp for path, stamp in seen.items()):
        seen, table = {}, _SCHEMA.empty_table()  # a file gone or rewritten: read them all again
    new = [path for path in files if path not in seen]
    if new:
        table = pa.concat_tables([table, ds.dataset(new, schema=_SCHEMA, format="parquet").to_table()])
        _READ[root] = (files, table)
        while len(_READ) > _TABLES_KEPT:
            _READ.pop(next(iter(_READ)))
    return table


#: The label tables read so far: root → (file → stamp, their rows). A few, in the order first read.
_READ: dict[str, tuple[dict[str, tuple[int, int]], pa.Table]] = {}
_TABLES_KEPT = 4


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
