"""Labels that name no prediction for too long: dead-lettered after the horizon, kept in a ledger.

Most labels name a prediction the inference table holds already; one may come first and
wait for it. A label record whose id names no row of the table ``horizon`` after its
``label_time`` is overdue (:func:`overdue`): the label sink dead-letters it with the reason,
then records it under ``_labels/_expired/`` (:func:`write_expired`), and the join on read
leaves it out (:func:`without_expired`). A crash between the two dead-letters it again
(at least once). So every record of the label table is joined (its id names a
prediction), dead-lettered, or waiting, and :func:`label_counts` reconciles them.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from inferstream.monitoring._files import write_in_place
from inferstream.monitoring.label_join import matched
from inferstream.monitoring.label_table import label_schema, labels_dir

EXPIRED_DIR = "_expired"
_KEYS = ["_partition", "_offset"]
_SCHEMA = label_schema().append(pa.field("expired_at", pa.timestamp("ms", tz="UTC")))


def expired_dir(table_root: Path) -> Path:
    """Where the ledger of dead-lettered labels lives."""
    return labels_dir(table_root) / EXPIRED_DIR


def read_expired(table_root: Path) -> pa.Table:
    """Every label record dead-lettered for want of a prediction (empty when none)."""
    files = sorted(str(p) for p in expired_dir(table_root).glob("*.parquet"))
    if not files:
        return _SCHEMA.empty_table()
    return ds.dataset(files, schema=_SCHEMA, format="parquet").to_table()


def without_expired(labels: pa.Table, expired: pa.Table) -> pa.Table:
    """The label records not dead-lettered (one label topic: partition and offset name a record)."""
    if expired.num_rows == 0 or labels.num_rows == 0:
        return labels
    # A hash join takes no map columns; the join on read needs none.
    slim = labels.drop_columns([c for c in ("attributes",) if c in labels.column_names])
    return slim.join(expired.select(_KEYS), keys=_KEYS, join_type="left anti")


def overdue(labels: pa.Table, expired: pa.Table, predictions: pa.Table, now: datetime, horizon_s: float) -> pa.Table:
    """Label records still waiting (no prediction names their id, not yet dead-lettered) past the horizon."""
    live = without_expired(labels, expired)
    if live.num_rows == 0:
        return live
    cutoff = pa.scalar(now - timedelta(seconds=horizon_s), pa.timestamp("ms", tz="UTC"))
    old = pc.less(live.column("label_time"), cutoff)
    return live.filter(pc.and_(pc.invert(matched(live, predictions)), old))


def write_expired(table_root: Path, records: pa.Table, now: datetime) -> Path | None:
    """Add dead-lettered label records to the ledger (one file per sweep); its path."""
    if records.num_rows == 0:
        return None
    directory = expired_dir(table_root)
    directory.mkdir(parents=True, exist_ok=True)
    at = pa.array([now] * records.num_rows, _SCHEMA.field("expired_at").type)
    # Records from without_expired() lack the attributes: the ledger keeps them null.
    arrays = [
        records.column(f.name) if f.name in records.column_names else pa.nulls(records.num_rows, f.type)
        for f in label_schema()
    ]
    table = pa.Table.from_arrays([*arrays, at], schema=_SCHEMA)
    return write_in_place(table, directory / f"expired-{time.time_ns():020d}.parquet")


def label_counts(predictions: pa.Table, labels: pa.Table, expired: pa.Table) -> dict[str, int]:
    """Label records: labels = joined (id names a prediction) + dead_lettered + waiting."""
    live = without_expired(labels, expired)
    joined = pc.sum(matched(live, predictions)).as_py() or 0
    return {
        "labels": labels.num_rows,
        "joined": joined,
        "dead_lettered": labels.num_rows - live.num_rows,
        "waiting": live.num_rows - joined,
    }
