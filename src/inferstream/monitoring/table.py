"""The inference table: every prediction in Parquet, partitioned by model and date.

Layout under the table directory (``monitoring.table_dir``, default
``<state_dir>/table``)::

    model=<name>/date=<YYYY-MM-DD>/<topic>+<partition>+<first offset>-<last offset>.parquet

One file per flushed batch of one Kafka partition, named by the batch's offset
range; a batch that holds several models or dates is split into parts, named
``…-<last>+<part>of<parts>.parquet``. A file is written under a temporary name and
renamed into place; the sink commits its offsets once every part is in place.
After a crash the sink learns what the files hold (every offset up to the last
complete batch, and the offsets inside the parts of a batch the crash cut short)
and skips those when it replays, so rows are never written twice nor lost.
Readers ignore temporary files.

Columns: the ``prediction`` contract's Arrow schema (inputs and outputs as JSON
text) plus ``trace_id`` (the W3C trace id of the record's ``traceparent`` header, null
when it had none: files written before the column read it as null too), ``_topic``,
``_partition`` and ``_offset``. Readers also get ``label``, ``label_time`` and
``label_source``: the label table beside it (``_labels/``), joined on read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.monitoring._files import FILE, TMP_SUFFIX, Written, file_name, write_in_place
from inferstream.monitoring.label_expiry import read_expired, without_expired
from inferstream.monitoring.label_join import LABEL_COLUMNS, join_labels
from inferstream.monitoring.label_table import read_labels
from inferstream.schemas.arrow import arrow_schema, to_table
from inferstream.schemas.records import Prediction

_IDS = ["request_id", "source_event_id"]
_PARTITIONING = ds.partitioning(pa.schema([("model", pa.string()), ("date", pa.string())]), flavor="hive")


def table_dir(settings: Settings) -> Path:
    """Where the inference table lives (``monitoring.table_dir`` or ``<state_dir>/table``)."""
    return settings.monitoring.table_dir or settings.state_dir / "table"


def table_schema() -> pa.Schema:
    """The Arrow schema of the table's files."""
    return (
        arrow_schema(Prediction)
        .append(pa.field("trace_id", pa.string()))
        .append(pa.field("_topic", pa.string()))
        .append(pa.field("_partition", pa.int32()))
        .append(pa.field("_offset", pa.int64()))
    )


@dataclass(frozen=True, slots=True)
class TableFile:
    """A file of the table and the offsets it holds."""

    path: Path
    topic: str
    partition: int
    first: int
    last: int
    #: which part of its batch (1-based) and of how many
    part: int = 1
    parts: int = 1


def table_files(root: Path) -> list[TableFile]:
    """Every complete file of the table."""
    found = []
    for path in root.glob("model=*/date=*/*.parquet"):
        match = FILE.match(path.name)
        if match:
            partition, first, last = (int(match[group]) for group in ("partition", "first", "last"))
            part, parts = (int(match["part"]), int(match["parts"])) if match["parts"] else (1, 1)
            found.append(TableFile(path, match["topic"], partition, first, last, part, parts))
    return found


def written_offsets(root: Path, topic: str) -> dict[int, Written]:
    """Per partition of ``topic``, the offsets the table's files hold already.

    A partition's batches are written one after another and committed only once
    complete, so everything up to the last complete batch is written (or was
    dead-lettered); past it, only the parts a crash left in place, read from the files.
    """
    batches: dict[tuple[int, int, int, int], list[TableFile]] = {}
    for item in table_files(root):
        if item.topic == topic:
            batches.setdefault((item.partition, item.first, item.last, item.parts), []).append(item)
    up_to: dict[int, int] = {}
    cut_short = []
    for (partition, _, last, parts), files in batches.items():
        if len({f.part for f in files}) == parts:
            up_to[partition] = max(last, up_to.get(partition, -1))
        else:
            cut_short.append((partition, last, files))
    beyond: dict[int, set[int]] = {}
    for partition, last, files in cut_short:
        if last > up_to.get(partition, -1):
            for item in files:
                offsets = pq.ParquetFile(item.path).read(columns=["_offset"]).column("_offset").to_pylist()
                beyond.setdefault(partition, set()).update(offsets)
    return {p: Written(up_to.get(p, -1), frozenset(beyond.get(p, ()))) for p in up_to.keys() | beyond.keys()}


