"""Labels joined to predictions on read: the last label of each id, as columns beside the prediction.

The inference table's files never change when a label comes; whoever reads the table
(:func:`inferstream.monitoring.table.read_table`: ``table`` queries, exports, the files
Beam jobs are given) gets three more columns, null where no label came (yet):

- ``label``: the label's value as JSON text (``"spam"``, ``1``, ``0.75``; :func:`decode_label`);
- ``label_time``: when the truth became known;
- ``label_source``: where it came from.

A label names a prediction by request id, or by the event id its request was made from
(``id_type``); when both kinds name one row, the request id's label is taken. An id
labelled more than once gets its latest ``label_time`` (the later offset on a tie, which
for one key is the later record: one key, one partition).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: The columns the join adds, in order.
LABEL_COLUMNS = ("label", "label_time", "label_source")
_TYPES = {"label": pa.string(), "label_time": pa.timestamp("ms", tz="UTC"), "label_source": pa.string()}


def label_fields() -> list[pa.Field]:
    """The fields the join adds to the inference table's schema."""
    return [pa.field(name, _TYPES[name]) for name in LABEL_COLUMNS]


def latest_labels(labels: pa.Table) -> pa.Table:
    """One row per (id_type, id): the latest label_time's, the later offset on a tie."""
    if labels.num_rows == 0:
        return labels
    ordered = labels.sort_by([("label_time", "ascending"), ("_partition", "ascending"), ("_offset", "ascending")])
    ordered = ordered.append_column("_row", pa.array(np.arange(ordered.num_rows, dtype=np.int64)))
    last = ordered.group_by(["id_type", "id"]).aggregate([("_row", "max")])
    return ordered.take(last.column("_row_max")).drop_columns(["_row"])


def _lookup(keys: pa.ChunkedArray, labels: pa.Table, id_type: str) -> pa.Array:
    """Per key, the row of ``labels`` (of that id type) whose id it is, or null."""
    mask = pc.equal(labels.column("id_type"), id_type)
    positions = pa.array(np.flatnonzero(mask.to_numpy(zero_copy_only=False)), pa.int64())
    ids = labels.column("id").take(positions)
    found = pc.index_in(keys, value_set=ids.combine_chunks())
    return pc.take(positions, found)


def matched(labels: pa.Table, predictions: pa.Table) -> pa.Array:
    """Per label record, whether its id names a row of ``predictions`` (by request id, or by source event id)."""
    found = pa.array(np.zeros(labels.num_rows, dtype=bool))
    for id_type, column in (("request", "request_id"), ("event", "source_event_id")):
        if column in predictions.column_names and labels.num_rows:
            ids = predictions.column(column).combine_chunks()
            here = pc.and_(pc.equal(labels.column("id_type"), id_type), pc.is_in(labels.column("id"), value_set=ids))
            found = pc.or_(found, here)
    return found


def join_labels(predictions: pa.Table, labels: pa.Table) -> pa.Table:
    """``predictions`` (inference-table rows) with the label columns of their ids' last labels appended."""
    latest = latest_labels(labels)
    if latest.num_rows == 0 or predictions.num_rows == 0:
        columns = [pa.nulls(predictions.num_rows, _TYPES[name]) for name in LABEL_COLUMNS]
    else:
        by_request = _lookup(predictions.column("request_id"), latest, "request")
        if "source_event_id" in predictions.column_names:
            by_event = _lookup(predictions.column("source_event_id"), latest, "event")
            rows = pc.coalesce(by_request, by_event)
        else:
            rows = by_request
        columns = [
            latest.column("label").take(rows),
            latest.column("label_time").take(rows),
            latest.column("source").take(rows),
        ]
    for name, column in zip(LABEL_COLUMNS, columns, strict=True):
        predictions = predictions.append_column(pa.field(name, _TYPES[name]), column)
    return predictions


def decode_label(text: str | None) -> Any:
    """A ``label`` column's value back as Python (None when unlabelled)."""
    return None if text is None else json.loads(text)