def remove_temporary(root: Path) -> int:
    """Delete files a crashed writer left half-written; how many."""
    count = 0
    for path in root.glob(f"model=*/date=*/*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        count += 1
    return count


def write_batch(
    root: Path,
    topic: str,
    partition: int,
    rows: Sequence[tuple[int, Prediction]],
    trace_ids: Mapping[int, str] | None = None,
) -> list[Path]:
    """Write one partition's batch (offset, prediction) as files by model and date; their paths.

    ``trace_ids``: the trace id of each record (by offset) that carried one.

    Every file carries the batch's whole offset range in its name (and, when the batch
    is split, its part number and the number of parts), so a replay of the same batch
    writes the same names and a crash between parts can be told from a whole batch.
    """
    if not rows:
        return []
    first, last = rows[0][0], rows[-1][0]
    groups: dict[tuple[str, str], list[tuple[int, Prediction]]] = {}
    for offset, prediction in rows:
        day = prediction.event_time.astimezone(UTC).date().isoformat()
        groups.setdefault((prediction.model, day), []).append((offset, prediction))
    written = []
    schema = table_schema()
    traces = trace_ids or {}
    for part, ((model, day), group) in enumerate(sorted(groups.items()), 1):
        name = file_name(topic, partition, first, last, part, len(groups))
        directory = root / f"model={model}" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        base = to_table([p for _, p in group], Prediction)
        table = pa.Table.from_arrays(
            [
                *base.columns,
                pa.array([traces.get(o) for o, _ in group] if traces else [None] * len(group), pa.string()),
                pa.array([topic] * len(group), pa.string()),
                pa.array([partition] * len(group), pa.int32()),
                pa.array([o for o, _ in group], pa.int64()),
            ],
            schema=schema,
        )
        written.append(write_in_place(table, directory / name))
    return written


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def read_table(
    root: Path,
    *,
    model: str | None = None,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
    labels: bool = True,
) -> pa.Table:
    """Predictions of the table, filtered by model, version and event time [since, until).

    With ``labels`` (the default) each row also has the columns ``label``, ``label_time``
    and ``label_source`` of the last label of its request id (or source event id) in the
    label table, null where none came: :mod:`inferstream.monitoring.label_join`.
    """
    if not labels:
        return _read_predictions(root, model, version, since, until, columns)
    wanted = list(columns) if columns else None
    if wanted is not None and not set(wanted) & set(LABEL_COLUMNS):
        return _read_predictions(root, model, version, since, until, wanted)
    # The join needs the ids even where the caller did not ask for them.
    read = None if wanted is None else list(dict.fromkeys([c for c in wanted if c not in LABEL_COLUMNS] + _IDS))
    labelled = without_expired(read_labels(root), read_expired(root))  # dead-lettered labels join nothing
    joined = join_labels(_read_predictions(root, model, version, since, until, read), labelled)
    return joined if wanted is None else joined.select(wanted)


def _read_predictions(
    root: Path,
    model: str | None,
    version: str | None,
    since: datetime | None,
    until: datetime | None,
    columns: Sequence[str] | None,
) -> pa.Table:
    files = [str(f.path) for f in table_files(root)]
    if not files:
        if not root.exists():
            raise ConfigError(f"no inference table at {root}: run `inferstream table sink` first")
        empty = table_schema().empty_table()
        return empty.select(list(columns)) if columns else empty
    # The current schema, not the first file's: files written before a column was added read it as null.
    schema = table_schema().append(pa.field("date", pa.string()))
    dataset = ds.dataset(
        files, schema=schema, format="parquet", partitioning=_PARTITIONING, partition_base_dir=str(root)
    )
    condition = None

    def both(expr: ds.Expression) -> None:
        nonlocal condition
        condition = expr if condition is None else condition & expr

    if model is not None:
        both(pc.field("model") == model)
    if version is not None:
        both(pc.field("version") == version)
    if since is not None:
        both(pc.field("event_time") >= pa.scalar(_as_utc(since), pa.timestamp("ms", tz="UTC")))
    if until is not None:
        both(pc.field("event_time") < pa.scalar(_as_utc(until), pa.timestamp("ms", tz="UTC")))
    table = dataset.to_table(filter=condition, columns=list(columns) if columns else None)
    if "date" in table.column_names and (columns is None or "date" not in columns):
        table = table.drop_columns(["date"])
    if "_offset" in table.column_names:
        table = table.sort_by([("event_time", "ascending"), ("_partition", "ascending"), ("_offset", "ascending")])
    return table


def records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of a table read back as prediction-like dicts (inputs, outputs and labels decoded)."""
    out = []
    for row in table.to_pylist():
        for key in ("inputs", "outputs", "label"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        out.append(row)
    return out


def export(table: pa.Table, path: Path) -> Path:
    """Write a table read from the inference table to Parquet, CSV or JSON Lines (by suffix)."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".parquet", ".pq"):
        pq.write_table(table, path)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(_flat(table), path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, "w") as handle:
            for row in records(table):
                handle.write(json.dumps(row, default=_json_default) + "\n")
    else:
        raise ConfigError(f"cannot tell the format of {path}: use .parquet, .csv or .jsonl")
    return path


def _flat(table: pa.Table) -> pa.Table:
    # CSV has no nesting: structs and maps go as JSON text.
    arrays = []
    for column in table.columns:
        if pa.types.is_struct(column.type) or pa.types.is_map(column.type) or pa.types.is_list(column.type):
            arrays.append(pa.array([json.dumps(v, default=_json_default) for v in column.to_pylist()], pa.string()))
        else:
            arrays.append(column)
    return pa.Table.from_arrays(arrays, names=table.column_names)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"cannot encode {type(value).__name__}")


def summary(table: pa.Table) -> list[dict[str, Any]]:
    """Rows per model and version, with their event-time range."""
    if table.num_rows == 0:
        return []
    grouped = table.group_by(["model", "version"]).aggregate(
        [("request_id", "count"), ("event_time", "min"), ("event_time", "max")]
    )
    return sorted(grouped.to_pylist(), key=lambda r: (r["model"], r["version"]))


def parse_time(value: str | None) -> datetime | None:
    """A CLI time bound: ISO 8601 (naive is UTC)."""
    if value is None:
        return None
    try:
        return _as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"cannot read time {value!r}: use ISO 8601, e.g. 2025-01-31T12:00:00Z") from None
